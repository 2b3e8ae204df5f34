"""A co-registered second map per sample (e.g. the Ni valence state, Supp. Fig. 7): file contract,
import of a user's map, and its per-particle statistics beside the electron density.

Contract: ``results/{sample}/second_map.h5``, dataset ``/second_map``, float32, axes (z, y, x), the
shape of the sample's ``volume.h5`` (co-registered voxel for voxel), chunked by slice, attributes
``voxel_size_um`` (the volume's, µm, z y x), ``source`` and ``quantity`` (what the values are, with
units, e.g. ``"Ni valence"``). NaN = no measurement at that voxel (the phantom's map is NaN outside the
NMC solid); ±Inf is refused. Only finite values over a particle's solid are used.

Per particle (:func:`particle_map_table`): over the voxels of its solid (its envelope, refined as for
``particles.csv``, in NMC phase 2 or 3) where the map is finite, the mean and standard deviation of the
map and of the grey level (electron density), their covariance, and the within-particle Pearson r.
Means, standard deviations and covariances are population moments (ddof = 0), so the pooled
voxel-level correlation of any set of particles follows exactly from the table
(:func:`detachment.stats.pooled_pearson`) without reading the voxels again.
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

log = logging.getLogger(__name__)

SECOND_MAP_DATASET = "second_map"
TABLE_COLUMNS = ["label", "second_map_voxels", "solid_voxels", "electron_density_mean", "electron_density_std",
                 "second_map_mean", "second_map_std", "density_map_covariance", "within_pearson_r",
                 "centroid_z_um", "touches_border"]


def write_second_map(path: str | os.PathLike, values: np.ndarray, voxel_size_um, source: str,
                     quantity: str, slab: int = 16, attrs: dict | None = None) -> None:
    """Write a (z, y, x) map to ``path`` atomically, slab by slab into a slice-chunked dataset."""
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


def import_second_map(src: str | os.PathLike, out: str | os.PathLike, *, dataset: str | None,
                      volume_path: str | os.PathLike, where: str = "field 'second_map'",
                      quantity: str = "second map", slab: int = 16) -> tuple[int, int, int]:
    """Validate a user's co-registered map and write it by the contract; returns its shape.

    ``src`` is an HDF5 file (with ``dataset``, the sheet's ``second_map_dataset``), a multi-page TIFF or a
    folder / glob of 2D TIFF slices, like a volume. Refused with :class:`detachment.io.InputError`, the
    message naming the file, the sheet field (``where``) and what is expected: a missing file or dataset,
    a shape other than the volume's (``volume_path``), a non-real type, ±Inf, or no finite value at all.
    NaN voxels are kept (no measurement). Streams slab by slab (memory ~ one slab).
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
    if tuple(source.shape) != tuple(shape):
        raise io.InputError(f"{src}: second map shape {tuple(source.shape)} (z, y, x) differs from the volume's "
                            f"{tuple(shape)} ({volume_path}); {where} must name a map co-registered with the "
                            f"volume voxel for voxel")
    n_finite = 0
    with io.atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset(SECOND_MAP_DATASET, shape=shape, dtype=np.float32, chunks=io.slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        for z0, data in source.slabs(slab):
            inf = np.isinf(data)
            if inf.any():
                z, y, x = np.argwhere(inf)[0]
                raise io.InputError(f"{src}: voxel (z={z + z0}, y={y}, x={x}) is {data[z, y, x]} ({where}); "
                                    f"a second map may hold NaN (no measurement) but not Inf")
            n_finite += int(np.isfinite(data).sum())
            d[z0:z0 + len(data)] = data
        if n_finite == 0:
            raise io.InputError(f"{src}: second map has no finite value ({where})")
        _set_attrs(d, voxel, src_s + (f":{dataset}" if dataset else ""), quantity, None)
    log.info("imported second map %s %s -> %s (%d finite voxels)", src, shape, out, n_finite)
    return tuple(shape)


def read_second_map_info(path: str | os.PathLike) -> tuple[tuple[int, int, int], str]:
    """Shape and ``quantity`` of a contract second-map file."""
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
    """One row per particle of ``links`` (``label`` = the id in ``labels_path``'s ``/labels``).

    Read particle by particle on bounding-box crops (``links``: ``z_min``..``z_max`` inclusive,
    ``y_min``/``x_min`` inclusive, ``y_max``/``x_max`` exclusive, as ``links.csv``), so memory is bounded by
    the largest particle's box. With ``refine`` the envelope is
    :func:`detachment.particles.refine_envelope` of the mask (as in ``particles.csv``), else the mask.
    Columns :data:`TABLE_COLUMNS`; ``solid_voxels`` counts the particle's solid, ``second_map_voxels`` the
    part of it where the map is finite; ``centroid_z_um`` is the mean z of those voxels (µm).
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
        dl, dp, dv, dm = fl["labels"], fp["phases"], fv[io.VOLUME_DATASET], fm[SECOND_MAP_DATASET]
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
    """The rows the correlations use: map voxels present, finite means, not on the border (``exclude_border``)."""
    t = table.copy()
    for c in TABLE_COLUMNS[:-1]:  # numeric even when read back from a header-only CSV
        t[c] = pd.to_numeric(t[c], errors="coerce")
    if exclude_border and "touches_border" in t:
        t = t[~t.touches_border.astype(bool)]
    return t[(t.second_map_voxels > 0) & np.isfinite(t.second_map_mean) & np.isfinite(t.electron_density_mean)]


def figure_slice(table: pd.DataFrame, voxel_z_um: float, depth: int) -> int:
    """Slice index for the figure: the median z of the particles' map voxels (the middle slice if none)."""
    z = table.centroid_z_um.to_numpy(float) / voxel_z_um if len(table) else np.array([])
    z = z[np.isfinite(z)]
    return int(np.clip(round(float(np.median(z))), 0, depth - 1)) if z.size else depth // 2


def read_slices(volume_path, map_path, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``z`` (y, x) of the grey volume and of the second map."""
    with h5py.File(volume_path, "r") as fv, h5py.File(map_path, "r") as fm:
        return (fv[io.VOLUME_DATASET][z].astype(np.float32, copy=False),
                fm[SECOND_MAP_DATASET][z].astype(np.float32, copy=False))


def correlations(table: pd.DataFrame, exclude_border: bool = True, n_boot: int = 2000, seed: int = 0
                 ) -> list[dict]:
    """Electron density vs second map of one sample, at two levels (one dict each).

    ``particle``: Pearson r between the per-particle means (``electron_density_mean`` vs
    ``second_map_mean``, one point per particle, unweighted), its two-sided p-value
    (:func:`scipy.stats.pearsonr`) and a percentile bootstrap 95 % CI over particles.
    ``voxel``: Pearson r over all the particles' map voxels pooled (the paper's Supp. Fig. 7d measure,
    there on projected pixels of one particle), computed exactly from the per-particle moments; its 95 %
    CI resamples whole particles (neighbouring voxels are not independent), and ``p_value`` is NaN because
    a voxel-count p-value would overstate the evidence. Particles touching the volume border are left out
    with ``exclude_border``. ``n`` = particles or voxels used.
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
