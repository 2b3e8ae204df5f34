"""The Al collector's top surface as a plane: a sample mounted a little tilted.

The collector is found as a slab of slices at z = 0 (:func:`detachment.phase_fit.find_collector_slab`). A
sample is rarely mounted square to the rotation axis: tilted by θ, the collector's top rises tan θ voxels per
voxel across the volume (3.4 voxels over 192 at 1°), and a flat slab either cuts the higher side off or
takes in the electrode above the lower one. So the surface is measured column by column (the run of voxels
in Al's grey-level band from z = 0), and a plane is fitted to those heights by least squares with the
outlying columns trimmed (noise ends a run early; a particle resting on the collector may lengthen it by
its blurred edge). Where the plane rises by less than :data:`MIN_RISE_VOX` across the volume the slab is
flat and the slice-wise slab stands.

Axes: (z, y, x) voxel indices, z = 0 the collector side; heights in voxels along z.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Least rise of the fitted plane across the volume, voxels, for the collector to be taken as tilted:
#: below one voxel every column's top lies within a voxel of the flat slab's.
MIN_RISE_VOX = 1.0
#: Side of the median filter the column heights are smoothed with before the fit, columns: a run ended
#: early by one noisy voxel is an isolated column.
SMOOTH_COLUMNS = 5
#: Trimming rounds of the plane fit and the least residual, voxels, a column may keep.
TRIM_ROUNDS = 3
MIN_TRIM_VOX = 1.0


@dataclass(frozen=True)
class CollectorPlane:
    """The collector's top surface ``z = a + b y + c x`` (voxels; the voxels of a column below it are Al).

    Attributes
    ----------
    a, b, c : float
        Height at (y, x) = (0, 0), voxels, and slopes along y and x, voxels per voxel.
    shape_yx : tuple of int
        (y, x) size of the volume it was fitted on.
    columns : int
        Columns the fit kept.
    residual_sd : float
        Standard deviation of the kept columns' heights about the plane, voxels.
    tilted : bool
        Whether the plane rises by :data:`MIN_RISE_VOX` or more across the volume (decided by
        :func:`fit_plane`): Al is then confined below it column by column.
    """

    a: float
    b: float
    c: float
    shape_yx: tuple[int, int]
    columns: int
    residual_sd: float
    tilted: bool

    @property
    def rise_vox(self) -> float:
        """Height difference of the plane across the volume, voxels."""
        ny, nx = self.shape_yx
        return abs(self.b) * (ny - 1) + abs(self.c) * (nx - 1)

    @property
    def tilt_deg(self) -> float:
        """Angle between the plane and the volume's (y, x) plane, degrees."""
        return float(np.degrees(np.arctan(np.hypot(self.b, self.c))))

    def height(self, y, x):
        """Height of the surface at (y, x) (voxel indices, scalars or arrays), voxels."""
        return self.a + self.b * np.asarray(y, float) + self.c * np.asarray(x, float)

    def heights(self) -> np.ndarray:
        """(y, x) float64 height of the surface over every column, voxels."""
        ny, nx = self.shape_yx
        return self.height(np.arange(ny)[:, None], np.arange(nx)[None, :])

    def attrs(self) -> dict:
        """The phase map's attributes (docs/outputs.md): ``collector_plane`` ([a, b, c]), ``collector_tilt_deg``,
        ``collector_rise_vox``, ``collector_tilted``."""
        return {"collector_plane": np.array([self.a, self.b, self.c]), "collector_tilt_deg": self.tilt_deg,
                "collector_rise_vox": self.rise_vox, "collector_tilted": self.tilted}

    def describe(self) -> str:
        """One line for logs and file attributes."""
        return (f"z = {self.a:.3f} + {self.b:.5f} y + {self.c:.5f} x voxels (tilt {self.tilt_deg:.2f} deg, rise "
                f"{self.rise_vox:.2f} voxels across the volume, {self.columns} columns, residual sd "
                f"{self.residual_sd:.2f})")


def column_heights(slabs: Iterable[np.ndarray], band: tuple[float, float]) -> np.ndarray:
    """Per column, the run of voxels from z = 0 whose grey level lies in ``band``, voxels.

    Parameters
    ----------
    slabs : iterable of numpy.ndarray
        (z, y, x) grey levels of consecutive slabs from z = 0; read only until every column's run ended.
    band : tuple of float
        [low, high) grey levels of Al (the phase model's thresholds around it).

    Returns
    -------
    numpy.ndarray
        (y, x) int32 run lengths; 0 where slice 0 is outside the band.
    """
    lo, hi = band
    heights = running = None
    for data in slabs:
        inside = (data >= lo) & (data < hi)
        if heights is None:
            heights = np.zeros(data.shape[1:], np.int32)
            running = np.ones(data.shape[1:], bool)
        for z in range(len(data)):
            running &= inside[z]
            heights += running
        if not running.any():
            break
    if heights is None:
        raise ValueError("column_heights: no slab to read")
    return heights


def fit_plane(heights: np.ndarray) -> CollectorPlane | None:
    """Least-squares plane through the column ``heights`` (voxels), trimmed of outlying columns.

    The heights are median-filtered over :data:`SMOOTH_COLUMNS` columns first; columns of height 0 (no Al
    at z = 0) are left out. Each of :data:`TRIM_ROUNDS` rounds keeps the columns within 3 robust σ (1.4826
    × the median absolute residual, at least :data:`MIN_TRIM_VOX`) of the previous plane.

    Returns
    -------
    CollectorPlane or None
        None where fewer than 3 columns hold Al at z = 0.
    """
    smooth = ndimage.median_filter(np.asarray(heights, np.float64), size=SMOOTH_COLUMNS, mode="nearest")
    y, x = np.nonzero(smooth > 0)
    z = smooth[y, x]
    if len(z) < 3:
        return None
    design = np.column_stack([np.ones(len(z)), y, x]).astype(float)
    keep = np.ones(len(z), bool)
    coef = np.zeros(3)
    for _ in range(TRIM_ROUNDS + 1):
        coef = np.linalg.lstsq(design[keep], z[keep], rcond=None)[0]
        res = z - design @ coef
        scale = max(MIN_TRIM_VOX, 3 * 1.4826 * float(np.median(np.abs(res[keep]))))
        new = np.abs(res) <= scale
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
    res = (z - design @ coef)[keep]
    ny, nx = heights.shape
    rise = abs(coef[1]) * (ny - 1) + abs(coef[2]) * (nx - 1)
    return CollectorPlane(float(coef[0]), float(coef[1]), float(coef[2]), (ny, nx), int(keep.sum()),
                          float(res.std()), bool(rise >= MIN_RISE_VOX))


def top_rows(plane: CollectorPlane, margin: int) -> np.ndarray:
    """(y, x) int64 first slice above the collector in each column: the plane's height rounded, plus
    ``margin`` slices for its blurred top (never below 0)."""
    return np.maximum(np.floor(plane.heights() + 0.5).astype(np.int64) + int(margin), 0)


def from_attrs(attrs, shape_yx) -> CollectorPlane | None:
    """The tilted collector plane a phase map's attributes record (``collector_plane``, ``collector_tilted``;
    docs/outputs.md), or None where none is recorded or the collector is flat."""
    if "collector_plane" not in attrs or not bool(attrs.get("collector_tilted", False)):
        return None
    a, b, c = (float(v) for v in np.asarray(attrs["collector_plane"], float))
    return CollectorPlane(a, b, c, tuple(int(n) for n in shape_yx), 0, float("nan"), True)
