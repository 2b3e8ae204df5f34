"""Marker-controlled watershed baseline (Supp. Note 1), per slice and in 3D, with parameter tuning.

As in the paper, markers come from the intensities: the h-maxima of the smoothed grey level inside a
foreground mask (smoothed grey level ≥ ``fg_threshold``, holes filled), and the image is flooded from
them on the negated smoothed grey level. The distance variant takes the h-maxima of the foreground's
Euclidean distance map and floods the negated distance. Parameters are tuned on the train/val slices
only, maximising the mean instance F.

Main entry points: :func:`segment`, :func:`tune`, :func:`default_grid`, :func:`foreground_guess`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed as sk_watershed

from .metrics import image_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatershedParams:
    """One parameter set; lengths in pixels (voxels in 3D), grey levels in the volume's units.

    Attributes
    ----------
    markers : str
        ``"intensity"`` (h-maxima of the smoothed grey level, the paper's) or ``"distance"`` (h-maxima of
        the foreground's distance map).
    sigma : float
        Standard deviation of the Gaussian smoothing, px; 0 = none.
    fg_threshold : float
        Foreground = smoothed grey level ≥ this, holes filled (per z slice in 3D).
    h : float
        Height of the h-maxima, in grey levels; distance markers use 20 × ``h`` px.
    footprint : int
        Maxima within ``footprint // 2`` px of a higher one are dropped (peak_local_max's
        ``min_distance``), one marker per footprint × footprint window; 1 keeps every h-maximum.
    compactness : float
        0 for the classic watershed; above 0, compact watershed.
    min_area : int
        Instances smaller than this, in px, are dropped after flooding.
    """

    markers: str = "intensity"  # "intensity" or "distance"
    sigma: float = 1.0
    fg_threshold: float = 0.6
    h: float = 0.05
    footprint: int = 3
    compactness: float = 0.0
    min_area: int = 12


def segment(image: np.ndarray, p: WatershedParams) -> np.ndarray:
    """Watershed instances of a 2D slice or 3D volume.

    Parameters
    ----------
    image : numpy.ndarray
        (y, x) slice or (z, y, x) volume of grey levels.
    p : WatershedParams
        Parameter set.

    Returns
    -------
    numpy.ndarray
        uint32 instance labels of ``image``'s shape, consecutive ids 1..n, 0 = background.

    Raises
    ------
    ValueError
        When ``p.markers`` is not ``"intensity"`` or ``"distance"``.
    """
    img = np.asarray(image, dtype=np.float32)
    smooth = ndimage.gaussian_filter(img, p.sigma) if p.sigma > 0 else img
    fg = smooth >= p.fg_threshold
    fg = ndimage.binary_fill_holes(fg) if img.ndim == 2 else _fill_holes_by_slice(fg)
    if p.markers == "intensity":
        surface = smooth
    elif p.markers == "distance":
        surface = ndimage.distance_transform_edt(fg).astype(np.float32)
    else:
        raise ValueError(f"watershed markers: {p.markers!r} is not 'intensity' or 'distance'")
    height = p.h if p.markers == "intensity" else p.h * 20  # distance in px vs grey levels
    peaks = h_maxima(np.where(fg, surface, surface.min()), height).astype(bool) & fg
    # merge maxima closer than the footprint: keep one peak per footprint (peak_local_max on the plateau labels)
    lab_peaks, n = ndimage.label(peaks)
    if n and p.footprint > 1:
        coords = peak_local_max(np.where(peaks, surface, surface.min()), min_distance=max(1, p.footprint // 2),
                                labels=lab_peaks > 0, exclude_border=False)
        markers = np.zeros(img.shape, np.int32)
        markers[tuple(coords.T)] = np.arange(1, len(coords) + 1)
    else:
        markers = lab_peaks
    labels = sk_watershed(-surface, markers, mask=fg, compactness=p.compactness)
    return _drop_small(labels, p.min_area)


def _fill_holes_by_slice(fg: np.ndarray) -> np.ndarray:
    # 3D fill would need a closed shell; cracks open to the outside in some slices, so fill per z-slice
    return np.stack([ndimage.binary_fill_holes(s) for s in fg])


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    # consecutive ids
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, np.uint32)
    lut[ids[ids > 0]] = np.arange(1, int((ids > 0).sum()) + 1)
    return lut[labels]


def default_grid(fg_center: float, spread: float) -> dict[str, list]:
    """Search grid of the watershed parameters.

    Parameters
    ----------
    fg_center : float
        Centre of the foreground thresholds, grey level (:func:`foreground_guess`).
    spread : float
        Step between foreground thresholds, grey levels.

    Returns
    -------
    dict of str to list
        Candidate values per :class:`WatershedParams` field: ``markers``, ``sigma`` (px),
        ``fg_threshold`` (``fg_center`` + k ``spread``, k = -3..2), ``h`` (grey levels), ``footprint``
        (px), ``compactness``.
    """
    return {
        "markers": ["intensity", "distance"],
        "sigma": [0.5, 1.0, 2.0],
        "fg_threshold": [round(fg_center + k * spread, 4) for k in (-3, -2, -1, 0, 1, 2)],
        "h": [0.01, 0.02, 0.05, 0.1, 0.2],
        "footprint": [1, 3, 5, 9],
        "compactness": [0.0, 0.001, 0.01, 0.1],
    }


def _score(images, masks, p: WatershedParams, iou_threshold: float) -> dict[str, float]:
    scores = [image_metrics(m, segment(im, p), iou_threshold) for im, m in zip(images, masks)]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("f", "precision", "sensitivity", "jaccard")}


def tune(images: np.ndarray, masks: np.ndarray, grid: dict[str, list], iou_threshold: float = 0.5,
         min_area: int = 12, search: str = "coordinate", progress: bool = True
         ) -> tuple[WatershedParams, pd.DataFrame]:
    """Search ``grid`` on labelled slices; best = highest mean F (ties: mean Jaccard).

    Parameters
    ----------
    images, masks : numpy.ndarray
        (n, y, x) grey-level slices (train and val only) and their integer truth instances, 0 = background.
    grid : dict of str to list
        Candidate values per :class:`WatershedParams` field (:func:`default_grid`); ``markers``
        defaults to ``["intensity"]``.
    iou_threshold : float, default 0.5
        IoU of an instance match, in (0, 1].
    min_area : int, default 12
        ``min_area`` of every set tried, px.
    search : {"coordinate", "grid"}, default "coordinate"
        Coordinate ascent per marker type (~10x cheaper) or every combination (docs/methods.md,
        Watershed baseline).
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    best : WatershedParams
        The best set over all marker types.
    table : pandas.DataFrame
        One row per set evaluated, best first: its parameters and the mean ``f``, ``precision``,
        ``sensitivity`` and ``jaccard`` over the slices (:func:`detachment.metrics.image_metrics`).

    Raises
    ------
    ValueError
        When ``search`` is unknown.
    """
    from tqdm import tqdm

    keys = [k for k in grid if k != "markers"]
    cache: dict[tuple, dict] = {}
    bar = tqdm(desc="tune watershed", unit="set", disable=not progress)

    def evaluate(markers, values):
        """Parameters and mean scores of one set, evaluated once (cached by its values)."""
        key = (markers, *values)
        if key not in cache:
            p = WatershedParams(markers=markers, **dict(zip(keys, values)), min_area=min_area)
            cache[key] = {**asdict(p), **_score(images, masks, p, iou_threshold)}
            bar.update()
        return cache[key]

    _search(evaluate, grid, keys, search)
    bar.close()
    table = pd.DataFrame(list(cache.values())).sort_values(["f", "jaccard"], ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    best = WatershedParams(**{k: _py(table.iloc[0][k]) for k in asdict(WatershedParams())})
    log.info("best watershed %s: F %.3f (%d sets tried)", best, table.iloc[0]["f"], len(table))
    return best, table


def _search(evaluate, grid: dict[str, list], keys: list[str], search: str) -> None:
    """Call ``evaluate(markers, values)`` on the sets ``search`` visits, for each marker type.

    ``"grid"``: every combination. ``"coordinate"``: from the middle of the grid, each parameter in turn
    set to its best value with the others fixed, until a full round brings no improvement.
    """
    for markers in grid.get("markers", ["intensity"]):
        if search == "grid":
            for values in itertools.product(*(grid[k] for k in keys)):
                evaluate(markers, values)
            continue
        if search != "coordinate":
            raise ValueError(f"watershed search: {search!r} is not 'grid' or 'coordinate'")
        current = [grid[k][len(grid[k]) // 2] for k in keys]
        best = evaluate(markers, current)
        improved = True
        while improved:
            improved = False
            for i, k in enumerate(keys):
                for v in grid[k]:
                    trial = current.copy()
                    trial[i] = v
                    r = evaluate(markers, trial)
                    if (r["f"], r["jaccard"]) > (best["f"], best["jaccard"]):
                        best, current, improved = r, trial, True


def _py(v):
    return v.item() if hasattr(v, "item") else v


def best_per_marker(table: pd.DataFrame) -> dict[str, WatershedParams]:
    """Best parameter set for each marker type in a tuning table.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`tune`'s table, sorted best first.

    Returns
    -------
    dict of str to WatershedParams
        Marker type (``"intensity"``, ``"distance"``) to its best set.
    """
    out = {}
    for markers, rows in table.groupby("markers", sort=False):
        out[markers] = WatershedParams(**{k: _py(rows.iloc[0][k]) for k in asdict(WatershedParams())})
    return out


def foreground_guess(images: np.ndarray) -> tuple[float, float]:
    """Centre and step of the foreground-threshold grid from the slices' histogram.

    A 4-phase Gaussian model (void, CBD, NMC low, NMC high: slices through the particle layer hold no Al)
    is fitted to the histogram (:func:`detachment.phases.fit_phase_model`).

    Parameters
    ----------
    images : numpy.ndarray
        (n, y, x) grey-level slices.

    Returns
    -------
    centre : float
        The CBD / NMC-low threshold, grey level.
    step : float
        An eighth of the gap between the CBD and NMC-low means, grey levels.
    """
    from .phases import fit_phase_model, histogram

    model = fit_phase_model(histogram(images, 256), "gmm", ("void", "cbd", "nmc_low", "nmc_high"))
    return float(model.thresholds[1]), float(model.means[2] - model.means[1]) / 8
