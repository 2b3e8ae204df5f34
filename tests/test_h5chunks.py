"""Chunks compressed outside HDF5 (detachment.h5chunks) read back through h5py's own deflate filter."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from detachment.h5chunks import GzipChunkWriter
from detachment.io import slab_chunks


def _dataset(f, shape, dtype, **kw):
    opts = dict(chunks=slab_chunks(shape), compression="gzip", compression_opts=1) | kw
    return f.create_dataset("a", shape=shape, dtype=dtype, **opts)


@pytest.mark.parametrize("shape, dtype", [((3, 300, 270), np.uint8), ((2, 256, 512), np.uint32), ((4, 40, 30), np.uint8)])
def test_written_chunks_read_back_as_h5py_writes_them(tmp_path, shape, dtype):
    """Edge chunks (300 = 256 + 44) are padded as HDF5 pads them; a second file written by h5py
    itself holds the same values and the same chunk layout."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 5, shape).astype(dtype)
    data[:, : shape[1] // 2] = 3  # runs, as in a phase map
    with h5py.File(tmp_path / "ours.h5", "w") as f:
        w = GzipChunkWriter(_dataset(f, shape, dtype))
        w.write(data[:1], 0)
        w.store(w.compress(data[1:], 1))
    with h5py.File(tmp_path / "h5py.h5", "w") as f:
        _dataset(f, shape, dtype)[...] = data
    with h5py.File(tmp_path / "ours.h5") as ours, h5py.File(tmp_path / "h5py.h5") as ref:
        np.testing.assert_array_equal(ours["a"][...], data)
        assert ours["a"].id.get_num_chunks() == ref["a"].id.get_num_chunks()
        assert ours["a"].compression == "gzip"


def test_a_chunk_that_does_not_shrink_is_stored_raw(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (1, 64, 64)).astype(np.uint8)  # incompressible
    with h5py.File(tmp_path / "a.h5", "w") as f:
        w = GzipChunkWriter(_dataset(f, data.shape, np.uint8, chunks=(1, 64, 64)))
        chunks = w.compress(data, 0)
        assert [mask for _, mask, _ in chunks] == [1]  # the deflate filter marked as skipped
        w.store(chunks)
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(f["a"][...], data)


@pytest.mark.parametrize("kw", [dict(shuffle=True), dict(compression=None, compression_opts=None),
                                dict(chunks=(2, 16, 16)), dict(fillvalue=7)])
def test_datasets_the_writer_cannot_fill_exactly_are_refused(tmp_path, kw):
    with h5py.File(tmp_path / "a.h5", "w") as f, pytest.raises(ValueError, match="gzip alone"):
        GzipChunkWriter(_dataset(f, (4, 32, 32), np.uint8, **kw))
