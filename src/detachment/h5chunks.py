"""Writing gzip-compressed HDF5 chunks ourselves, so that the compression can run beside other work.

HDF5 compresses a chunk inside the write call, holding Python's GIL; :class:`GzipChunkWriter` instead
compresses each chunk itself (releasing the GIL) and stores it with ``write_direct_chunk``. It uses
ISA-L's deflate (``isal``), several times faster than zlib's at its fastest level on phase maps, with
smaller output; the chunks are standard zlib streams, so HDF5's deflate filter reads them like its own
(edge chunks are padded with the fill value 0, as HDF5 pads them). ``tests/test_h5chunks.py`` reads
the files back with h5py.
"""

from __future__ import annotations

import itertools

import h5py
import numpy as np
from isal import isal_zlib


class GzipChunkWriter:
    """Write whole z-slabs of a chunked, gzip-compressed dataset chunk by chunk.

    Parameters
    ----------
    dataset : h5py.Dataset
        (z, y, x) dataset created with ``chunks=(1, cy, cx)``, ``compression="gzip"`` and no other filter;
        its fill value must be 0 (h5py's default).

    Raises
    ------
    ValueError
        When the dataset's layout or filters are not those above.
    """

    def __init__(self, dataset: h5py.Dataset):
        chunks = dataset.chunks
        if (dataset.ndim != 3 or chunks is None or chunks[0] != 1 or dataset.compression != "gzip"
                or dataset.shuffle or dataset.fletcher32 or dataset.scaleoffset is not None
                or dataset.fillvalue != 0):
            raise ValueError(f"{dataset.name}: needs (1, y, x) chunks, gzip alone and fill value 0")
        self.dataset, self.dtype = dataset, dataset.dtype
        self.level = min(int(dataset.compression_opts), isal_zlib.ISAL_BEST_COMPRESSION)
        self.cy, self.cx = chunks[1], chunks[2]
        self.raw = self.cy * self.cx * self.dtype.itemsize

    def compress(self, data: np.ndarray, z0: int) -> list[tuple[tuple[int, int, int], int, bytes]]:
        """The stored chunks of slices ``z0 .. z0 + len(data)``: ``(offset, filter_mask, bytes)`` each.

        Runs without touching the file (another thread may call it while this one reads or writes).

        Parameters
        ----------
        data : numpy.ndarray
            (n, y, x) values of the dataset's type, whole slices.
        z0 : int
            Dataset z of ``data[0]``.
        """
        out = []
        tile = np.zeros((self.cy, self.cx), self.dtype)
        ny, nx = data.shape[1:]
        for z, y, x in itertools.product(range(len(data)), range(0, ny, self.cy), range(0, nx, self.cx)):
            part = data[z, y: y + self.cy, x: x + self.cx]
            if part.shape != tile.shape:  # an edge chunk: HDF5 stores it whole, padded with the fill value
                tile[...] = 0
                tile[: part.shape[0], : part.shape[1]] = part
                part = tile
            packed = isal_zlib.compress(np.ascontiguousarray(part), self.level)
            if len(packed) < self.raw:
                out.append(((z0 + z, y, x), 0, packed))
            else:  # as HDF5 does for an optional filter that does not shrink the chunk: stored raw
                out.append(((z0 + z, y, x), 1, np.ascontiguousarray(part).tobytes()))
        return out

    def store(self, chunks: list[tuple[tuple[int, int, int], int, bytes]]) -> None:
        """Write chunks from :meth:`compress` to the dataset."""
        for offset, mask, payload in chunks:
            self.dataset.id.write_direct_chunk(offset, payload, mask)

    def write(self, data: np.ndarray, z0: int) -> None:
        """:meth:`compress`, then :meth:`store`: ``dataset[z0:z0 + len(data)] = data``."""
        self.store(self.compress(data, z0))
