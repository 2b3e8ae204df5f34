"""Slow shading of the grey levels across a volume, measured on the electrolyte the phase map finds.

Reconstructions carry low-frequency grey-level variations: cupping and the truncation of region-of-interest
scans, flat-field and beam drift. The phase model places one threshold per pair of phases for the whole
volume, so where the electrolyte's own level wanders by a fair share of the step to CBD, electrolyte reads as
CBD in the bright parts (gaps read attached) and CBD as electrolyte in the dark ones, while every histogram
check still passes. Here the wander is measured: the median grey level of the electrolyte's interior voxels
(two 6-connected steps from any other code, so that the blur of the boundaries does not count) in each block
of :data:`BLOCK_VOX` voxels, and the spread of those block levels (the 98th less the 2nd percentile) in units
of the CBD - electrolyte contrast. Only the electrolyte is read: its voxels are the ones a phase map codes
right even where blur makes it misread CBD's pores, so the measure does not grow with the map's errors.

Where the wander exceeds the phase check's bound the volume is flattened (:func:`threshold_flattened`): the
block levels, less their median, linear between block centres (:func:`field_on`), are subtracted and the
phases read again. The field is kept with the map (:data:`FIELD_DATASET`), and whatever reads the grey levels
with the map reads them less it (:func:`flat_view`). Where the shading is too strong for a first map to be
read, or to be read right, it is first estimated from the grey levels alone
(:mod:`detachment.shading_provisional`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import view_regions
from .phases import VOID

#: Edge of the blocks (voxels) whose electrolyte level is read.
BLOCK_VOX = 16
#: 6-connected steps from any other code a voxel of electrolyte must lie to be read.
INTERIOR_DEPTH_VOX = 2
#: Fewest interior electrolyte voxels a block needs for its level to be read.
MIN_BLOCK_VOXELS = 200
#: Fewest blocks with a level for the shading to be measured at all.
MIN_BLOCKS = 20
#: Percentiles of the block levels whose difference is the shading.
PERCENTILES = (2.0, 98.0)
#: Most readings of the phases on a volume flattened by the shading read so far (:func:`threshold_flattened`).
FLATTEN_PASSES = 2


@dataclass(frozen=True)
class Shading:
    """How far the electrolyte's grey level wanders across a volume.

    Attributes
    ----------
    spread : float
        98th less 2nd percentile of the blocks' electrolyte levels, grey level; NaN with fewer than
        :data:`MIN_BLOCKS` blocks.
    contrast : float
        CBD's grey level less the electrolyte's (given; :func:`contrast_from_fwhm`), grey level.
    blocks : int
        Blocks whose electrolyte level was read.
    grid : numpy.ndarray or None
        The block levels (:func:`block_grid`), NaN where not read.
    """

    spread: float
    contrast: float
    blocks: int
    grid: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ratio(self) -> float:
        """``spread`` over ``contrast``; NaN where either is not a number or the contrast is not > 0."""
        if not (np.isfinite(self.spread) and np.isfinite(self.contrast) and self.contrast > 0):
            return float("nan")
        return float(self.spread / self.contrast)


def block_levels(codes: np.ndarray, grey: np.ndarray, block: int = BLOCK_VOX) -> np.ndarray:
    """Median grey level of the electrolyte's interior voxels in each block of ``block`` voxels of a
    (z, y, x) map and its grey levels, for the blocks with at least :data:`MIN_BLOCK_VOXELS` such voxels
    (in raster order); voxels at the array's faces are not interior (the faces count as another code).
    The whole arrays at once: what :func:`block_grid` reads block row by block row."""
    inside = ndimage.binary_erosion(codes == VOID, ndimage.generate_binary_structure(3, 1),
                                    iterations=INTERIOR_DEPTH_VOX)
    grid = _row_levels(inside, grey, block)
    return grid[np.isfinite(grid)]


def _row_levels(inside: np.ndarray, grey: np.ndarray, block: int) -> np.ndarray:
    """(z blocks, y blocks, x blocks) medians of ``grey`` over ``inside``; NaN where a block holds fewer than
    :data:`MIN_BLOCK_VOXELS` of them."""
    nz, ny, nx = (-(-n // block) for n in inside.shape)
    out = np.full((nz, ny, nx), np.nan)
    for i, j, k in np.ndindex(nz, ny, nx):
        sl = (slice(i * block, (i + 1) * block), slice(j * block, (j + 1) * block), slice(k * block, (k + 1) * block))
        m = inside[sl]
        if int(m.sum()) >= MIN_BLOCK_VOXELS:
            out[i, j, k] = float(np.median(grey[sl][m]))
    return out


def block_grid(codes_ds, grey_ds, block: int = BLOCK_VOX) -> np.ndarray:
    """(z, y, x) grid, one value per block of ``block`` voxels, of the median grey level of the electrolyte's
    interior voxels (NaN where fewer than :data:`MIN_BLOCK_VOXELS`), read block row by block row from two
    (z, y, x) datasets (h5py or arrays): the phase codes and the grey levels they were read from."""
    depth, halo = codes_ds.shape[0], INTERIOR_DEPTH_VOX
    ball = ndimage.generate_binary_structure(3, 1)
    rows = []
    for z0 in range(0, depth, block):
        z1 = min(z0 + block, depth)
        a, b = max(0, z0 - halo), min(depth, z1 + halo)
        void = np.asarray(codes_ds[a:b]) == VOID
        # beyond the volume's first and last slices nothing is electrolyte, as at the whole array's faces
        void = np.pad(void, ((halo - (z0 - a), halo - (b - z1)), (0, 0), (0, 0)))
        inside = ndimage.binary_erosion(void, ball, iterations=halo)[halo: halo + z1 - z0]
        rows.append(_row_levels(inside, np.asarray(grey_ds[z0:z1]), block))
    return np.concatenate(rows) if rows else np.empty((0, 0, 0))


def measure(codes_ds, grey_ds, contrast: float, block: int = BLOCK_VOX) -> Shading:
    """:class:`Shading` of a volume from its :func:`block_grid`; ``contrast``: the step from the electrolyte
    to CBD (:func:`contrast_from_fwhm`)."""
    grid = block_grid(codes_ds, grey_ds, block)
    levels = grid[np.isfinite(grid)]
    spread = (float(np.diff(np.percentile(levels, PERCENTILES))[0]) if levels.size >= MIN_BLOCKS
              else float("nan"))
    return Shading(spread, float(contrast), int(levels.size), grid)


def contrast_from_fwhm(fwhm) -> float:
    """The step from the electrolyte's grey level to the nearest brighter phase the model resolves (CBD,
    where it is resolved), from the thresholding's per-phase table (``phase_fwhm.csv``: ``phase``, ``centre``,
    optional ``resolved``); NaN without the electrolyte or a brighter phase. Where shading hides CBD, the
    step to the next phase still says how far the electrolyte wanders."""
    t = fwhm[fwhm["resolved"].astype(bool)] if "resolved" in fwhm else fwhm
    centre = dict(zip(t["phase"], t["centre"].astype(float)))
    void = centre.pop("void", np.nan)
    steps = [c - void for c in centre.values() if np.isfinite(c) and c > void]
    return float(min(steps)) if steps else float("nan")


def measure_files(phases_path, volume_path, contrast: float) -> Shading:
    """:func:`measure` of a phase map's ``/phases`` and the volume it was read from (HDF5 files)."""
    import h5py

    from . import io

    with h5py.File(phases_path, "r") as fp, h5py.File(volume_path, "r") as fv:
        return measure(fp["phases"], fv[io.VOLUME_DATASET], contrast)


#: Dataset of ``phases.h5`` holding the field the volume was flattened by (:func:`centred_field`), with the
#: block edge as its attribute ``block_vox``; absent where the volume was read as it is.
FIELD_DATASET = "shading"


def centred_field(grid: np.ndarray) -> np.ndarray:
    """The shading field on the block grid: each block's electrolyte level less the median of those read, a
    block without a level given its nearest read block's (float32)."""
    read = np.isfinite(grid)
    if not read.any():
        return np.zeros(grid.shape, np.float32)
    _, nearest = ndimage.distance_transform_edt(~read, return_indices=True)
    filled = grid[tuple(nearest)]
    return (filled - np.median(grid[read])).astype(np.float32)


def _axis_weights(start: int, stop: int, n_blocks: int, block: int, length: int) -> np.ndarray:
    """(stop - start, n_blocks) weights of a linear interpolation between block centres along one axis of
    ``length`` voxels (the last block may be shorter), for voxels ``start``-``stop``; beyond the first and
    last centres (half a block at most) the line through the two nearest, so that a ramp is followed to the
    volume's faces."""
    if n_blocks == 1:
        return np.ones((stop - start, 1))
    first = np.arange(n_blocks) * block
    centres = (first + np.minimum(first + block, length)) / 2 - 0.5
    v = np.arange(start, stop, dtype=float)
    seg = np.clip(np.searchsorted(centres, v, side="right") - 1, 0, n_blocks - 2)
    t = (v - centres[seg]) / (centres[seg + 1] - centres[seg])
    w = np.zeros((stop - start, n_blocks))
    rows = np.arange(stop - start)
    w[rows, seg] = 1 - t
    w[rows, seg + 1] += t
    return w


def field_on(field_grid: np.ndarray, block: int, region, shape) -> np.ndarray:
    """The shading field at the voxels of ``region`` ((start, stop) per axis, z, y, x) of a volume of ``shape``,
    linear between the centres of the blocks of ``field_grid`` (:func:`centred_field`) and beyond the outer
    ones, float32."""
    out = field_grid.astype(np.float64)
    for axis, (start, stop) in enumerate(region):
        w = _axis_weights(start, stop, field_grid.shape[axis], block, shape[axis])
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return out.astype(np.float32)


class FlatView:
    """A (z, y, x) grey-level dataset read less its shading field: ``view[key]`` is ``dataset[key]`` (float32)
    less :func:`field_on` there, for keys of integers and unit-step slices."""

    def __init__(self, dataset, field_grid: np.ndarray, block: int):
        self.dataset, self.field_grid, self.block = dataset, np.asarray(field_grid), int(block)
        self.shape, self.dtype = tuple(dataset.shape), np.dtype(np.float32)

    def __getitem__(self, key):
        region, squeeze = view_regions(key, self.shape, "FlatView")
        data = np.asarray(self.dataset[key], np.float32)
        field = field_on(self.field_grid, self.block, region, self.shape)
        return data - (field.squeeze(axis=squeeze) if squeeze else field)


def write_field(h5file, field_grid: np.ndarray, block: int) -> None:
    """Keep the field a volume was flattened by in an open ``phases.h5`` (:data:`FIELD_DATASET`, float32, with
    the block edge in voxels as its attribute ``block_vox``), where :func:`flat_view` finds it."""
    h5file.create_dataset(FIELD_DATASET, data=np.asarray(field_grid, np.float32))
    h5file[FIELD_DATASET].attrs["block_vox"] = int(block)


def flat_view(dataset, phases_file):
    """``dataset`` (the volume's grey levels) as the phase map was read from it: less the halo the map
    records (:func:`detachment.halo_removal.view`), then a :class:`FlatView` where the open ``phases.h5``
    (``phases_file``, an h5py File) holds the field it was flattened by (:data:`FIELD_DATASET`); else
    ``dataset`` itself."""
    from . import halo_removal

    if "phases" in phases_file:
        dataset = halo_removal.view(dataset, phases_file["phases"])
    if FIELD_DATASET not in phases_file:
        return dataset
    d = phases_file[FIELD_DATASET]
    return FlatView(dataset, d[...], int(d.attrs["block_vox"]))


@contextmanager
def open_flat(phases_path, volume_path):
    """Open ``phases.h5`` and the volume it was read from: yields ``(codes, grey)``, the map's ``/phases``
    dataset and the volume as the map was read from it (:func:`flat_view`), both read lazily."""
    import h5py

    from . import io

    with h5py.File(phases_path, "r") as fp, h5py.File(volume_path, "r") as fv:
        yield fp["phases"], flat_view(fv[io.VOLUME_DATASET], fp)


def write_flattened(volume_path, out_path, field_grid: np.ndarray, block: int, slab: int = 32) -> None:
    """Write the volume of ``volume_path`` less its shading field to ``out_path`` (the volume contract,
    ``/volume`` float32 with the same attributes), atomically and slab by slab."""
    from . import io

    io.write_volume_view(volume_path, out_path, lambda src: FlatView(src, field_grid, block), slab)


def _beyond_bound(shading: Shading) -> bool:
    """Whether a :class:`Shading` was read and exceeds the phase check's bound
    (``plausibility.MAX_BOUNDS["shading_ratio"]``)."""
    from .plausibility import MAX_BOUNDS

    return bool(np.isfinite(shading.ratio) and shading.ratio > MAX_BOUNDS["shading_ratio"][0])


def _flattened_path(phases_path) -> Path:
    """The temporary flattened volume beside ``phases_path``."""
    return Path(phases_path).with_name(Path(phases_path).stem + ".flattened.h5")


def _kept_path(phases_path) -> Path:
    """The temporary copy of a map kept while another is tried, beside ``phases_path``."""
    return Path(phases_path).with_name(Path(phases_path).stem + ".kept.h5")


def _read_flattened(volume_path, phases_path, settings, progress, workers, field_grid):
    """The phases read again on the volume less ``field_grid`` (written beside ``phases_path``, left there
    for the caller to remove): ``(result, shading read on that map and the flattened grey levels)``."""
    from .threshold import threshold_volume

    flat = _flattened_path(phases_path)
    write_flattened(volume_path, flat, field_grid, BLOCK_VOX)
    result = threshold_volume(flat, phases_path, settings, progress, workers, shading_field=(field_grid, BLOCK_VOX))
    return result, measure_files(phases_path, flat, contrast_from_fwhm(result.fwhm))


def _flatten_passes(volume_path, phases_path, settings, progress, workers, field_grid, result, now):
    """While the shading ``now`` left is beyond the bound, grow ``field_grid`` by it and read the phases again,
    :data:`FLATTEN_PASSES` times at most: ``(result, shading left, failure)``. Where the phase model does not
    fit a volume so flattened (``failure``: its :class:`detachment.phase_fit.PhaseModelError`, else None),
    the last map read stays (``phases_path`` is written only by a fit that succeeds), with the shading it
    leaves for the phase check to judge."""
    from .phase_fit import PhaseModelError

    for _ in range(FLATTEN_PASSES):
        if not _beyond_bound(now):
            break
        grown = field_grid + centred_field(now.grid)
        try:
            result, now = _read_flattened(volume_path, phases_path, settings, progress, workers, grown)
        except PhaseModelError as e:
            return result, now, e
        field_grid = grown
    return result, now, None


def _log_flattened(first: Shading, now: Shading, how: str) -> None:
    import logging

    from .plausibility import MAX_BOUNDS

    logging.getLogger(__name__).warning(
        "the electrolyte's grey level wandered across the volume by %.3f (%.2f of the step to CBD, bound %.2f)%s: "
        "the phases were read on the volume less that shading, which leaves %.3f (%.2f); the contacts read the "
        "grey levels flattened alike (threshold.flatten_shading)", first.spread, first.ratio,
        MAX_BOUNDS["shading_ratio"][0], how, now.spread, now.ratio)


def threshold_flattened(volume_path, phases_path, settings, progress: bool = True, workers: int = 1):
    """:func:`detachment.threshold.threshold_volume`, and where the shading read on its map exceeds the phase
    check's bound (``plausibility.MAX_BOUNDS["shading_ratio"]``) and ``settings.flatten_shading`` is on, the
    phases read again on the volume less that shading (:func:`centred_field` of the map's block levels,
    :func:`write_flattened` to a file beside ``phases_path``, removed after), the field written with the map.
    The first map misreads the electrolyte where the shading is strongest, so its block levels fall short
    there: while what is left is still beyond the bound, the field grows by what the new map reads, up to
    :data:`FLATTEN_PASSES` readings again. Where the phase model does not fit the volume as it is, or the map
    read on the volume so flattened does not fit it or fails phase checks, a first estimate of the shading
    from the grey levels alone is taken out before the model is fitted again
    (:func:`threshold_provisionally_flattened`; in the second case kept only where it does better,
    :func:`_provisional_or_kept`).

    Returns
    -------
    tuple
        ``(result, shading, before)``: the :class:`detachment.threshold.ThresholdResult` of the map written,
        the :class:`Shading` read on it (on the grey levels it was read from, flattened or not) and, where it
        was flattened, the :class:`Shading` of the volume as it is (on the first map, else on the map
        written; else None).
    """
    from .phase_fit import PhaseModelError
    from .threshold import threshold_volume

    for stale in (_flattened_path(phases_path), _kept_path(phases_path)):  # left by a run killed mid-way
        stale.unlink(missing_ok=True)
    try:
        result = threshold_volume(volume_path, phases_path, settings, progress, workers)
    except PhaseModelError as error:
        if not settings.flatten_shading:
            raise
        return threshold_provisionally_flattened(volume_path, phases_path, settings, progress, workers, error)
    first = measure_files(phases_path, volume_path, contrast_from_fwhm(result.fwhm))
    if not (settings.flatten_shading and _beyond_bound(first)):
        return result, first, None
    try:
        result, now, failure = _flatten_passes(volume_path, phases_path, settings, progress, workers,
                                               np.zeros(first.grid.shape, np.float32), result, first)
    finally:
        _flattened_path(phases_path).unlink(missing_ok=True)
    failed = _checks_failed(result, now)
    if failure is not None or failed:
        why = ("the phase model did not fit the volume flattened by the shading its first map reads"
               if failure is not None else
               f"the map read on the volume flattened by the shading its first map reads failed {', '.join(failed)}")
        return _provisional_or_kept(volume_path, phases_path, settings, progress, workers, why, (result, now, first))
    _log_flattened(first, now, "")
    return result, now, first


def _checks_failed(result, shade: Shading) -> list:
    """Names of the phase-map checks (:func:`detachment.plausibility.check_phase_map`) a map fails."""
    from . import plausibility

    checks = plausibility.check_phase_map(plausibility.PhaseCounts(result.counts_per_slice), result.fwhm,
                                          result.blur_sigma_vox, result.tilted_collector_top, shade.ratio)
    return list(checks.loc[~checks.passed.astype(bool), "check"])


def _provisional_or_kept(volume_path, phases_path, settings, progress, workers, why: str, kept):
    """Where the map read on the volume flattened by its first map's shading is not to be trusted (``why``: the
    phase model did not fit that volume, or the map fails phase checks), the phases read on the volume less
    the shading of its grey levels alone (:func:`threshold_provisionally_flattened`) where that fails fewer
    checks than the map kept (``kept``: :func:`threshold_flattened`'s tuple for the map at ``phases_path``),
    or as many and leaves less shading; else the map kept."""
    import logging
    import shutil

    from .phase_fit import PhaseModelError

    log = logging.getLogger(__name__)
    copy = _kept_path(phases_path)
    shutil.copyfile(phases_path, copy)
    try:
        try:
            tried = threshold_provisionally_flattened(volume_path, phases_path, settings, progress, workers,
                                                      PhaseModelError(why), why)
            score, kept_score = ((len(_checks_failed(*t[:2])), t[1].ratio) for t in (tried, kept))
            if score < kept_score:
                return tried
            log.warning("the phases read on the first estimate of the shading from the grey levels fail %d checks "
                        "and leave %.2f, no better than the map read before (%d, %.2f): that map stays",
                        *score, *kept_score)
        except PhaseModelError as e:
            log.warning("the phases could not be read on the first estimate of the shading either (%s): the map "
                        "read before stays", e)
        copy.replace(phases_path)
    finally:
        copy.unlink(missing_ok=True)
    if kept[1] is kept[2]:  # no flattening pass succeeded: the map of the volume as it is
        log.warning("the electrolyte's grey level wandered across the volume by %.3f (%.2f of the step to CBD): the "
                    "map read on the volume as it is stays, for the phase check to judge", kept[1].spread,
                    kept[1].ratio)
        return kept[0], kept[1], None
    _log_flattened(kept[2], kept[1], "")
    return kept


def threshold_provisionally_flattened(volume_path, phases_path, settings, progress, workers, error,
                                      why: str = "the phase model did not fit the volume as it is"):
    """Phases of a volume the phase model did not fit (``error``, a
    :class:`detachment.phase_fit.PhaseModelError`), read on the volume less a first estimate of its shading
    from the grey levels alone (:func:`detachment.shading_provisional.provisional_field`), then flattened
    further as :func:`threshold_flattened` does. It is kept only where the map it gives confirms that the
    volume's shading exceeds the bound (read on the volume as it is); otherwise, and where the model still
    does not fit, ``error`` is raised (nothing written), naming what was tried. ``why``: what the log says
    made the first estimate needed.

    Returns
    -------
    tuple
        As :func:`threshold_flattened`: ``(result, shading left, shading of the volume as it is)``.
    """
    import h5py

    from . import io
    from .phase_fit import PhaseModelError
    from .shading_provisional import provisional_field

    with h5py.File(volume_path, "r") as f:
        field_grid = provisional_field(f[io.VOLUME_DATASET])
    if field_grid is None:
        raise error
    spread = float(np.ptp(field_grid))
    try:
        result, now = _read_flattened(volume_path, phases_path, settings, progress, workers, field_grid)
        raw = measure_files(phases_path, volume_path, contrast_from_fwhm(result.fwhm))
        if not _beyond_bound(raw):
            raise PhaseModelError(f"{error} (on the volume less a first estimate of its shading, spread {spread:.3g}, "
                                  f"the model fits, but the map it gives reads the shading at {raw.ratio:.2f} of the "
                                  f"step to CBD, within the bound: the shading is not what stops it)") from error
        result, now, _ = _flatten_passes(volume_path, phases_path, settings, progress, workers, field_grid, result,
                                         now)
    except PhaseModelError as again:
        Path(phases_path).unlink(missing_ok=True)
        if again.__cause__ is error:
            raise
        raise PhaseModelError(f"{error} (also on the volume less a first estimate of its shading from the grey "
                              f"levels, spread {spread:.3g}: {again})") from error
    finally:
        _flattened_path(phases_path).unlink(missing_ok=True)
    _log_flattened(raw, now, f", estimated first from the grey levels alone ({why})")
    return result, now, raw
