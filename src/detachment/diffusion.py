"""Electron diffusion length inside each particle (Supp. Fig. 3), by fast marching (scikit-fmm).

Electrons leave a particle where its solid touches the conductive network: the solid voxels with a face
neighbour outside the envelope that is CBD or Al are the exits. A solid voxel's diffusion length is its
geodesic distance (µm) to the nearest exit through the particle's solid only (cracks are obstacles).
Arrays are (z, y, x); the voxel size is (z, y, x) in µm and may be anisotropic. Method, accuracy and
the per-particle statistics: docs/methods.md, "Electron diffusion length".

Main entry points: :func:`diffusion_table_from_files` (the workflow's, bounded memory),
:func:`particle_diffusion`, :func:`geodesic_distance`, :func:`descent_path`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import skfmm
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from .phases import AL, CBD, NMC_HIGH, NMC_LOW

log = logging.getLogger(__name__)

_OFFSETS = np.array([(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                     if (dz, dy, dx) > (0, 0, 0)])


def geodesic_distance(solid: np.ndarray, sources: np.ndarray, voxel_size_um=(1.0, 1.0, 1.0),
                      method: str = "fmm") -> np.ndarray:
    """Geodesic distance (µm) inside ``solid`` from the nearest ``sources`` voxel centre.

    Fast marching solves |grad d| = 1 with every non-solid voxel masked; Dijkstra is exact on the
    26-neighbour voxel graph, a diagonal step allowed only where the whole voxel cube it crosses is solid.

    Parameters
    ----------
    solid : numpy.ndarray
        (z, y, x) bool voxels the paths may use.
    sources : numpy.ndarray
        (z, y, x) bool start voxels (the exits); only those in ``solid`` count.
    voxel_size_um : sequence of float, default (1.0, 1.0, 1.0)
        (z, y, x) voxel edge lengths, µm.
    method : str, default "fmm"
        ``"fmm"`` (fast marching, second order) or ``"dijkstra"`` (exact on the voxel graph, the tests'
        oracle).

    Returns
    -------
    numpy.ndarray
        (z, y, x) float64 distance, µm: 0 on the sources, inf where no path exists, NaN outside the solid.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    """
    solid = np.asarray(solid, bool)
    sources = np.asarray(sources, bool) & solid
    out = np.full(solid.shape, np.nan)
    out[solid] = np.inf
    if not sources.any():
        return out
    vs = tuple(float(v) for v in voxel_size_um)
    if method == "fmm":
        out[sources] = 0.0
        # Convention: march from the tube of radius r0 = half the finest voxel around the source centres
        # (phi = Euclidean distance to the nearest source centre - r0), then add r0 back. The tube meets every
        # axis r0 from a source centre, so distances are measured from source centres along every axis, even
        # with anisotropic voxels (a bar of spacing h gets exactly k*h). phi = 0 on the sources instead
        # breaks the second-order stencil (a flat run of zeros: thick sources come out ~h/2 short), and the
        # usual -1/+1 puts the front h_axis/2 from the sources, an offset that depends on the direction.
        face = ndimage.generate_binary_structure(solid.ndim, 1)
        if not (ndimage.binary_dilation(sources, face) & solid & ~sources).any():
            return out  # no solid next to a source: nothing else is reachable (and skfmm finds no contour)
        r0 = 0.5 * min(vs)
        phi = ndimage.distance_transform_edt(~sources, sampling=vs) - r0
        d = skfmm.distance(np.ma.MaskedArray(phi, mask=~solid), dx=vs, order=2)
        reached = solid & ~sources & ~np.ma.getmaskarray(d)  # skfmm masks what the front never reaches
        out[reached] = np.ma.getdata(d)[reached] + r0
    elif method == "dijkstra":
        out[solid] = _dijkstra(solid, sources, np.asarray(vs))
    else:
        raise ValueError(f"unknown method {method!r}")
    return out


def _dijkstra(solid, sources, vs):
    """Exact shortest paths on the 26-neighbour graph of ``solid`` without corner cutting."""
    n = int(solid.sum())
    index = -np.ones(solid.shape, np.int64)
    index[solid] = np.arange(n)
    coords = np.argwhere(solid)
    rows, cols, w = [], [], []
    for off in _OFFSETS:
        nb = coords + off
        ok = np.all((nb >= 0) & (nb < solid.shape), axis=1)
        a = coords[ok]
        keep = index[tuple((a + off).T)] >= 0
        # a diagonal step needs every voxel of the cube it crosses solid (no squeezing through an edge/corner)
        for corner in itertools.product(*[(0, o) if o else (0,) for o in off]):
            keep &= index[tuple((a + np.array(corner)).T)] >= 0
        a = a[keep]
        rows.append(index[tuple(a.T)])
        cols.append(index[tuple((a + off).T)])
        w.append(np.full(len(a), float(np.linalg.norm(off * vs))))
    rows, cols, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
    graph = coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
    return dijkstra(graph, directed=False, indices=index[sources], min_only=True)


def exits(envelope: np.ndarray, solid: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Solid voxels of the envelope with a face neighbour outside the envelope that is CBD or Al.

    Parameters
    ----------
    envelope : numpy.ndarray
        (z, y, x) bool envelope of one particle (a crop).
    solid : numpy.ndarray
        (z, y, x) bool NMC solid of the envelope.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool exit voxels.
    """
    conductive = ((phases == CBD) | (phases == AL)) & ~envelope
    touching = ndimage.binary_dilation(conductive, ndimage.generate_binary_structure(3, 1))
    return solid & touching


def surface_solid(envelope: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """Solid voxels with a face neighbour outside the envelope (the fully-attached reference exits).

    Parameters
    ----------
    envelope : numpy.ndarray
        (z, y, x) bool envelope of one particle (a crop); beyond the array's border counts as outside.
    solid : numpy.ndarray
        (z, y, x) bool NMC solid of the envelope.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool surface solid voxels.
    """
    outside = ndimage.binary_dilation(~envelope, ndimage.generate_binary_structure(3, 1), border_value=1)
    return solid & outside


@dataclass
class ParticleDiffusion:
    """Diffusion-length statistics of one particle.

    Attributes
    ----------
    label : int
        The particle's label.
    mean_um, p95_um, max_um : float
        Mean, 95th percentile and maximum diffusion length over the solid voxels that reach an exit, µm
        (NaN when none does).
    isolated_fraction : float
        Fraction (0-1) of the solid voxels with no path to an exit (NaN without solid).
    detour_ratio : float
        Mean length over the mean length, on the same voxels, with every surface solid voxel an exit
        (the same particle fully attached); ≥ 1, NaN when undefined.
    exit_fraction : float
        Fraction (0-1) of the surface solid voxels that are exits (NaN without surface solid).
    """

    label: int
    mean_um: float
    p95_um: float
    max_um: float
    isolated_fraction: float
    detour_ratio: float
    exit_fraction: float


def particle_diffusion(envelope: np.ndarray, phases: np.ndarray, voxel_size_um, label: int = 0,
                       method: str = "fmm") -> tuple[ParticleDiffusion, np.ndarray]:
    """Diffusion statistics and field (µm; NaN outside the solid, inf where isolated) of one particle crop.

    Parameters
    ----------
    envelope : numpy.ndarray
        (z, y, x) bool envelope of the particle (a crop with context around it).
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes of the crop; the solid is the envelope's NMC low / high voxels.
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm.
    label : int, default 0
        Stored in the statistics.
    method : str, default "fmm"
        ``"fmm"`` or ``"dijkstra"`` (:func:`geodesic_distance`).

    Returns
    -------
    stats : ParticleDiffusion
        The particle's statistics.
    field : numpy.ndarray
        (z, y, x) float64 diffusion length, µm: 0 on the exits, inf where isolated, NaN outside the solid.
    """
    solid = envelope & ((phases == NMC_LOW) | (phases == NMC_HIGH))
    ex = exits(envelope, solid, phases)
    field = geodesic_distance(solid, ex, voxel_size_um, method)
    surface = surface_solid(envelope, solid)
    ref = geodesic_distance(solid, surface, voxel_size_um, method)
    vals = field[solid]
    reach = np.isfinite(vals)
    finite = vals[reach]
    # the fully attached reference over the same (reachable) voxels, so the ratio measures detours only
    ref_vals = ref[solid][reach]
    ref_mean = float(np.mean(ref_vals[np.isfinite(ref_vals)])) if np.isfinite(ref_vals).any() else np.nan
    surf = surface.sum()
    stats = ParticleDiffusion(
        label=label,
        mean_um=float(finite.mean()) if finite.size else np.nan,
        p95_um=float(np.percentile(finite, 95)) if finite.size else np.nan,
        max_um=float(finite.max()) if finite.size else np.nan,
        isolated_fraction=float(1 - finite.size / vals.size) if vals.size else np.nan,
        detour_ratio=float(finite.mean() / ref_mean) if finite.size and ref_mean > 0 else np.nan,
        exit_fraction=float(ex.sum() / surf) if surf else np.nan,
    )
    return stats, field


def descent_path(field: np.ndarray, start, spacing=None, step: float = 0.25, max_steps: int = 10_000
                 ) -> np.ndarray:
    """Optimal path from ``start`` (voxel index) to the nearest exit: a streamline of -grad(field).

    Steps of ``step`` voxel (of the finest axis) follow the unit physical direction -grad/|grad|, the
    gradient interpolated multilinearly from finite differences between finite voxels. Where such a step
    would not lower the distance or would enter a non-solid voxel (at an obstacle's corner), the path
    moves to the neighbouring voxel centre of steepest descent instead. Stops on an exit (a voxel of
    distance 0) or where no move lowers the distance (e.g. an exit outside a 2D slice).

    Parameters
    ----------
    field : numpy.ndarray
        2D (y, x) or 3D (z, y, x) distance, µm; NaN or inf where there is no path.
    start : sequence of float
        Start point, voxel coordinates in the same axis order.
    spacing : sequence of float, optional
        Voxel size per axis, µm (default 1 on every axis).
    step : float, default 0.25
        Step length, in voxels of the finest axis.
    max_steps : int, default 10000
        Most steps taken.

    Returns
    -------
    numpy.ndarray
        (k, ndim) float voxel coordinates, the first being ``start``; the distance decreases strictly
        along them.
    """
    f = np.where(np.isfinite(field), field, np.nan).astype(float)
    h = np.ones(f.ndim) if spacing is None else np.asarray(spacing, float)
    grad = np.stack([_gradient(f, ax, h[ax]) for ax in range(f.ndim)])
    p = np.asarray(start, float)
    path, cur = [p], _interp(f, p)
    for _ in range(max_steps):
        if not cur > 0 or f[_nearest(p, f.shape)] == 0:
            break
        g = np.array([_interp(gi, p) for gi in grad])
        norm = np.linalg.norm(g)
        q = p - step * h.min() * (g / norm) / h if norm > 0 else p  # unit physical step, in voxels per axis
        q = np.clip(q, 0, np.array(f.shape) - 1)
        val = _interp(f, q)
        if not val < cur or np.isnan(f[_nearest(q, f.shape)]):
            q = _steepest_neighbour(f, p, cur, h)
            if q is None:
                break
            val, q = f[q], np.asarray(q, float)
        p, cur = q, val
        path.append(p)
    return np.array(path)


def _steepest_neighbour(f, p, cur, h):
    """The voxel around ``p`` (8 in 2D, 26 in 3D, and its own) with the steepest physical descent from ``cur``."""
    idx = _nearest(p, f.shape)
    sl = tuple(slice(max(0, i - 1), min(n, i + 2)) for i, n in zip(idx, f.shape))
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij"), axis=-1)
    dist = np.linalg.norm((grid - p) * h, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(np.isfinite(f[sl]) & (dist > 0), (cur - f[sl]) / dist, -np.inf)
    k = np.unravel_index(np.argmax(slope), slope.shape)
    return tuple(grid[k]) if slope[k] > 0 else None


def _gradient(f, axis, h):
    """Derivative of ``f`` along ``axis`` (per µm): central where both neighbours are finite, else one-sided,
    0 where neither is (no information along that axis); NaN where ``f`` is."""
    fwd = (np.roll(f, -1, axis) - f) / h
    bwd = (f - np.roll(f, 1, axis)) / h
    edge = [slice(None)] * f.ndim
    edge[axis] = -1
    fwd[tuple(edge)] = np.nan  # np.roll wraps around: no neighbour past the border
    edge[axis] = 0
    bwd[tuple(edge)] = np.nan
    g = np.where(np.isnan(fwd), bwd, np.where(np.isnan(bwd), fwd, 0.5 * (fwd + bwd)))
    return np.where(np.isnan(g) & ~np.isnan(f), 0.0, g)


def _interp(a, p):
    """Multilinear interpolation of ``a`` at point ``p`` (voxel coordinates) over its finite corners only."""
    p = np.clip(p, 0, np.array(a.shape) - 1)
    lo = np.minimum(np.floor(p).astype(int), np.array(a.shape) - 1)
    t = p - lo
    num = den = 0.0
    for corner in itertools.product((0, 1), repeat=a.ndim):
        idx = tuple(min(lo[k] + c, a.shape[k] - 1) for k, c in enumerate(corner))
        w = float(np.prod([t[k] if c else 1 - t[k] for k, c in enumerate(corner)]))
        if w > 0 and np.isfinite(a[idx]):
            num += w * a[idx]
            den += w
    return num / den if den > 0 else np.nan


def _nearest(p, shape):
    return tuple(int(np.clip(np.rint(v), 0, n - 1)) for v, n in zip(p, shape))


def diffusion_table_from_files(labels_path, phases_path, links: pd.DataFrame, voxel_size_um, pad: int = 2,
                               progress: bool = True, refine: bool = True) -> pd.DataFrame:
    """:class:`ParticleDiffusion` of every particle of ``links``, each on its bounding-box crop from HDF5.

    Memory is bounded by the largest particle's box. With ``refine`` the envelope is
    :func:`detachment.particles.refine_envelope` of the mask, the same envelope as ``particles.csv``;
    else the mask itself.

    Parameters
    ----------
    labels_path : str or os.PathLike
        HDF5 file of the 3D particle labels (``/labels``, uint32, 0 = background).
    phases_path : str or os.PathLike
        HDF5 file of the phase map (``/phases``, uint8).
    links : pandas.DataFrame
        One row per particle (``links.csv``): ``label`` and its bounding box ``z_min``, ``z_max``,
        ``y_min``, ``y_max``, ``x_min``, ``x_max`` (voxels).
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm.
    pad : int, default 2
        Voxels of context around each bounding box.
    progress : bool, default True
        Show a progress bar.
    refine : bool, default True
        Envelope = the refined mask; else the mask itself.

    Returns
    -------
    pandas.DataFrame
        One row per particle, the fields of :class:`ParticleDiffusion` as columns (``label``,
        ``mean_um``, ``p95_um``, ``max_um``, ``isolated_fraction``, ``detour_ratio``,
        ``exit_fraction``).
    """
    import h5py
    from tqdm import tqdm

    from . import io
    from .particles import refine_envelope

    rows = []
    with h5py.File(labels_path, "r") as fl, h5py.File(phases_path, "r") as fp:
        dl, dp = fl["labels"], fp["phases"]
        shape = dl.shape
        for row in tqdm(list(links.itertuples()), desc="diffusion", unit="particle", disable=not progress):
            sl = io.particle_crop(row, shape, pad)
            lab, ph = dl[sl], dp[sl]
            mask = lab == row.label
            env = refine_envelope(mask, (lab > 0) & ~mask, ph) if refine else mask
            stats, _ = particle_diffusion(env, ph, voxel_size_um, int(row.label))
            rows.append(stats.__dict__)
    return pd.DataFrame(rows, columns=list(ParticleDiffusion.__dataclass_fields__))
