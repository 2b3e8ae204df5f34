"""A co-registered second map per sample (e.g. the Ni valence state, Supp. Fig. 7).

Contract: ``results/{sample}/second_map.h5``, dataset ``/second_map``, float32 (z, y, x) of the
sample's volume shape (co-registered voxel for voxel), chunked by slice, attributes ``voxel_size_um``
(µm, z y x), ``source`` and ``quantity`` (what the values are, with units, e.g. ``"Ni valence"``).
NaN = no measurement at that voxel; ±Inf is refused. Per particle, the moments of map and grey level
(electron density) are population moments (ddof = 0), so the pooled voxel-level correlation of any
set of particles follows exactly from the table (:func:`detachment.stats.pooled_pearson`).

Main entry points: :func:`import_second_map`, :func:`particle_map_table`, :func:`correlations`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from . import io
from .phases import NMC_HIGH, NMC_LOW
from .shading import flat_view

log = logging.getLogger(__name__)

SECOND_MAP_DATASET = "second_map"
TABLE_COLUMNS = ["label", "second_map_voxels", "solid_voxels", "electron_density_mean", "electron_density_std",
                 "second_map_mean", "second_map_std", "density_map_covariance", "within_pearson_r",
                 "centroid_z_um", "touches_border"]


def write_second_map(path: str | os.PathLike, values: np.ndarray, voxel_size_um, source: str,
                     quantity: str, slab: int = 16, attrs: dict | None = None) -> None:
    """Write a (z, y, x) map to ``path`` atomically, slab by slab into a slice-chunked dataset.

    Parameters
    ----------
    path : str or os.PathLike
        The contract file to write (``/second_map``).
    values : numpy.ndarray
        (z, y, x) map values (stored as float32); NaN = no measurement. Not checked for ±Inf.
    voxel_size_um : float, str or sequence of float
        Voxel size in µm, one number or three (z, y, x).
    source : str
        Provenance, the ``source`` attribute.
    quantity : str
        What the values are, with units (the ``quantity`` attribute).
    slab : int, default 16
        Slices written at a time.
    attrs : dict, optional
        Further attributes of the dataset.

    Raises
    ------
    InputError
        When the shape or the voxel size is refused.
    """
    values = np.asarray(values)
    io.check_volume_shape(values.shape, str(path))
    with io.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset(SECOND_MAP_DATASET, shape=values.shape, dtype=np.float32,
                             chunks=io.slab_chunks(values.shape), compression="gzip", compression_opts=1)
        for z0, z1 in io.slab_ranges(values.shape[0], slab):
            d[z0:z1] = values[z0:z1].astype(np.float32, copy=False)
        _set_attrs(d, voxel_size_um, source, quantity, attrs)


def _set_attrs(d, voxel_size_um, source, quantity, attrs):
    d.attrs["voxel_size_um"] = np.asarray(io.parse_voxel_size(voxel_size_um, d.file.filename), float)
    d.attrs["source"] = source
    d.attrs["quantity"] = quantity
    for k, v in (attrs or {}).items():
        d.attrs[k] = v


def _refuse_inf(data: np.ndarray, locate, src: str, where: str) -> None:
    """Refuse an infinite value of a slab; ``locate`` maps its slab index to the file's (axis 0, 1, 2) index."""
    inf = np.isinf(data)
    if inf.any():
        i = tuple(np.argwhere(inf)[0])
        z, y, x = locate(i)
        raise io.InputError(f"{src}: voxel (z={z}, y={y}, x={x}) is {data[i]} ({where}); "
                            f"a second map may hold NaN (no measurement) but not Inf")


def import_second_map(src: str | os.PathLike, out: str | os.PathLike, *, dataset: str | None,
                      volume_path: str | os.PathLike, where: str = "field 'second_map'",
                      quantity: str = "second map", slab: int = 16) -> tuple[int, int, int]:
    """Validate a user's co-registered map and write it by the contract (NaN kept, the volume's voxel size).

    Parameters
    ----------
    src, out : str or os.PathLike
        The map (HDF5 file, multi-page TIFF or folder / glob of 2D TIFF slices, as for a volume:
        :class:`detachment.io.VolumeSource`) and the contract file to write.
    dataset : str or None
        HDF5 dataset of ``src`` (the sheet's ``second_map_dataset``); required for HDF5.
    volume_path : str or os.PathLike
        The sample's contract volume; the map must have the shape of the file it was imported from, and is
        brought to the internal convention the same way (its ``collector_side`` attribute).
    where, quantity : str, optional
        The sample-sheet field named in error messages; what the values are, with units.
    slab : int, default 16
        Slices read and written at a time (memory ~ one slab).

    Returns
    -------
    tuple of int
        The map's shape (z, y, x), in voxels.

    Raises
    ------
    InputError
        A missing file or dataset, a shape other than the volume's, a non-real type, ±Inf, no finite value.
    """
    src_s = str(src)
    if not any(c in src_s for c in "*?[") and not Path(src).exists():
        raise io.InputError(f"{src}: second map file does not exist ({where})")
    if Path(src).suffix.lower() in (".h5", ".hdf5", ".hdf") and not dataset:
        raise io.InputError(f"{src}: field 'second_map_dataset' is required for an HDF5 second map ({where})")
    try:
        source = io.VolumeSource(src, dataset)
    except io.InputError as e:
        raise io.InputError(f"{e} ({where})") from None
    shape, voxel = io.read_volume_info(volume_path)
    orient = io.volume_orientation(volume_path)
    if orient.shape(source.shape) != tuple(shape):
        raise io.InputError(f"{src}: second map shape {tuple(source.shape)} (file axes) differs from the volume's "
                            f"{orient.source_shape(shape)} "
                            f"({volume_path}, in the file's axes); {where} must name a map co-registered with "
                            f"the volume voxel for voxel")
    n_finite = 0
    with io.atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset(SECOND_MAP_DATASET, shape=shape, dtype=np.float32, chunks=io.slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        for z0, data in io.oriented_slabs(source, orient, slab, stage_dir=Path(out).parent):
            _refuse_inf(data, lambda i, z0=z0: orient.source_index((i[0] + z0, i[1], i[2]), source.shape),
                        f"{src}", where)
            n_finite += int(np.isfinite(data).sum())
            d[z0:z0 + len(data)] = data
        if n_finite == 0:
            raise io.InputError(f"{src}: second map has no finite value ({where})")
        _set_attrs(d, voxel, src_s + (f":{dataset}" if dataset else ""), quantity, orient.attrs())
    log.info("imported second map %s %s -> %s (%d finite voxels)", src, shape, out, n_finite)
    return tuple(shape)


def read_second_map_info(path: str | os.PathLike) -> tuple[tuple[int, int, int], str]:
    """Shape and ``quantity`` of a contract second-map file.

    Parameters
    ----------
    path : str or os.PathLike
        File with dataset ``/second_map``.

    Returns
    -------
    shape : tuple of int
        (z, y, x) in voxels.
    quantity : str
        What the values are (``"second map"`` when the attribute is absent).

    Raises
    ------
    InputError
        When the file or the dataset does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise io.InputError(f"{path}: second map file does not exist")
    with h5py.File(path, "r") as f:
        if SECOND_MAP_DATASET not in f:
            raise io.InputError(f"{path}: has no dataset '/{SECOND_MAP_DATASET}'")
        d = f[SECOND_MAP_DATASET]
        return tuple(d.shape), str(d.attrs.get("quantity", "second map"))


def _moments(g: np.ndarray, m: np.ndarray) -> dict:
    n = g.size
    if n == 0:
        return {"second_map_voxels": 0, "electron_density_mean": np.nan, "electron_density_std": np.nan,
                "second_map_mean": np.nan, "second_map_std": np.nan, "density_map_covariance": np.nan,
                "within_pearson_r": np.nan}
    g = g.astype(np.float64)
    m = m.astype(np.float64)
    mg, mm = g.mean(), m.mean()
    sg, sm = g.std(), m.std()
    cov = float(np.mean((g - mg) * (m - mm)))
    return {"second_map_voxels": n, "electron_density_mean": mg, "electron_density_std": sg,
            "second_map_mean": mm, "second_map_std": sm, "density_map_covariance": cov,
            "within_pearson_r": cov / (sg * sm) if sg > 0 and sm > 0 else np.nan}


def particle_map_table(labels_path, phases_path, volume_path, map_path, links: pd.DataFrame, pad: int = 2,
                       refine: bool = True, progress: bool = False) -> pd.DataFrame:
    """Per-particle moments of the second map and the grey level over each particle's solid.

    Parameters
    ----------
    labels_path, phases_path, volume_path, map_path : str or os.PathLike
        HDF5 files of one (z, y, x) shape: 3D particle labels ``/labels``, uint8 phase map ``/phases``,
        the contract grey volume (electron density) and the contract second map.
    links : pandas.DataFrame
        One row per particle, ``links.csv`` layout: ``label`` (id in ``/labels``), inclusive ``z_min``..
        ``z_max``, ``y_min``, ``x_min``, exclusive ``y_max``, ``x_max``; optional ``touches_border``.
    pad : int, default 2
        Margin of the bounding-box crops, voxels (memory ~ the largest particle's crop).
    refine : bool, default True
        Envelope = :func:`detachment.particles.refine_envelope` of the mask (as in ``particles.csv``);
        else the mask.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` (docs/outputs.md): moments over the solid voxels with a finite map
        (docs/methods.md, Second map), NaN without any (``within_pearson_r`` also for a constant map or
        grey level); ``centroid_z_um`` their mean z, µm; ``touches_border`` False if not in ``links``.

    Raises
    ------
    InputError
        When the map's shape differs from the volume's.
    """
    from tqdm import tqdm

    from .particles import refine_envelope

    shape, voxel = io.read_volume_info(volume_path)
    map_shape, _ = read_second_map_info(map_path)
    if map_shape != shape:
        raise io.InputError(f"{map_path}: second map shape {map_shape} differs from the volume's {shape} "
                            f"({volume_path})")
    rows = []
    with h5py.File(labels_path, "r") as fl, h5py.File(phases_path, "r") as fp, \
            h5py.File(volume_path, "r") as fv, h5py.File(map_path, "r") as fm:
        dl, dp, dv, dm = fl["labels"], fp["phases"], flat_view(fv[io.VOLUME_DATASET], fp), fm[SECOND_MAP_DATASET]
        for row in tqdm(list(links.itertuples()), desc="second map", unit="particle", disable=not progress):
            sl = io.particle_crop(row, shape, pad)
            lab, ph = dl[sl], dp[sl]
            mask = lab == row.label
            env = refine_envelope(mask, (lab > 0) & ~mask, ph) if refine else mask
            solid = env & ((ph == NMC_LOW) | (ph == NMC_HIGH))
            vals = dm[sl]
            use = solid & np.isfinite(vals)
            r = {"label": int(row.label), "solid_voxels": int(solid.sum())}
            r.update(_moments(dv[sl][use], vals[use]))
            zz = np.nonzero(use)[0]
            r["centroid_z_um"] = (zz.mean() + sl[0].start) * voxel[0] if zz.size else np.nan
            r["touches_border"] = bool(getattr(row, "touches_border", False))
            rows.append(r)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def used_particles(table: pd.DataFrame, exclude_border: bool = True) -> pd.DataFrame:
    """The rows the correlations use: map voxels present, finite means, not on the border.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`particle_map_table` output (also read back from a CSV, even a header-only one).
    exclude_border : bool, default True
        Leave out particles flagged ``touches_border``.

    Returns
    -------
    pandas.DataFrame
        The rows kept, numeric columns converted to numbers.
    """
    t = table.copy()
    for c in TABLE_COLUMNS[:-1]:  # numeric even when read back from a header-only CSV
        t[c] = pd.to_numeric(t[c], errors="coerce")
    if exclude_border and "touches_border" in t:
        t = t[~t.touches_border.astype(bool)]
    return t[(t.second_map_voxels > 0) & np.isfinite(t.second_map_mean) & np.isfinite(t.electron_density_mean)]


def figure_slice(table: pd.DataFrame, voxel_z_um: float, depth: int) -> int:
    """Slice index for the figure: the median z of the particles' map voxels.

    Parameters
    ----------
    table : pandas.DataFrame
        Particle rows with ``centroid_z_um`` (:func:`used_particles`).
    voxel_z_um : float
        Voxel size along z, µm.
    depth : int
        Number of slices of the volume.

    Returns
    -------
    int
        z index in ``[0, depth)``; the middle slice when no particle has a finite centroid.
    """
    z = table.centroid_z_um.to_numpy(float) / voxel_z_um if len(table) else np.array([])
    z = z[np.isfinite(z)]
    return int(np.clip(round(float(np.median(z))), 0, depth - 1)) if z.size else depth // 2


def read_slices(volume_path, map_path, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``z`` of the grey volume and of the second map.

    Parameters
    ----------
    volume_path : str or os.PathLike
        The contract grey volume.
    map_path : str or os.PathLike
        The contract second map.
    z : int
        Slice index.

    Returns
    -------
    density : numpy.ndarray
        (y, x) float32 grey levels.
    second_map : numpy.ndarray
        (y, x) float32 map values (NaN = no measurement).
    """
    with h5py.File(volume_path, "r") as fv, h5py.File(map_path, "r") as fm:
        return (fv[io.VOLUME_DATASET][z].astype(np.float32, copy=False),
                fm[SECOND_MAP_DATASET][z].astype(np.float32, copy=False))


def correlations(table: pd.DataFrame, exclude_border: bool = True, n_boot: int = 2000, seed: int = 0
                 ) -> list[dict]:
    """Electron density vs second map of one sample, at two levels (one dict each).

    ``particle``: Pearson r between the per-particle means (``electron_density_mean`` vs
    ``second_map_mean``, one point per particle, unweighted), its two-sided p-value
    (:func:`scipy.stats.pearsonr`) and a percentile bootstrap 95 % CI over particles. ``voxel``: Pearson r
    over all the particles' map voxels pooled (the paper's Supp. Fig. 7d measure, there on projected
    pixels of one particle), computed exactly from the per-particle moments; its 95 % CI resamples whole
    particles (neighbouring voxels are not independent), and ``p_value`` is NaN because a voxel-count
    p-value would overstate the evidence.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`particle_map_table` output of one sample.
    exclude_border : bool, default True
        Leave out particles touching the volume border.
    n_boot : int, default 2000
        Bootstrap resamples.
    seed : int, default 0
        Seed of the bootstrap.

    Returns
    -------
    list of dict
        Two rows (``level`` = ``"particle"``, ``"voxel"``) with ``x``, ``y`` (the quantities'
        names), ``pearson_r``, ``p_value``, ``ci95_low``, ``ci95_high`` and ``n`` (particles or voxels
        used).
    """
    from .stats import cluster_bootstrap_pooled_ci, correlation, pearson_bootstrap_ci, pooled_pearson

    t = used_particles(table, exclude_border)
    x, y = t.electron_density_mean.to_numpy(float), t.second_map_mean.to_numpy(float)
    r, p = correlation(x, y)
    lo, hi = pearson_bootstrap_ci(x, y, n_boot=n_boot, seed=seed)
    moments = (t.second_map_voxels.to_numpy(float), x, y, t.electron_density_std.to_numpy(float),
               t.second_map_std.to_numpy(float), t.density_map_covariance.to_numpy(float))
    rv = pooled_pearson(*moments)
    vlo, vhi = cluster_bootstrap_pooled_ci(*moments, n_boot=n_boot, seed=seed)
    common = {"x": "electron_density", "y": "second_map"}
    return [{"level": "particle", **common, "pearson_r": r, "p_value": p, "ci95_low": lo, "ci95_high": hi,
             "n": len(t)},
            {"level": "voxel", **common, "pearson_r": rv, "p_value": np.nan, "ci95_low": vlo, "ci95_high": vhi,
             "n": int(moments[0].sum())}]
