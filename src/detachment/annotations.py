"""Labelled slices and their train / val / test split without leakage (Supp. Note 1).

Neighbouring slices of a tomogram are nearly identical, so a random per-slice split would test on
near-copies of training slices. Per sample, the test and val slices form one contiguous held-out block
at a seeded, depth-stratified position, and every training slice within ``margin_slices`` slices (in z)
of a held-out slice is dropped, so no test or val slice has a training slice within the margin. The
paper labelled 221 slices, 155 for training and validation and 66 held out for testing.

Main entry points: :func:`build_splits`, :func:`split_slices`, :func:`read_split`,
:func:`read_model_images`.
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
    """``annotations`` config section. Counts, when given, override the fractions.

    Attributes
    ----------
    test_fraction : float
        Fraction (0-1) of all labelled slices held out for testing; default the paper's 66/221.
    val_fraction : float
        Fraction (0-1) of all labelled slices held out for validation (the paper does not give its
        train/val cut).
    n_test, n_val : int or None
        Numbers of test and val slices; override the fractions when given.
    margin_slices : int
        Training slices within this many slices (in z) of a held-out slice are dropped.
    min_instance_area_px : int
        Smallest instance (px) kept in a mask; a slice counts as labelled when it holds one.
    seed : int
        Seed of the held-out blocks' positions.
    """

    test_fraction: float = 0.2986  # PAPER_TEST_FRACTION to 4 digits, as the config schema
    val_fraction: float = PAPER_VAL_FRACTION
    n_test: int | None = None
    n_val: int | None = None
    margin_slices: int = 2
    min_instance_area_px: int = 12
    seed: int = 0


@dataclass
class LabelledSlice:
    """One labelled slice: the sample it belongs to and its z index.

    Attributes
    ----------
    sample : str
        Sample name.
    z : int
        Slice index in the sample's volume.
    """
    sample: str
    z: int


def relabel_slice(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Consecutive instance ids 1..n of a 2D label slice, small instances and fragments dropped.

    Of each instance, the connected pieces of at least ``min_area`` px are kept, and the instance is kept
    when those pieces together cover at least ``min_area`` px (an annotator would not label less).

    Parameters
    ----------
    mask : numpy.ndarray
        (y, x) integer instance labels, 0 = background.
    min_area : int
        Smallest piece and instance kept, in px.

    Returns
    -------
    numpy.ndarray
        (y, x) uint16 instance labels 1..n in order of the input ids, 0 = background.
    """
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

    Per sample, one held-out block (a run of test slices with the val slices beside it), stratified over
    depth; training slices within ``margin_slices`` of it are left out. See docs/methods.md, Annotation split.

    Parameters
    ----------
    available : dict of str to list of int
        Per sample, the z indices of its labelled slices (:func:`labelled_slices`).
    s : SplitSettings
        Fractions or counts, margin and seed.

    Returns
    -------
    dict of str to list of LabelledSlice
        ``"train"``, ``"val"`` and ``"test"`` slices, each non-empty.

    Raises
    ------
    ValueError
        When the test or val count is below 1 or leaves no training slice, a sample has fewer labelled
        slices than its test and val share, or a split ends up empty.
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
        for own, z in _held_out_block(zs, nt, nv, q, s.margin_slices):
            out[own].append(LabelledSlice(sample, int(z)))
    for k in SPLITS:
        if not out[k]:
            raise ValueError(f"annotations: the '{k}' split is empty; lower margin_slices or the counts, "
                             f"or label more slices ({total} available)")
    log.info("split: %s", {k: len(v) for k, v in out.items()})
    return out


def _held_out_block(zs: np.ndarray, nt: int, nv: int, q: float, margin: int) -> list[tuple[str, int]]:
    """(split, z) of one sample's sorted labelled slices ``zs``: ``nt`` test slices at relative depth ``q``
    with ``nv`` val slices beside them; training slices within ``margin`` (in z) of those are left out."""
    n = len(zs)
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
    kept = []
    for i, z in enumerate(zs):
        own = split_of[i]
        near = [split_of[j] for j in range(n) if j != i and abs(zs[j] - z) <= margin]
        if own == "train" and any(o != "train" for o in near):
            continue
        kept.append((own, z))
    return kept


def _shares(n: int, sizes: list[int]) -> list[int]:
    """Split ``n`` among groups in proportion to ``sizes`` (largest remainder)."""
    sizes = np.asarray(sizes, float)
    exact = n * sizes / sizes.sum()
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: n - base.sum()]:
        base[i] += 1
    return base.tolist()


def labelled_slices(labels: np.ndarray, min_area: int) -> list[int]:
    """z indices of the slices of a label volume that hold at least one instance of ``min_area`` px.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer instance labels, 0 = background.
    min_area : int
        Smallest instance area, in px.

    Returns
    -------
    list of int
        The z indices, ascending.
    """
    out = []
    for z in range(labels.shape[0]):
        ids, counts = np.unique(labels[z][labels[z] > 0], return_counts=True)
        if (counts >= min_area).any():
            out.append(z)
    return out


def write_split(path, slices: list[LabelledSlice], volumes: dict[str, str], labels: dict[str, str],
                label_dataset: str, min_area: int) -> int:
    """Write one split's slices to an HDF5 file, atomically.

    Datasets: ``/images`` (n, y, x) float32 grey levels; ``/masks`` (n, y, x) uint16 instances
    (:func:`relabel_slice`); ``/context`` (n, 2, y, x) float32 slices z-1 and z+1 (the edge slice repeated
    at the volume's faces; for models that see their neighbours, :func:`read_model_images`); ``/sample``
    (n,) str and ``/z`` (n,) int64 provenance.

    Parameters
    ----------
    path : str or os.PathLike
        The split file to write.
    slices : list of LabelledSlice
        The split's slices (at least one).
    volumes : dict of str to str
        Per sample, its contract volume file (``/volume``).
    labels : dict of str to str
        Per sample, its label HDF5 file.
    label_dataset : str
        Dataset of the (z, y, x) instance labels in the label files.
    min_area : int
        Smallest instance kept, in px.

    Returns
    -------
    int
        Number of slices written, n.

    Raises
    ------
    ValueError
        When the slices differ in shape (all must share one (y, x)).
    """
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
    """Read a split file written by :func:`write_split`.

    Parameters
    ----------
    path : str or os.PathLike
        The split file.

    Returns
    -------
    images : numpy.ndarray
        (n, y, x) float32 grey levels.
    masks : numpy.ndarray
        (n, y, x) uint16 instance labels, 0 = background.
    samples : list of str
        Sample of each slice.
    z : numpy.ndarray
        (n,) int64 slice index of each slice in its sample's volume.
    """
    with h5py.File(path, "r") as f:
        return (f["images"][...], f["masks"][...], [s.decode() if isinstance(s, bytes) else s for s in f["sample"][...]],
                f["z"][...])


def read_model_images(path, context_slices: int) -> np.ndarray:
    """A split file's images as a model takes them, with or without the neighbour slices.

    Parameters
    ----------
    path : str or os.PathLike
        The split file.
    context_slices : int
        ``model.context_slices``: 0 for single slices, 1 for slices z-1, z, z+1 as channels.

    Returns
    -------
    numpy.ndarray
        (n, y, x) float32 without context, else (n, 3, y, x) holding slices z-1, z, z+1.

    Raises
    ------
    InputError
        When context is asked for and the file has no ``/context`` dataset.
    """
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
    """Refuse a label file whose dataset is missing, not integer, or not the volume's shape.

    Parameters
    ----------
    path : str or os.PathLike
        The label HDF5 file.
    dataset : str
        Dataset of the (z, y, x) instance labels.
    volume_shape : tuple of int
        (z, y, x) shape of the sample's volume, in voxels.

    Raises
    ------
    InputError
        When the file is not HDF5, lacks the dataset, or the dataset is not of integer type or not of
        ``volume_shape``.
    """
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
    """Find labelled slices, split them, and write one HDF5 file per split.

    Parameters
    ----------
    samples : list of str
        Sample names.
    volumes : list of str
        Contract volume file of each sample, in the order of ``samples``.
    labels : list of str
        Label HDF5 file of each sample (instances of the volume's shape), in the same order.
    s : SplitSettings
        Split settings.
    outputs : dict of str to str
        File to write for each split (``"train"``, ``"val"``, ``"test"``).
    label_dataset : str, default "labels"
        Dataset of the instance labels in the label files.

    Returns
    -------
    pandas.DataFrame
        The split table: one row per slice used, columns ``sample``, ``z``, ``split``, sorted by sample
        and z.

    Raises
    ------
    InputError
        When a volume or label file is refused.
    ValueError
        When the slices cannot be split (:func:`split_slices`) or differ in shape.
    """
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
