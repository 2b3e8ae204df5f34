"""Per-particle surface contacts counted on voxel faces.

A particle's surface is the set of voxel faces between one of its voxels (cracks inside the envelope
included) and a 6-neighbour with another label. Each face, weighted by its physical area, is classified
by what lies across it: void (electrolyte), CBD, Al or another particle; faces on the volume border are
not counted. Definition and its bias: docs/methods.md, "Detachment"; :mod:`detachment.truth` measures
the phantoms' truth on a mesh instead.

Main entry points: :func:`surface_contacts`, :class:`SurfaceContacts`, :func:`crack_faces`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID

CONTACT_CLASSES = ("void", "cbd", "al", "particle")
#: Half-width, voxels, of the cube around a face's particle voxel whose faces decide a thin CBD layer
#: (:func:`surface_contacts` ``partial_volume``): a detached patch or a coat is wider than a few voxels.
LAYER_VOTE_RADIUS = 2


@dataclass
class SurfaceContacts:
    """Face areas in µm² per particle label (index = label; row 0 unused).

    ``area[:, k]`` is the area facing ``CONTACT_CLASSES[k]``; ``n_faces`` counts faces.

    Attributes
    ----------
    area : numpy.ndarray
        (n_labels + 1, 4) float voxel-face areas, µm², facing void, CBD, Al and another particle
        (:data:`CONTACT_CLASSES`); raw face areas, without the staircase factor
        (:data:`detachment.particles.STAIRCASE`).
    n_faces : numpy.ndarray
        (n_labels + 1, 4) int64 number of faces in each class.
    n_partial_volume : numpy.ndarray
        (n_labels + 1,) int64 faces read as electrolyte through a CBD layer one or two voxels thick
        (:func:`surface_contacts` ``partial_volume``; zeros without it); counted in ``n_faces[:, 0]`` too.
    """

    area: np.ndarray
    n_faces: np.ndarray
    n_partial_volume: np.ndarray | None = None

    @property
    def detachment(self) -> np.ndarray:
        """(n_labels + 1,) fraction (0-1) of the counted surface area facing void (electrolyte).

        NaN where a label has no counted surface (row 0, absent labels).
        """
        total = self.area.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.area[:, 0] / total, np.nan)

    @property
    def detachment_std(self) -> np.ndarray:
        """(n_labels + 1,) binomial standard error of :attr:`detachment` from the number of faces.

        sqrt(d (1 - d) / n) with n the label's counted faces; NaN where it has none.
        """
        d = self.detachment
        n = self.n_faces.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.sqrt(d * (1 - d) / np.maximum(n, 1)), np.nan)


def _pairs(shape, axis):
    """Slices selecting each voxel and its +1 neighbour along ``axis``."""
    a = [slice(None)] * 3
    b = [slice(None)] * 3
    a[axis] = slice(0, shape[axis] - 1)
    b[axis] = slice(1, shape[axis])
    return tuple(a), tuple(b)


def face_areas(voxel_size_um) -> tuple[float, float, float]:
    """Area in µm² of a voxel face normal to z, y and x.

    Parameters
    ----------
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm.

    Returns
    -------
    tuple of float
        Face areas normal to z, y and x, µm².
    """
    vz, vy, vx = voxel_size_um
    return vy * vx, vz * vx, vz * vy


_CLASS_OF_PHASE = np.full(256, -1, np.int64)
_CLASS_OF_PHASE[[VOID, CBD, AL, NMC_LOW, NMC_HIGH]] = [0, 1, 2, 3, 3]


def _face_classes(labels, phases, intensity, gap_level, axis: int, step: int, faces: tuple, probe: int,
                  solid_level: float | None = None, partial_volume: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Owner label, contact class index (into :data:`CONTACT_CLASSES`, -1 = none) of each face, and the
    voxels of CBD between it and electrolyte along the face normal (int8: 1 or 2, 0 where the neighbour is
    not such a layer; ``partial_volume`` only, :func:`_layer_depth`). A one-voxel layer's face is read as
    electrolyte, a two-voxel layer's as CBD, until :func:`_decide_layers` reads them by the faces around.

    ``faces`` = (own, other, own_sl, oth_sl, m): the faces between the particle voxels ``own[m]`` and their
    neighbours ``other[m]`` one ``step`` along ``axis`` (``own_sl``, ``oth_sl`` select them in the volume).
    """
    own, other, own_sl, oth_sl, m = faces
    owner = own[m].astype(np.int64)
    oth = other[m]
    phase_near = phases[oth_sl][m]
    reads_gap = intensity is not None and gap_level is not None
    read = intensity[oth_sl][m] if reads_gap else None
    if reads_gap and solid_level is not None:
        # a symmetric point-spread function moves as much grey level across a plane edge one way as the
        # other: outside + inside = background + solid, whatever the blur
        read = read + intensity[own_sl][m] - solid_level
    dark = read < gap_level if reads_gap else np.zeros(len(oth), bool)
    if probe > 1:
        size = labels.shape[axis]
        far = np.clip(np.arange(size) + step * (probe - 1), 0, size - 1)
        lab_far = np.take(labels, far, axis=axis)[oth_sl][m]
        phase_far = np.take(phases, far, axis=axis)[oth_sl][m]
        back_inside = lab_far == owner
        lab_far = np.where(back_inside, 0, lab_far)
        if reads_gap:
            far_dark = np.take(intensity, far, axis=axis)[oth_sl][m] < gap_level
            dark |= far_dark & ~back_inside & (lab_far == 0)
        dark &= oth == 0
        near_void = (phase_near == VOID) | dark
        gap = near_void | (phase_far == VOID)
        phase_near = np.where(back_inside, np.where(near_void, VOID, phase_near), np.where(gap, VOID, phase_far))
        oth = np.where(oth > 0, oth, np.where(near_void, 0, lab_far))
    elif reads_gap:
        bg = (oth == 0) & ((phase_near == VOID) | (phase_near == CBD))
        phase_near = np.where(bg, np.where(dark, VOID, CBD), phase_near)
    cls = np.where(oth > 0, 3, _CLASS_OF_PHASE[phase_near])
    layer = np.zeros(len(cls), np.int8)
    if partial_volume and probe == 1:
        layer = np.where(cls == 1, _layer_depth(labels, phases, intensity if reads_gap else None, gap_level, axis,
                                                step, oth_sl, m), 0).astype(np.int8)
        cls = np.where(layer == 1, 0, cls)
    return owner, cls, layer


def _layer_depth(labels, phases, intensity, gap_level, axis: int, step: int, oth_sl, m) -> np.ndarray:
    """For each face neighbour, taken as CBD: 1 where the voxel one ``step`` beyond it is background
    electrolyte, 2 where that voxel is background CBD and the next one electrolyte, else 0 (int8).
    Background electrolyte: unlabelled and void in ``phases``, or, given ``intensity``, void or CBD there and
    darker than ``gap_level`` (the neighbour's own reading, without the spill correction, which is the
    particle's and has faded two voxels out); background CBD: unlabelled and CBD, or, given ``intensity``,
    void or CBD and not darker. Clipped at the volume border (a voxel read again, not electrolyte there)."""
    size = labels.shape[axis]
    electrolyte, cbd = [], []
    for d in (1, 2):
        far = np.clip(np.arange(size) + d * step, 0, size - 1)
        free = np.take(labels, far, axis=axis)[oth_sl][m] == 0
        code = np.take(phases, far, axis=axis)[oth_sl][m]
        if intensity is None:
            electrolyte.append(free & (code == VOID))
            cbd.append(free & (code == CBD))
        else:
            dark = np.take(intensity, far, axis=axis)[oth_sl][m] < gap_level
            background = free & ((code == VOID) | (code == CBD))
            electrolyte.append(background & dark)
            cbd.append(background & ~dark)
    return np.where(electrolyte[0], 1, np.where(cbd[0] & electrolyte[1], 2, 0)).astype(np.int8)


def surface_contacts(labels: np.ndarray, phases: np.ndarray, voxel_size_um=(1.0, 1.0, 1.0),
                     n_labels: int | None = None, probe: int = 1, intensity: np.ndarray | None = None,
                     gap_level: float | None = None, solid_level: float | None = None,
                     partial_volume: bool = False) -> SurfaceContacts:
    """Contact areas of every labelled particle with void, CBD, Al and other particles.

    Parameters
    ----------
    labels, phases : numpy.ndarray
        (z, y, x) integer particle labels (0 = background; a particle's envelope is its labelled voxels) and
        uint8 phase codes (:mod:`detachment.phases`).
    voxel_size_um : sequence of float, default (1.0, 1.0, 1.0)
        (z, y, x) voxel edge lengths, µm.
    n_labels : int, optional
        Highest label counted (default: ``labels.max()``); the result has ``n_labels + 1`` rows.
    probe : int, default 1
        Voxels outward along the face normal the class is read at; 1 = the face neighbour (exact on a
        noise-free map: the phantoms' ``detachment_voxel_faces``). With ``probe`` > 1 the face is electrolyte
        where the neighbour or the voxel ``probe`` out is void, else the far voxel's class (the neighbour's
        where that is back in the same particle); another particle at either depth is particle contact;
        clipped at the volume border.
    intensity, gap_level : numpy.ndarray, float, optional
        (z, y, x) grey levels on the same grid, and a grey level: with ``probe`` 1, a face whose neighbour is
        electrolyte or CBD in ``phases`` is electrolyte where the neighbour's grey level is below it, else
        CBD, whatever its code; with ``probe`` > 1, electrolyte also where the darker of the voxels read (the
        neighbour and the one ``probe`` out) is below it. The workflow's level:
        :mod:`detachment.contact_level`, fallback :func:`detachment.particles.gap_level`.
    solid_level : float, optional
        Grey level of the particles' solid: given (with ``intensity``, ``gap_level``), the background across a
        face reads as outside + inside − it (a symmetric point spread's spill removed), against ``gap_level``.
    partial_volume : bool, default False
        With ``probe`` 1, read a face whose neighbour is a CBD layer one or two voxels thick with background
        electrolyte beyond it along the face normal (:func:`_layer_depth`) as the particle's faces around it
        read (:func:`_decide_layers`; those read as electrolyte: :attr:`SurfaceContacts.n_partial_volume`):
        a voxel part particle and part electrolyte reads in CBD's range, and so does a thin coat. The
        workflow: :attr:`detachment.contact_level.ContactLevel.partial_volume`.

    Returns
    -------
    SurfaceContacts
        Face areas (µm²) and face counts per label and contact class; a background voxel in an NMC phase
        (solid of no instance) counts as particle contact. See docs/methods.md, Detachment.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if n_labels is None else n_labels + 1
    out = SurfaceContacts(np.zeros((n, len(CONTACT_CLASSES))), np.zeros((n, len(CONTACT_CLASSES)), np.int64),
                          np.zeros(n, np.int64))
    layered = partial_volume and probe == 1
    held = []  # with a layer to decide: every face, until the faces around each layer face are known
    for faces, own_sl, m, a_face in _faces(labels, phases, voxel_size_um, intensity, gap_level, probe, solid_level,
                                           partial_volume):
        if layered:
            held.append((*faces, _voxel_index(labels.shape, own_sl, m), a_face))
        else:
            _add_faces(out, *faces, a_face)
    if layered:
        _decide_layers(labels, held)
        for owner, cls, layer, _, a_face in held:
            _add_faces(out, owner, cls, layer, a_face)
    return out


def _faces(labels, phases, voxel_size_um, intensity, gap_level, probe, solid_level, partial_volume):
    """For each axis and direction along it with particle faces: their ``(owner, class, layer)``
    (:func:`_face_classes`, arguments as :func:`surface_contacts`), the particle side's slice and mask of
    the face pairs (:func:`_pairs`) and the face area, µm²."""
    for axis, a_face in enumerate(face_areas(voxel_size_um)):
        sa, sb = _pairs(labels.shape, axis)
        la, lb = labels[sa], labels[sb]
        differ = la != lb
        for own, other, own_sl, oth_sl, step in ((la, lb, sa, sb, 1), (lb, la, sb, sa, -1)):
            m = differ & (own > 0)
            if m.any():
                faces = _face_classes(labels, phases, intensity, gap_level, axis, step,
                                      (own, other, own_sl, oth_sl, m), probe, solid_level, partial_volume)
                yield faces, own_sl, m, a_face


def _voxel_index(shape, own_sl, m) -> np.ndarray:
    """Flat index into an array of ``shape`` of the particle voxel of each face ``m`` (a mask over ``own_sl``)."""
    pos = np.nonzero(m)
    return np.ravel_multi_index(tuple(p + (s.start or 0) for p, s in zip(pos, own_sl)), shape)


def layer_is_gap(void_faces, cbd_faces, depth):
    """Whether a face whose neighbour is a CBD layer ``depth`` voxels thick (1 or 2) with electrolyte beyond
    it is read as electrolyte, given the particle's faces around it read as electrolyte and as CBD: where
    electrolyte outnumbers CBD there; on a tie (none around included) a one-voxel layer reads as
    electrolyte (partial volume, as the layer alone suggests) and a two-voxel layer as CBD."""
    void_faces, cbd_faces = np.asarray(void_faces), np.asarray(cbd_faces)
    return (void_faces > cbd_faces) | ((void_faces == cbd_faces) & (np.asarray(depth) == 1))


def _decide_layers(labels: np.ndarray, held: list, radius: int = LAYER_VOTE_RADIUS) -> None:
    """Decide, in place, each held face whose neighbour is a CBD layer one or two voxels thick with
    electrolyte beyond (``layer``, :func:`_face_classes`) as electrolyte or CBD (:func:`layer_is_gap`) by the
    particle's other faces whose particle voxel lies within the cube of half-width ``radius`` around its
    own: those read as electrolyte and those read as CBD.

    Where a surface cuts voxels, a voxel part particle and part electrolyte has a grey level in CBD's
    range, and so has one part electrolyte and part CBD: a gap at the particle's rim can read as a CBD
    layer one or two voxels thick, and so can a coat one or two voxels thick. One column of voxels cannot
    tell them apart; the patch around it can, as a detached patch or a coat spans many faces.
    ``held``: (owner, cls, layer, voxel index, face area) per face direction, ``cls`` changed in place.
    """
    from scipy import ndimage

    size = labels.size

    def per_voxel(k):  # faces read as class k directly (no layer), counted at their particle voxel
        at = [index[(cls == k) & (layer == 0)] for _, cls, layer, index, _ in held]
        return np.bincount(np.concatenate(at) if at else np.zeros(0, np.int64), minlength=size).reshape(labels.shape)

    void, cbd = per_voxel(0), per_voxel(1)
    faces = [(owner[layer > 0], index[layer > 0]) for owner, _, layer, index, _ in held]
    owners = np.unique(np.concatenate([o for o, _ in faces])) if faces else np.zeros(0, np.int64)
    kernel = np.ones((2 * radius + 1,) * 3, np.int32)
    # per particle voxel: the faces read as electrolyte and as CBD around it (its own particle's only)
    around_void, around_cbd = np.zeros(size, np.int32), np.zeros(size, np.int32)
    for label in owners:
        idx = np.unique(np.concatenate([i[o == label] for o, i in faces]))
        pos = np.unravel_index(idx, labels.shape)
        box = tuple(slice(max(0, int(p.min()) - radius), int(p.max()) + radius + 1) for p in pos)
        mine = labels[box] == label
        local = tuple(p - b.start for p, b in zip(pos, box))
        around_void[idx] = ndimage.correlate(np.where(mine, void[box], 0), kernel, mode="constant")[local]
        around_cbd[idx] = ndimage.correlate(np.where(mine, cbd[box], 0), kernel, mode="constant")[local]
    for _, cls, layer, index, _ in held:
        at = layer > 0
        cls[at] = np.where(layer_is_gap(around_void[index[at]], around_cbd[index[at]], layer[at]), 0, 1)


def _add_faces(out: SurfaceContacts, owner, cls, layer, a_face: float) -> None:
    """Add faces (owner label, class index or -1, CBD layer depth or 0) of area ``a_face`` µm² to ``out``;
    those read as electrolyte through a layer to ``n_partial_volume`` too."""
    n = len(out.area)
    valid = cls >= 0
    c = np.bincount(owner[valid] * len(CONTACT_CLASSES) + cls[valid], minlength=n * len(CONTACT_CLASSES))
    out.n_faces += c.reshape(n, -1)
    out.area += c.reshape(n, -1) * a_face
    out.n_partial_volume += np.bincount(owner[(layer > 0) & (cls == 0)], minlength=n)


def crack_faces(labels: np.ndarray, phases: np.ndarray, voxel_size_um=(1.0, 1.0, 1.0),
                n_labels: int | None = None) -> np.ndarray:
    """Crack surface area in µm² per label: faces between NMC solid and non-solid inside one envelope.

    The non-solid side is void in a crack; on a refined envelope it may also be a CBD-classified crack
    mouth (:func:`detachment.particles.refine_envelope`).

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer particle labels, 0 = background (envelopes, cracks included).
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    voxel_size_um : sequence of float, default (1.0, 1.0, 1.0)
        (z, y, x) voxel edge lengths, µm.
    n_labels : int, optional
        Highest label counted (default: ``labels.max()``).

    Returns
    -------
    numpy.ndarray
        (n_labels + 1,) float crack voxel-face area per label (index = label), µm², without the staircase
        factor.
    """
    n = int(labels.max()) + 1 if n_labels is None else n_labels + 1
    solid = (phases == NMC_LOW) | (phases == NMC_HIGH)
    out = np.zeros(n)
    for axis, a_face in enumerate(face_areas(voxel_size_um)):
        sa, sb = _pairs(labels.shape, axis)
        la = labels[sa]
        m = (la > 0) & (la == labels[sb]) & (solid[sa] != solid[sb])
        out += np.bincount(la[m].astype(np.int64), minlength=n) * a_face
    return out
