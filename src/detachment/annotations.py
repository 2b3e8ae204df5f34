"""Labelled slices and their train / val / test split without leakage (Supp. Note 1).

The paper labelled 221 slices, 155 for training and validation and 66 held out
for testing. Neighbouring slices of a tomogram are nearly identical, so a
random per-slice split would test on near-copies of training slices. Here
the test and val slices of each sample are contiguous z-ranges at a seeded
random position, and every train or val slice that lies within ``margin``
slices of a slice of another split (same sample) is dropped, test keeping
priority over val, val over train. So no test slice has a training slice
within ``margin``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import h5py
import numpy as np
from scipy import ndimage

from . import io

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PAPER_TEST_FRACTION = 66 / 221
PAPER_VAL_FRACTION = 0.10  # of all labelled slices; the paper does not give its train/val cut


@dataclass
class SplitSettings:
    """``annotations`` config section. Counts, when given, override the fractions."""

    test_fraction: float = 0.2986  # PAPER_TEST_FRACTION to 4 digits, as the config schema
    val_fraction: float = PAPER_VAL_FRACTION
    n_test: int | None = None
    n_val: int | None = None
    margin_slices: int = 2
    min_instance_area_px: int = 12
    seed: int = 0


@dataclass
class LabelledSlice:
    sample: str
    z: int


def relabel_slice(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Consecutive instance ids 1..n of a 2D label slice; instances under ``min_area`` px and
    disconnected fragments smaller than that are dropped (an annotator would not label them)."""
    out = np.zeros(mask.shape, np.uint16)
    n = 0
    for lab in np.unique(mask[mask > 0]):
        comp, k = ndimage.label(mask == lab)
        if k == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = np.isin(comp, 1 + np.nonzero(sizes >= min_area)[0])
        if keep.sum() >= min_area:
            n += 1
            out[keep] = n
    return out


def split_slices(available: dict[str, list[int]], s: SplitSettings) -> dict[str, list[LabelledSlice]]:
    """Assign labelled slices ``{sample: [z, ...]}`` to train / val / test without leakage.

    Per sample, the test slices form one contiguous z-range with the val
    slices right beside it; ``margin_slices`` training slices are left out on
    either side of that held-out block. The ranges are stratified over depth: sample
    k of K holds out the range at relative depth (k + u) / K (u seeded), so in
    a monolayer, where every depth looks different (particle bottoms, equators,
    caps), each depth is held out in one sample and trained on in the others.
    The requested counts are shared among samples in proportion to their
    labelled slices.
    """
    rng = np.random.default_rng(s.seed)
    total = sum(len(v) for v in available.values())
    n_test = s.n_test if s.n_test is not None else int(round(s.test_fraction * total))
    n_val = s.n_val if s.n_val is not None else int(round(s.val_fraction * total))
    if n_test < 1 or n_val < 1 or n_test + n_val + 2 * s.margin_slices >= total:
        raise ValueError(f"annotations: n_test ({n_test}) and n_val ({n_val}) must be >= 1 and leave training "
                         f"slices out of {total} labelled slices (margin {s.margin_slices})")
    out: dict[str, list[LabelledSlice]] = {k: [] for k in SPLITS}
    samples = sorted(available)
    # largest-remainder shares of the test and val counts per sample
    share_test = _shares(n_test, [len(available[k]) for k in samples])
    share_val = _shares(n_val, [len(available[k]) for k in samples])
    # stratified positions: sample k's test range sits near quantile (k + shift) / K of its z-range, so
    # the held-out ranges of different samples cover different depths and training sees every depth
    shift = rng.random()
    for k_sample, (sample, nt, nv) in enumerate(zip(samples, share_test, share_val)):
        zs = np.array(sorted(available[sample]))
        n = len(zs)
        if nt + nv > n:
            raise ValueError(f"annotations: sample {sample} has {n} labelled slices, too few for {nt} test and "
                             f"{nv} val slices")
        q = ((k_sample + shift) / len(samples)) % 1.0
        t0 = int(round(q * (n - nt - nv)))
        # val right beside the test range (both are held out, so no margin between them), on the side
        # with more room; the held-out block [test + val] then costs only two margins of training slices
        if t0 >= n - (t0 + nt + nv):
            v0, t0 = t0, t0 + nv
        else:
            v0 = t0 + nt
        split_of = np.full(n, "train", dtype=object)
        split_of[t0:t0 + nt] = "test"
        split_of[v0:v0 + nv] = "val"
        for i, z in enumerate(zs):
            own = split_of[i]
            near = [split_of[j] for j in range(n) if j != i and abs(zs[j] - z) <= s.margin_slices]
            if own == "train" and any(o != "train" for o in near):
                continue
            out[own].append(LabelledSlice(sample, int(z)))
    for k in SPLITS:
        if not out[k]:
            raise ValueError(f"annotations: the '{k}' split is empty; lower margin_slices or the counts, "
                             f"or label more slices ({total} available)")
    log.info("split: %s", {k: len(v) for k, v in out.items()})
    return out


def _shares(n: int, sizes: list[int]) -> list[int]:
    """Split ``n`` among groups in proportion to ``sizes`` (largest remainder)."""
    sizes = np.asarray(sizes, float)
    exact = n * sizes / sizes.sum()
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: n - base.sum()]:
        base[i] += 1
    return base.tolist()


def labelled_slices(labels: np.ndarray, min_area: int) -> list[int]:
    """z indices of a (z, y, x) label volume whose slice holds at least one instance of ``min_area`` px."""
    out = []
    for z in range(labels.shape[0]):
        ids, counts = np.unique(labels[z][labels[z] > 0], return_counts=True)
        if (counts >= min_area).any():
            out.append(z)
    return out


def write_split(path, slices: list[LabelledSlice], volumes: dict[str, str], labels: dict[str, str],
                label_dataset: str, min_area: int) -> int:
    """Write one split: ``/images`` (n, y, x) float32, ``/masks`` (n, y, x) uint16 instances,
    ``/context`` (n, 2, y, x) float32 the slices z-1 and z+1 (the edge slice repeated at the volume's
    faces; for models that see their neighbours, :func:`read_model_images`), ``/sample`` and ``/z``
    provenance. All slices must share one shape. Returns n."""
    images, context, masks, samples, zs = [], [], [], [], []
    for sl in slices:
        with h5py.File(volumes[sl.sample], "r") as f:
            vol = f[io.VOLUME_DATASET]
            images.append(vol[sl.z])
            context.append(np.stack([vol[max(sl.z - 1, 0)], vol[min(sl.z + 1, vol.shape[0] - 1)]]))
        with h5py.File(labels[sl.sample], "r") as f:
            masks.append(relabel_slice(f[label_dataset][sl.z], min_area))
        samples.append(sl.sample)
        zs.append(sl.z)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{path}: labelled slices differ in shape {sorted(shapes)}; crop volumes to one size")
    with io.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=np.stack(images).astype(np.float32), chunks=True)
        f.create_dataset("context", data=np.stack(context).astype(np.float32), chunks=True)
        f.create_dataset("masks", data=np.stack(masks), chunks=True, compression="gzip", compression_opts=1)
        f.create_dataset("sample", data=np.array(samples, dtype=h5py.string_dtype()))
        f.create_dataset("z", data=np.array(zs, np.int64))
    return len(slices)


def read_split(path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(images, masks, samples, z) of a split file."""
    with h5py.File(path, "r") as f:
        return (f["images"][...], f["masks"][...], [s.decode() if isinstance(s, bytes) else s for s in f["sample"][...]],
                f["z"][...])


def read_model_images(path, context_slices: int) -> np.ndarray:
    """A split file's images as a model takes them: (n, y, x) without context, else (n, 3, y, x) holding
    slices z-1, z, z+1 (``model.context_slices`` 1)."""
    with h5py.File(path, "r") as f:
        images = f["images"][...]
        if not context_slices:
            return images
        if "context" not in f:
            raise io.InputError(f"{path}: no /context dataset (neighbour slices), which model.context_slices "
                                f"{context_slices} needs; rerun the annotations rule")
        ctx = f["context"][...]
    return np.stack([ctx[:, 0], images, ctx[:, 1]], axis=1)


def check_label_volume(path, dataset: str, volume_shape: tuple[int, ...]) -> None:
    """Refuse a label file whose dataset is missing, not integer, or not the volume's shape."""
    if not h5py.is_hdf5(path):
        raise io.InputError(f"{path}: label file is not HDF5")
    with h5py.File(path, "r") as f:
        if dataset not in f:
            raise io.InputError(f"{path}: has no dataset '/{dataset}' (instance labels expected)")
        d = f[dataset]
        if d.dtype.kind not in "iu":
            raise io.InputError(f"{path}: '/{dataset}' has type {d.dtype}; instance labels must be integers")
        if tuple(d.shape) != tuple(volume_shape):
            raise io.InputError(f"{path}: '/{dataset}' has shape {tuple(d.shape)} but the volume is "
                                f"{tuple(volume_shape)}; label slices must index the volume's slices")


def build_splits(samples: list[str], volumes: list[str], labels: list[str], s: SplitSettings,
                 outputs: dict[str, str], label_dataset: str = "labels"):
    """Find labelled slices, split them, write one HDF5 per split; returns the split table."""
    import pandas as pd

    vols = dict(zip(samples, volumes))
    labs = dict(zip(samples, labels))
    available = {}
    for sample in samples:
        shape, _ = io.read_volume_info(vols[sample])
        check_label_volume(labs[sample], label_dataset, shape)
        with h5py.File(labs[sample], "r") as f:
            available[sample] = labelled_slices(f[label_dataset][...], s.min_instance_area_px)
    splits = split_slices(available, s)
    rows = []
    for name in SPLITS:
        write_split(outputs[name], splits[name], vols, labs, label_dataset, s.min_instance_area_px)
        rows += [{"sample": x.sample, "z": x.z, "split": name} for x in splits[name]]
    return pd.DataFrame(rows).sort_values(["sample", "z"]).reset_index(drop=True)
