"""Per-particle table: size, shape, electron density, cracks, detachment and contacts (main text Fig. 4).

Inputs are a 3D particle label volume (envelopes: cracks inside a particle carry its label), the phase
map and the grey volume, axes (z, y, x), voxel size in µm (z, y, x; anisotropic voxels supported). A
pipeline particle's envelope is its segmentation mask snapped to the thresholded solid
(:func:`refine_envelope`). The columns' definitions (detachment, contact areas with the staircase
factor, sphericity, cracks, collector distance): docs/methods.md, "Per-particle table".

Main entry points: :func:`particle_table_from_files` (the workflow's, bounded memory),
:func:`particle_table`, :func:`refine_envelope`, :func:`contact_level_from_files`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import ndimage

from . import collector_surface
from .phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID
from .solid_partition import REACH_VOX
from .surface import crack_faces, surface_contacts

log = logging.getLogger(__name__)

STAIRCASE = 2.0 / 3.0
#: Extra margin (voxels) read beyond an envelope's reach before the solid is shared out, so that the
#: cores of the neighbours reaching into it are seen.
CORE_MARGIN_VOX = 4
#: How far (voxels, 6-connected) :func:`refine_envelope` grows an envelope beyond its mask, and how far beyond
#: the masks the solid is shared out (:data:`detachment.solid_partition.REACH_VOX`, one value). Three: a
#: slice-wise CNN mask is 1-2 voxels off the boundary at the training scale and up to 3-4 on particles rescaled
#: to it; solid of no instance left beside an envelope counts as a contact with a particle, so a mask that falls
#: short reads its particle attached where it is detached (chosen on the tuning cells, docs/results.md).
ENVELOPE_REACH_VOX = REACH_VOX
#: Context (voxels) read around a particle's bounding box: the envelope's reach beyond it, then the face
#: neighbour, a second CBD voxel and the voxel beyond it (a two-voxel layer read with ``partial_volume``,
#: :func:`detachment.surface.surface_contacts`), so that every face of the envelope is read whole.
CONTEXT_PAD_VOX = ENVELOPE_REACH_VOX + 3
COLUMNS = ["label", "volume_um3", "diameter_um", "surface_area_um2", "sphericity", "centroid_z_um", "centroid_y_um",
           "centroid_x_um", "distance_to_collector_um", "height_um", "electron_density_mean",
           "electron_density_std", "nmc_high_fraction", "crack_volume_fraction", "crack_surface_per_volume_per_um",
           "detachment", "detachment_std", "detachment_ambiguous", "surface_faces", "contact_void_um2",
           "contact_cbd_um2", "contact_al_um2",
           "contact_particle_um2", "touches_border"]


def collector_top(phases: np.ndarray) -> int:
    """First z above the collector: one past the highest slice whose voxels are mostly Al (0 if none).

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).

    Returns
    -------
    int
        z index (voxels) of the first slice above the collector.
    """
    frac = (phases == AL).mean(axis=(1, 2))
    idx = np.nonzero(frac > 0.5)[0]
    return int(idx.max()) + 1 if idx.size else 0


def surface_area_mc(mask: np.ndarray, voxel_size_um) -> float:
    """Envelope surface area in µm² by marching cubes on the (padded) boolean mask.

    The mask is smoothed by a 0.7-voxel Gaussian first (a mask thinner than that is meshed raw): on a
    raw binary mask marching cubes over-estimates a ball's area by 3-12 %.

    Parameters
    ----------
    mask : numpy.ndarray
        (z, y, x) bool envelope of one particle (a crop).
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm (the mesh's spacing).

    Returns
    -------
    float
        Surface area, µm²; NaN for fewer than 2 voxels.
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    if mask.sum() < 2:
        return float(np.nan)
    # marching cubes on a raw binary mask over-estimates a sphere's area by 3-12 %; a 0.7-voxel Gaussian
    # first brings it within 2 % for radii >= 6 voxels
    padded = ndimage.gaussian_filter(np.pad(mask.astype(np.float32), 3), 0.7)
    if padded.max() <= 0.5:  # thinner than the smoothing: use the raw mask
        padded = np.pad(mask.astype(np.float32), 3)
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(float(v) for v in voxel_size_um))
    return float(mesh_surface_area(verts, faces))


def gap_level(phase_attrs) -> float | None:
    """Grey level below which a voxel just outside a particle reads as electrolyte: the void/CBD midpoint.

    The midpoint of the void and CBD grey levels of the phase model (``/phases`` attrs ``order`` and
    ``means``), the fallback of the fitted contact level (:mod:`detachment.contact_level`).

    Parameters
    ----------
    phase_attrs : mapping
        Attributes of the ``/phases`` dataset (h5py attributes or a dict): ``order``, the phase names
        comma-separated, and ``means``, their grey levels in the same order.

    Returns
    -------
    float or None
        (void mean + CBD mean) / 2, grey levels; ``None`` when the phase file does not carry them
        (e.g. imported phases) or lacks void or CBD.
    """
    if "means" not in phase_attrs or "order" not in phase_attrs:
        return None
    names = [n.strip() for n in str(phase_attrs["order"]).split(",")]
    means = np.asarray(phase_attrs["means"], float)
    if "void" not in names or "cbd" not in names or len(means) != len(names):
        return None
    return float((means[names.index("void")] + means[names.index("cbd")]) / 2)


def particle_table(labels: np.ndarray, phases: np.ndarray, volume: np.ndarray, voxel_size_um,
                   border: dict | None = None, probe: int = 1, gap_level: float | None = None,
                   solid_level: float | None = None, contact_grey: np.ndarray | None = None,
                   partial_volume: bool = False) -> pd.DataFrame:
    """One row per label of ``labels`` (column ``label`` = the id in the volume), units in column names.

    Parameters
    ----------
    labels, phases, volume : numpy.ndarray
        (z, y, x) integer particle labels (0 = background; envelopes, cracks inside carry the label), uint8
        phase codes (:mod:`detachment.phases`) and grey levels (electron density).
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm.
    border : dict, optional
        Label to "touches the volume border"; given, the table gets ``touches_border`` (False if absent).
    probe, gap_level, solid_level, contact_grey, partial_volume : int, float, float, numpy.ndarray, bool
        How the contact class of a face is read (:func:`detachment.surface.surface_contacts`): at depth
        ``probe`` voxels, electrolyte also below ``gap_level`` (None: phases only), with the spill
        removed given the particle's solid grey level ``solid_level``, on the grey levels ``contact_grey``
        (e.g. sharpened, :func:`detachment.contact_level.sharpen`; default ``volume``), through a thin CBD
        layer (``partial_volume``; ``detachment_ambiguous`` is then the share of faces read as electrolyte
        so, else NaN).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS` (``touches_border`` only with ``border``), one row per label
        1..``labels.max()`` that has voxels; definitions: docs/methods.md, Per-particle table. Centroids
        are from the array's origin, ``surface_faces`` counts the faces, fractions are 0-1.
    """
    vs = np.asarray(voxel_size_um, float)
    labels = np.asarray(labels)
    n = int(labels.max())
    idx = np.arange(1, n + 1)
    if n == 0:
        return pd.DataFrame(columns=COLUMNS if border is not None else COLUMNS[:-1])
    contacts = surface_contacts(labels, phases, vs, n, probe, volume if contact_grey is None else contact_grey,
                                gap_level, solid_level, partial_volume)
    crack_area = crack_faces(labels, phases, vs, n_labels=n) * STAIRCASE
    shape, vox = _shape_columns(labels, phases, idx, vs)
    solid_columns = _solid_columns(labels, phases, volume, idx, vox)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            **shape, **solid_columns,
            "crack_surface_per_volume_per_um": crack_area[1:] / shape["volume_um3"],
            **_contact_columns(contacts, partial_volume),
        })
    if border is not None:
        table["touches_border"] = table.label.map(lambda label: bool(border.get(label, False)))
    return table[table.volume_um3 > 0].reset_index(drop=True)


def _shape_columns(labels: np.ndarray, phases: np.ndarray, idx: np.ndarray, vs: np.ndarray
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:data:`COLUMNS` from ``label`` to ``height_um`` for the labels ``idx`` of ``labels`` (µm, centroids
    from the array's origin, heights above the collector's top in ``phases``), and their voxel counts."""
    ones = np.ones(labels.shape, np.int64)
    vox = ndimage.sum_labels(ones, labels, idx)
    com = np.array(ndimage.center_of_mass(ones, labels, idx))
    top = collector_top(phases)
    area_mc, zmin = _mesh_areas_and_bottoms(labels, len(idx), vs)
    volume_um3 = vox * float(np.prod(vs))
    with np.errstate(invalid="ignore", divide="ignore"):
        sphericity = np.pi ** (1 / 3) * (6 * volume_um3) ** (2 / 3) / area_mc
    return {"label": idx, "volume_um3": volume_um3, "diameter_um": np.cbrt(6 * volume_um3 / np.pi),
            "surface_area_um2": area_mc, "sphericity": sphericity,
            "centroid_z_um": com[:, 0] * vs[0], "centroid_y_um": com[:, 1] * vs[1], "centroid_x_um": com[:, 2] * vs[2],
            "distance_to_collector_um": (zmin - top) * vs[0],
            "height_um": com[:, 0] * vs[0] - top * vs[0]}, vox


def _solid_columns(labels: np.ndarray, phases: np.ndarray, volume: np.ndarray, idx: np.ndarray,
                   vox: np.ndarray) -> dict[str, np.ndarray]:
    """Grey level over the NMC solid, NMC-high share of the solid and void share of the envelope (``vox``
    voxels) of labels ``idx``: the columns ``electron_density_mean`` .. ``crack_volume_fraction``."""
    solid = (phases == NMC_LOW) | (phases == NMC_HIGH)
    solid_vox = ndimage.sum_labels(solid, labels, idx)
    high_vox = ndimage.sum_labels(phases == NMC_HIGH, labels, idx)
    crack_vox = ndimage.sum_labels(phases == VOID, labels, idx)
    solid_labels = np.where(solid, labels, 0)
    dens_mean = ndimage.mean(volume, solid_labels, idx)
    dens_std = ndimage.standard_deviation(volume, solid_labels, idx)
    return {"electron_density_mean": dens_mean, "electron_density_std": dens_std,
            "nmc_high_fraction": np.where(solid_vox > 0, high_vox / np.maximum(solid_vox, 1), np.nan),
            "crack_volume_fraction": crack_vox / np.maximum(vox, 1)}


def _contact_columns(contacts, partial_volume: bool = False) -> dict[str, np.ndarray]:
    """The columns ``detachment`` .. ``contact_particle_um2`` of labels 1.. from their
    :class:`detachment.surface.SurfaceContacts` (areas times :data:`STAIRCASE`); ``detachment_ambiguous``
    the share of faces read as electrolyte through a thin CBD layer where ``partial_volume``, else NaN."""
    faces = contacts.n_faces[1:].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        through = np.where(faces > 0, contacts.n_partial_volume[1:] / np.maximum(faces, 1), np.nan)
    return {
        "detachment": contacts.detachment[1:],
        "detachment_std": contacts.detachment_std[1:],
        "detachment_ambiguous": through if partial_volume else np.full(len(faces), np.nan),
        "surface_faces": contacts.n_faces[1:].sum(1),
        "contact_void_um2": contacts.area[1:, 0] * STAIRCASE,
        "contact_cbd_um2": contacts.area[1:, 1] * STAIRCASE,
        "contact_al_um2": contacts.area[1:, 2] * STAIRCASE,
        "contact_particle_um2": contacts.area[1:, 3] * STAIRCASE,
    }


def _mesh_areas_and_bottoms(labels: np.ndarray, n: int, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes surface area (µm²) and lowest z slice of labels 1..n (NaN / -1 where absent)."""
    area_mc, zmin = [], []
    for lab, sl in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if sl is None:
            area_mc.append(np.nan)
            zmin.append(-1)
            continue
        area_mc.append(surface_area_mc(labels[sl] == lab, vs))
        zmin.append(sl[0].start)
    return np.asarray(area_mc), np.asarray(zmin)


def refine_envelope(mask: np.ndarray, others: np.ndarray, phases: np.ndarray, closing_vox: int = 2,
                    core_erosion_vox: int = 2, crack_span_vox: int = 2, crack_mouths: bool = True) -> np.ndarray:
    """The particle's envelope from the phase map, guided by its segmentation mask (the
    connected NMC solid of the instance, cracks enclosed by closing and hole filling).

    A slice-wise CNN mask is ±1-3 voxels off the particle's boundary, as wide as a thin electrolyte
    gap; the thresholded solid is not. The truth's envelopes hold their cracks, so the envelope must
    too, or crack walls read as detached surface. Envelope, within :data:`ENVELOPE_REACH_VOX` voxels of
    the mask and outside other particles:

    * the NMC solid within one voxel of the mask, the mask's core (eroded by ``core_erosion_vox``) and
      the mask's crack network (void connected through void to void in the core), closed by a ball of
      ``closing_vox`` and hole-filled; void the mask overshoots into (a gap) is not connected to the
      core and is cut off;
    * with ``crack_span_vox``, where the mask falls short: the solid one voxel further out, and void
      there with the particle's own solid (connected to the envelope) on both sides along z, y or x
      within ``crack_span_vox`` (a crack; a gap has it on one side only);
    * with ``crack_mouths``, also CBD-classified voxels so spanned that touch a pore already inside the
      envelope: where a crack thinner than ~2 voxels opens at the surface the blur lifts it into CBD's
      grey range, and without them its walls read as detached surface; and, last, the void voxels that
      share a face with the envelope's own void (its cracks), one voxel deep: where a crack opens at the
      surface the envelope otherwise stops one voxel short of its mouth, and the mouth's walls read as
      detached surface.

    Falls back to the mask when the region holds no solid.

    Parameters
    ----------
    mask : numpy.ndarray
        (z, y, x) bool segmentation mask of the instance (a crop).
    others : numpy.ndarray
        (z, y, x) bool voxels of other particles (never part of the envelope).
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes of the same crop (:mod:`detachment.phases`).
    closing_vox, core_erosion_vox, crack_span_vox : int, default 2
        Closing radius (of the 6-connected structure iterated), core erosion and crack half-span, in
        voxels; 0 switches the core or the spanned cracks off.
    crack_mouths : bool, default True
        Also take crack mouths: CBD-classified ones so spanned, and the void one voxel beyond the
        envelope's cracks (see above).

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool envelope.
    """
    ball = ndimage.generate_binary_structure(3, 1)
    region = ndimage.binary_dilation(mask, ball) & ~others
    nmc_phase = (phases == NMC_LOW) | (phases == NMC_HIGH)
    solid = region & nmc_phase
    if not solid.any():
        return mask
    env = _closed_core(mask, solid, phases, closing_vox, core_erosion_vox)
    reach = ndimage.binary_dilation(mask, ball, iterations=ENVELOPE_REACH_VOX) & ~others
    env &= reach
    if crack_span_vox:
        env = _add_spanned_cracks(env, reach, others, phases, nmc_phase, crack_span_vox, crack_mouths)
    return _with_crack_mouths(env, others, phases) if crack_mouths else env


def _with_crack_mouths(env, others, phases):
    """``env`` and the void one voxel beyond its own void (its cracks' mouths), not in ``others``."""
    void = phases == VOID
    return env | (ndimage.binary_dilation(env & void, ndimage.generate_binary_structure(3, 1)) & void & ~others)


def _closed_core(mask, solid, phases, closing_vox: int, core_erosion_vox: int) -> np.ndarray:
    """Solid, the mask's core and its crack network (void connected to void in the core), closed by a
    ball of ``closing_vox`` and hole-filled."""
    ball = ndimage.generate_binary_structure(3, 1)
    core = ndimage.binary_erosion(mask, ball, iterations=core_erosion_vox) if core_erosion_vox else \
        np.zeros_like(mask)
    pores = mask & (phases == VOID)
    comp, _ = ndimage.label(pores, ball)
    cracked = np.unique(comp[core & pores])
    cracks = np.isin(comp, cracked[cracked > 0])
    pad = closing_vox + 1
    env = np.pad(solid | core | cracks, pad)
    env = ndimage.binary_closing(env, ndimage.iterate_structure(ball, closing_vox))[pad:-pad, pad:-pad, pad:-pad]
    return ndimage.binary_fill_holes(env)


def _add_spanned_cracks(env, reach, others, phases, nmc_phase, crack_span_vox: int, crack_mouths: bool):
    """``env`` grown where the mask falls short: solid one voxel further out, and void (with
    ``crack_mouths`` also CBD touching a pore inside) with solid on both sides within ``crack_span_vox``.
    A crack's walls are the particle's own solid: solid not connected to the envelope (a neighbour the
    masks leave uncovered) is no wall, so the gap between two particles is not taken for a crack."""
    ball = ndimage.generate_binary_structure(3, 1)
    nmc = reach & nmc_phase
    env |= ndimage.binary_dilation(env, ball, mask=nmc)  # solid one voxel further out, within the reach
    pieces, _ = ndimage.label(nmc, ball)
    own = np.isin(pieces, np.unique(pieces[env & nmc])) & (pieces > 0)
    walls = np.pad(env | own, crack_span_vox + 1)
    spanned = np.zeros_like(walls)
    for axis in range(3):
        line = [1, 1, 1]
        line[axis] = 2 * crack_span_vox + 1
        spanned |= ndimage.binary_closing(walls, np.ones(line, bool))
    c = slice(crack_span_vox + 1, -crack_span_vox - 1)
    spanned = spanned[c, c, c] & reach
    add = spanned & (phases == VOID)
    if crack_mouths:
        pores_inside = (env | add) & ~nmc_phase
        add |= spanned & (phases == CBD) & ndimage.binary_dilation(pores_inside, ball)
    return ndimage.binary_fill_holes(env | add) & ~others


def _collector_top_from_file(dp, n_slices: int) -> int | collector_surface.CollectorPlane:
    """The tilted collector plane the phase dataset records (:func:`detachment.collector_surface.from_attrs`),
    else :func:`collector_top` of it, read slab by slab."""
    from . import io

    plane = collector_surface.from_attrs(dp.attrs, dp.shape[1:])
    if plane is not None:
        return plane
    top = 0
    for z0, z1 in io.slab_ranges(n_slices, 16):
        frac = (dp[z0:z1] == AL).mean(axis=(1, 2))
        hit = np.nonzero(frac > 0.5)[0]
        if hit.size:
            top = z0 + int(hit.max()) + 1
    return top


def _crop_labels(dl, dp, row, shape, pad: int, partition: str, sampling):
    """Labels and phases of the crop of one ``links`` row (its box plus ``pad``): the masks as read, or
    with ``partition == "watershed"`` the NMC solid shared out at the necks
    (:func:`detachment.solid_partition.partition_solid`, on the box plus the envelope's reach plus
    :data:`CORE_MARGIN_VOX`, wide enough for the neighbours' cores, or on the crop where that is wider)."""
    from . import io
    from .solid_partition import partition_solid

    sl = io.particle_crop(row, shape, pad)
    if partition == "masks":
        return sl, dl[sl], dp[sl]
    if partition != "watershed":
        raise ValueError(f"science.envelope_partition: unknown {partition!r}; expected watershed or masks")
    wide = io.particle_crop(row, shape, max(pad, ENVELOPE_REACH_VOX + CORE_MARGIN_VOX))
    inner = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(sl, wide))
    lab, ph = dl[wide], dp[wide]
    return sl, partition_solid(lab, ph, sampling)[inner], ph[inner]


@contextmanager
def _open_datasets(labels_path, phases_path, volume_path):
    """The ``/labels``, ``/phases`` and volume datasets of three HDF5 files, open for reading; the volume's grey
    levels as the phases were read from them (less the shading field where the map holds one,
    :func:`detachment.shading.flat_view`)."""
    import h5py

    from . import io
    from .shading import flat_view

    with h5py.File(labels_path, "r") as fl, h5py.File(phases_path, "r") as fp, h5py.File(volume_path, "r") as fv:
        yield fl["labels"], fp["phases"], flat_view(fv[io.VOLUME_DATASET], fp)


def _envelope_crops(dl, dp, dv, links: pd.DataFrame, shape, pad: int, refine: bool, progress: bool, desc: str,
                    partition: str = "masks", sampling=(1.0, 1.0, 1.0), sharpen: float = 0.0,
                    spill_sigma: float = 0.0, background: float | None = None):
    """Per particle row of ``links``: (row, crop origin (z, y, x), envelope, other particles, phases, grey,
    the grey levels the contacts are read on).

    Crops are the particle's bounding box plus ``pad`` voxels of context, read from the open datasets;
    ``partition`` as in :func:`_crop_labels`, with ``refine`` only (unrefined masks are taken as exact); the
    reading's grey levels are sharpened with weight ``sharpen`` (:func:`_grey_crops`) and, with
    ``spill_sigma`` > 0 and a ``background`` grey level, less the particles' spill
    (:func:`particle_spill` of the envelope and the other particles, sharpened alike); ``grey`` itself
    when neither applies."""
    from tqdm import tqdm

    from .contact_level import map_z_factor
    from .contact_level import sharpen as sharpened

    z_factor = map_z_factor(dp.attrs)  # the point spread's anisotropy the map was refined with
    for row in tqdm(list(links.itertuples()), desc=desc, unit="particle", disable=not progress):
        sl, lab, ph = _crop_labels(dl, dp, row, shape, pad, partition if refine else "masks", sampling)
        others = (lab > 0) & (lab != row.label)
        env = refine_envelope(lab == row.label, others, ph) if refine else lab == row.label
        grey, read = _grey_crops(dv, sl, shape, sharpen, z_factor)
        if spill_sigma > 0 and background is not None:
            owners = np.where(env, 1, np.where(others, 2, 0)).astype(np.uint32)
            spill = particle_spill(owners, ph, grey, spill_sigma, background, z_factor)
            read = read - sharpened(spill, sharpen, z_factor)
        yield row, [s.start for s in sl], env, others, ph, grey, read


def particle_spill(labels: np.ndarray, phases: np.ndarray, grey: np.ndarray, sigma: float,
                   background: float, z_factor: float = 1.0) -> np.ndarray:
    """Grey level the particles' solid puts into every voxel through a Gaussian point-spread function.

    ``G_σ * Σ_i (solid_i - background) · [labels == i]``, with ``solid_i`` the particle's interior grey
    level (:func:`solid_grey`; a particle without interior NMC voxels takes the median of the others').
    Subtracted from the grey levels it leaves, beside a particle, what the background there (electrolyte,
    CBD) gives on its own: the bright particle's spill is what lifts a thin gap toward the CBD level. A
    forward model, unlike a sharpening it amplifies no noise, so it holds at any σ the blur check measures.
    The array's border is repeated (``mode="nearest"``): a particle cut by a crop's face goes on beyond it.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer particle labels, 0 = background.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    grey : numpy.ndarray
        (z, y, x) grey levels.
    sigma : float
        Point-spread σ within the slices, voxels.
    background : float
        Grey level the spill is counted from (the void/CBD midpoint: it leaves both on their own side).
    z_factor : float, default 1
        σ along z over ``sigma``.

    Returns
    -------
    numpy.ndarray
        (z, y, x) float64 grey levels; zeros when no particle has interior NMC voxels.
    """
    excess = np.zeros(labels.shape, np.float64)
    boxes = ndimage.find_objects(labels)
    solids = {}
    for i, box in enumerate(boxes, 1):
        if box is not None:
            level = solid_grey(labels[box] == i, phases[box], grey[box])
            if level is not None:
                solids[i] = level
    if not solids:
        return excess
    fallback = float(np.median(list(solids.values())))
    for i, box in enumerate(boxes, 1):
        if box is not None:
            mine = labels[box] == i
            excess[box][mine] = solids.get(i, fallback) - background
    return ndimage.gaussian_filter(excess, sigma if z_factor == 1 else (sigma * z_factor, sigma, sigma),
                                   mode="nearest")


def _grey_crops(dv, sl, shape, weight: float, z_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The crop ``sl`` of the dataset ``dv`` (float32) and its :func:`detachment.contact_level.sharpen` with
    ``weight`` and ``z_factor`` (the crop itself for weight 0), read once with one voxel of context where the
    volume has it, so every voxel of the crop has the value a sharpening of the whole volume gives it."""
    from .contact_level import sharpen

    if weight <= 0:
        grey = dv[sl].astype(np.float32)
        return grey, grey
    wide = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, shape))
    inner = tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(sl, wide))
    block = dv[wide].astype(np.float32)
    return block[inner], sharpen(block, weight, z_factor)[inner]


def contact_level_from_files(labels_path, phases_path, volume_path, links: pd.DataFrame, pad: int = CONTEXT_PAD_VOX,
                             progress: bool = True, refine: bool = True, max_spread: float | None = 0.1,
                             partition: str = "watershed", sharpen: float = 0.0, spill_sigma: float = 0.0,
                             on_map: bool = False):
    """The sample's contact level, fitted to the face neighbours of every particle in ``links``.

    :func:`detachment.contact_level.fit_contact_level` over the grey levels of the background face
    neighbours (envelopes as :func:`particle_table_from_files` builds them), read crop by crop; fallback
    :func:`gap_level` of the phase file (NaN without grey levels there: contacts read from the phases only).

    Parameters
    ----------
    labels_path, phases_path, volume_path : str or os.PathLike
        HDF5 files of the 3D particle labels (``/labels``, uint32, 0 = background), the phase map
        (``/phases``, uint8; attrs ``order`` and ``means`` for the fallback) and the volume (``/volume``).
    links : pandas.DataFrame
        One row per particle (``links.csv``): ``label`` and its bounding box ``z_min``, ``z_max``,
        ``y_min``, ``y_max``, ``x_min``, ``x_max`` (voxels, see :func:`detachment.io.particle_crop`).
    pad, progress : int, bool, default :data:`CONTEXT_PAD_VOX`, True
        Voxels of context around each bounding box (:func:`particle_table_from_files`); show a progress bar.
    refine, partition : bool, {"watershed", "masks"}, default True, "watershed"
        Envelope = :func:`refine_envelope` of the mask, touching masks first re-split at the necks of
        the solid (:func:`detachment.solid_partition.partition_solid`) or not; else the mask itself.
    max_spread : float or None, default 0.1
        Largest level vs deconvolved disagreement keeping the level's reading (``choose_reading``).
    sharpen, spill_sigma : float, default 0, 0
        Weight (voxels²) of the Laplacian subtracted from the grey levels the level is fitted on
        (:func:`detachment.contact_level.sharpen`) and point-spread σ (voxels) through which the
        particles' spill is subtracted from them (:func:`particle_spill`, counted from the void/CBD
        midpoint; 0, or no midpoint in the phase file: not); the deconvolved reading uses them as they are.
    on_map : bool, default False
        Read the contacts on the phase map's codes (:func:`detachment.contact_level.read_on_map`).

    Returns
    -------
    fit : detachment.contact_level.ContactLevel
        The level, its components, the share of faces they cannot place, the reading and its check, the
        open electrolyte's spread, the share of faces read as electrolyte through a thin CBD layer
        (:func:`_face_values`).
    values : numpy.ndarray
        (n_faces,) float64 grey levels the fit was made on (sharpened, less the spill), one per face.
    midpoint : float or None
        The void/CBD midpoint of the phase file (``None`` without grey levels there).
    """
    from . import contact_level as cl
    from . import io

    shape, voxel = io.read_volume_info(volume_path)
    with _open_datasets(labels_path, phases_path, volume_path) as (dl, dp, dv):
        midpoint = gap_level(dp.attrs)
        spill_sigma = spill_sigma if midpoint is not None else 0.0
        crops = _envelope_crops(dl, dp, dv, links, shape, pad, refine, progress, "contact level", partition, voxel,
                                sharpen, spill_sigma, midpoint)
        values, deconvolved, codes, through = _face_values(crops)
    base = cl.fit_contact_level(values, np.nan if midpoint is None else midpoint)
    fit = replace(base, sharpen=float(sharpen), spill_sigma=float(spill_sigma), gap_share_through_layer=through,
                  ambiguous_faces=cl.ambiguous_face_share(values, base),
                  electrolyte_sigma=cl.electrolyte_spread(volume_path, phases_path, sharpen))
    fit = cl.choose_reading(fit, values, deconvolved, midpoint, None if on_map else max_spread)
    return cl.read_on_map(fit, values, codes, switch=on_map), values, midpoint


def _face_values(crops) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Over the crops of :func:`_envelope_crops`: each background face neighbour's grey level as the
    contacts are read (corrected), deconvolved (outside + inside − the solid, as reconstructed), and its
    phase code (uint8; the same faces as the first); and the share of those faces that the map's codes read
    as electrolyte only through a thin CBD layer (:func:`detachment.surface.surface_contacts`
    ``partial_volume``; NaN without faces)."""
    from .contact_level import face_neighbour_pairs

    values, deconvolved, codes, through = [], [], [], 0
    for _, _, env, others, ph, grey, read in crops:
        outside, inside = face_neighbour_pairs(env, others, ph, grey)
        values.append(outside if read is grey else face_neighbour_pairs(env, others, ph, read)[0])
        codes.append(face_neighbour_pairs(env, others, ph, ph)[0].astype(np.uint8))
        solid = solid_grey(env, ph, grey)
        if solid is not None:
            deconvolved.append(outside + inside - solid)
        crop = np.where(env, 1, np.where(others, 2, 0)).astype(np.uint32)
        through += int(surface_contacts(crop, ph, n_labels=2, partial_volume=True).n_partial_volume[1])
    n = sum(len(c) for c in codes)
    return (np.concatenate(values) if values else np.zeros(0),
            np.concatenate(deconvolved) if deconvolved else np.zeros(0),
            np.concatenate(codes) if codes else np.zeros(0, np.uint8), through / n if n else float("nan"))


def particle_table_from_files(labels_path, phases_path, volume_path, links: pd.DataFrame, pad: int = CONTEXT_PAD_VOX,
                              progress: bool = True, probe: int = 1, refine: bool = True,
                              gap_from_intensity: bool = True, contact_level: float | None = None,
                              deconvolve: bool = False, partition: str = "watershed",
                              sharpen: float = 0.0, spill_sigma: float = 0.0, ambiguity=None,
                              partial_volume: bool = False) -> pd.DataFrame:
    """:func:`particle_table` particle by particle on bounding-box crops read from the HDF5 files.

    Parameters
    ----------
    labels_path, phases_path, volume_path : str or os.PathLike
        HDF5 files: 3D particle labels (``/labels``, uint32, 0 = background), phase map (``/phases``,
        uint8; attrs ``order`` and ``means``) and the volume (``/volume`` and its voxel size).
    links : pandas.DataFrame
        One row per particle (``links.csv``): ``label``, its bounding box ``z_min``, ``z_max``, ``y_min``,
        ``y_max``, ``x_min``, ``x_max`` (voxels) and optionally ``touches_border``.
    pad, progress, refine, partition : int, bool, bool, {"watershed", "masks"}
        Voxels of context around each bounding box (other particles there are particle contact; memory is
        bounded by the largest box; with less than :data:`CONTEXT_PAD_VOX`, an envelope face at the crop's
        edge, or the far side of a layer beside it, is not read); a progress bar; envelopes as
        :func:`contact_level_from_files` builds them.
    probe, gap_from_intensity, contact_level, deconvolve, sharpen, spill_sigma : int, bool, float, bool, float, float
        How a face is read (:func:`detachment.surface.surface_contacts`): at depth ``probe`` voxels;
        electrolyte also where darker than ``contact_level`` (``contact_level.csv``; None or NaN: the void/CBD
        midpoint, :func:`gap_level`) if ``gap_from_intensity``; with ``deconvolve``, as outside + inside − the
        solid's grey level (:func:`solid_grey`); else on the grey levels as :func:`contact_level_from_files`
        fitted on them, less the spill (σ ``spill_sigma``), sharpened (``sharpen``; the solid's columns: as is).
    ambiguity, partial_volume : detachment.contact_level.ContactLevel, bool, optional
        The sample's gap / CBD mixture for ``detachment_ambiguous`` (:func:`_ambiguous_share`; None: NaN);
        read through a thin CBD layer (:func:`particle_table`), the faces read as electrolyte so added to it.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS` (:func:`particle_table`), a row per particle of ``links`` whose envelope has
        voxels; ``label`` as in ``links``, centroids in the volume's coordinates, collector distance and height
        as :func:`_in_volume_frame` reads them, ``touches_border`` from ``links`` (else False).
    """
    from . import io

    if deconvolve and (sharpen > 0 or spill_sigma > 0):
        raise ValueError("sharpen and spill_sigma must be 0 with deconvolve (it reads the grey levels as they are)")
    shape, voxel = io.read_volume_info(volume_path)
    vs = np.asarray(voxel, float)
    rows = []
    with _open_datasets(labels_path, phases_path, volume_path) as (dl, dp, dv):
        level = _contact_gap_level(gap_from_intensity, contact_level, dp.attrs, phases_path)
        top = _collector_top_from_file(dp, shape[0])
        crops = _envelope_crops(dl, dp, dv, links, shape, pad, refine, progress, "particles", partition, vs, sharpen,
                                spill_sigma, gap_level(dp.attrs))
        for row, lo, env, others, ph, grey, read in crops:
            t = _crop_row(env, others, ph, grey, read, vs, ambiguity, probe=probe, gap_level=level,
                          solid_level=solid_grey(env, ph, grey) if deconvolve else None, partial_volume=partial_volume)
            if t is not None:
                rows.append(_in_volume_frame(t, row, lo, vs, top, env))
        unresolved = phases_not_resolved(dp.attrs)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    if "nmc_high" in unresolved:  # one NMC class: a high-density share of 0 would be a guess, not a measurement
        out["nmc_high_fraction"] = np.nan
    return out


def _crop_row(env, others, ph, grey, read, vs, ambiguity, **reading) -> pd.DataFrame | None:
    """:func:`particle_table` row of the particle ``env`` in its crop (it becomes label 1, the ``others``
    label 2), contacts read on ``read`` as ``reading`` says, with its ``detachment_ambiguous`` (the faces
    the fit leaves undecided plus those read as electrolyte through a thin CBD layer, at most 1); None where the
    envelope is empty."""
    crop = np.where(env, 1, np.where(others, 2, 0)).astype(np.uint32)
    t = particle_table(crop, ph, grey, vs, contact_grey=read, **reading)
    if not (t.label == 1).any():
        return None
    t = t[t.label == 1].copy()
    undecided = _ambiguous_share(ambiguity, env, others, ph, read, t.surface_faces)
    through = float(t.detachment_ambiguous.iloc[0])  # faces read through a thin layer; NaN: not read so
    if np.isfinite(through):
        undecided = min(1.0, through + (undecided if np.isfinite(undecided) else 0.0))
    t["detachment_ambiguous"] = undecided
    return t


def _ambiguous_share(fit, env, others, ph, read, surface_faces: pd.Series) -> float:
    """Share of a particle's ``surface_faces`` whose background face neighbour's grey level (``read``, as the
    mixture was fitted on it) ``fit`` leaves undecided (:func:`detachment.contact_level.ambiguous_faces`);
    NaN without gap and CBD components (:attr:`detachment.contact_level.ContactLevel.has_components`)."""
    from .contact_level import ambiguous_faces, face_neighbour_pairs

    n = float(surface_faces.iloc[0])
    if fit is None or not fit.has_components or n <= 0:
        return float("nan")
    return float(ambiguous_faces(face_neighbour_pairs(env, others, ph, read)[0], fit).sum()) / n


def solid_grey(envelope: np.ndarray, phases: np.ndarray, volume: np.ndarray) -> float | None:
    """Median grey level of a particle's interior NMC voxels (envelope eroded by two voxels, else one).

    Two voxels keep the blurred rim out of the median (its spill is below 5 % at 2.5 voxels from the
    edge for a point-spread σ up to 1.5 voxels).

    Parameters
    ----------
    envelope : numpy.ndarray
        (z, y, x) bool envelope of the particle.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes.
    volume : numpy.ndarray
        (z, y, x) grey levels.

    Returns
    -------
    float or None
        Grey level; None when the particle has no interior NMC voxel.
    """
    nmc = (phases == NMC_LOW) | (phases == NMC_HIGH)
    for depth in (2, 1):
        inside = ndimage.binary_erosion(envelope, iterations=depth) & nmc
        if inside.any():
            return float(np.median(volume[inside]))
    return None


def phases_not_resolved(phase_attrs) -> set[str]:
    """Phases a phase map's model did not separate (``/phases`` attribute ``unresolved``; empty if absent).

    Parameters
    ----------
    phase_attrs : mapping
        The attributes of ``phases.h5`` ``/phases``.

    Returns
    -------
    set of str
        Phase names, e.g. ``{"nmc_high"}`` when NMC low and high density form one class.
    """
    value = phase_attrs.get("unresolved", "")
    value = value.decode() if isinstance(value, bytes) else str(value)
    return {v.strip() for v in value.split(",") if v.strip()}


def _contact_gap_level(gap_from_intensity: bool, contact_level: float | None, phase_attrs,
                       phases_path) -> float | None:
    """The grey level the contacts read electrolyte below: ``contact_level`` when finite, else the phase
    file's void/CBD midpoint; ``None`` without ``gap_from_intensity`` or those grey levels (logged)."""
    level = None
    if gap_from_intensity:
        level = contact_level if contact_level is not None and np.isfinite(contact_level) else gap_level(phase_attrs)
        if level is None:
            log.warning("%s: no phase grey levels (attrs order, means); contacts read from phases only",
                        phases_path)
    return level


def _in_volume_frame(t: pd.DataFrame, row, lo, vs: np.ndarray, top: int | collector_surface.CollectorPlane,
                     env: np.ndarray) -> pd.DataFrame:
    """A crop's one-row table moved into the volume: ``row``'s label and border flag, centroids shifted by
    the crop origin ``lo``, collector distance (the envelope ``env``'s lowest voxel) and height (the
    centroid's) above the volume's collector top ``top``: a slice, or a tilted plane read under each (for
    the distance rounded to its column's first slice above it)."""
    t["label"] = row.label
    t["centroid_z_um"] += lo[0] * vs[0]
    t["centroid_y_um"] += lo[1] * vs[1]
    t["centroid_x_um"] += lo[2] * vs[2]
    z, y, x = np.nonzero(env)
    if isinstance(top, collector_surface.CollectorPlane):
        # the column's first slice above the collector, as the flat slab's top is a whole slice
        lowest = np.min(z + lo[0] - np.floor(top.height(y + lo[1], x + lo[2]) + 0.5))
        under = top.height(t["centroid_y_um"] / vs[1], t["centroid_x_um"] / vs[2])
    else:
        lowest, under = z.min() + lo[0] - top, top
    t["distance_to_collector_um"] = lowest * vs[0]
    t["height_um"] = t["centroid_z_um"] - under * vs[0]
    t["touches_border"] = bool(getattr(row, "touches_border", False))
    return t
