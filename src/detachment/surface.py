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
        (n_labels + 1,) int64 faces read as electrolyte through a one-voxel CBD layer
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
    """Owner label, contact class index (into :data:`CONTACT_CLASSES`, -1 = none) of each face, and whether
    it was read as electrolyte through a one-voxel CBD layer (``partial_volume``, :func:`_through_layer`).

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
    through = np.zeros(len(cls), bool)
    if partial_volume and probe == 1:
        through = (cls == 1) & _through_layer(labels, phases, intensity if reads_gap else None, gap_level, axis,
                                              step, oth_sl, m)
        cls = np.where(through, 0, cls)
    return owner, cls, through


def _through_layer(labels, phases, intensity, gap_level, axis: int, step: int, oth_sl, m) -> np.ndarray:
    """Whether the voxel one ``step`` beyond each face neighbour is background electrolyte: unlabelled and
    void in ``phases``, or, given ``intensity``, void or CBD there and darker than ``gap_level`` (the
    neighbour's own reading, without the spill correction, which is the particle's and has faded two
    voxels out). Clipped at the volume border (the neighbour itself, not electrolyte there)."""
    size = labels.shape[axis]
    far = np.clip(np.arange(size) + step, 0, size - 1)
    free = np.take(labels, far, axis=axis)[oth_sl][m] == 0
    code = np.take(phases, far, axis=axis)[oth_sl][m]
    if intensity is None:
        return free & (code == VOID)
    dark = np.take(intensity, far, axis=axis)[oth_sl][m] < gap_level
    return free & ((code == VOID) | (code == CBD)) & dark


def surface_contacts(labels: np.ndarray, phases: np.ndarray, voxel_size_um=(1.0, 1.0, 1.0),
                     n_labels: int | None = None, probe: int = 1, intensity: np.ndarray | None = None,
                     gap_level: float | None = None, solid_level: float | None = None,
                     partial_volume: bool = False) -> SurfaceContacts:
    """Contact areas of every labelled particle with void, CBD, Al and other particles.

    Parameters
    ----------
    labels, phases : numpy.ndarray
        (z, y, x) integer particle labels (0 = background; a particle's envelope is its labelled voxels)
        and uint8 phase codes (:mod:`detachment.phases`).
    voxel_size_um : sequence of float, default (1.0, 1.0, 1.0)
        (z, y, x) voxel edge lengths, µm.
    n_labels : int, optional
        Highest label counted (default: ``labels.max()``); the result has ``n_labels + 1`` rows.
    probe : int, default 1
        How many voxels outward, along the face normal, the contact class is read; 1 = the face neighbour
        (exact on a noise-free phase map: the phantoms' ``detachment_voxel_faces``). With ``probe`` > 1
        the face is electrolyte (void) when the face neighbour or the voxel ``probe`` out is void;
        otherwise the class is read at the far voxel (the neighbour itself when the far voxel is back
        inside the same particle); another particle at either depth counts as particle contact; clipped
        at the volume border. The workflow reads 1 with a fitted ``gap_level`` instead.
    intensity, gap_level : numpy.ndarray, float, optional
        (z, y, x) grey levels on the same grid, and a grey level: with ``probe`` 1, a face whose neighbour
        is electrolyte or CBD in ``phases`` is electrolyte where the neighbour's grey level is below it,
        else CBD, whatever its code; with ``probe`` > 1, electrolyte also where the darker of the voxels
        read (the neighbour and the one ``probe`` out) is below it. The workflow's level:
        :mod:`detachment.contact_level`, fallback :func:`detachment.particles.gap_level`.
    solid_level : float, optional
        Grey level of the particles' solid. When given (with ``intensity`` and ``gap_level``), the
        background across a face is read as outside + inside − ``solid_level`` (the spill of a symmetric
        point-spread function removed) and compared with ``gap_level`` (then the void/CBD midpoint).
    partial_volume : bool, default False
        With ``probe`` 1, read a one-voxel CBD layer with background electrolyte beyond it, along the face
        normal, as electrolyte (:func:`_through_layer`; counted in :attr:`SurfaceContacts.n_partial_volume`):
        where surfaces cut voxels, a voxel part particle and part electrolyte reads in CBD's range (so does
        a one-voxel coat). The workflow: :attr:`detachment.contact_level.ContactLevel.partial_volume`.

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
    for axis, a_face in enumerate(face_areas(voxel_size_um)):
        sa, sb = _pairs(labels.shape, axis)
        la, lb = labels[sa], labels[sb]
        differ = la != lb
        for own, other, own_sl, oth_sl, step in ((la, lb, sa, sb, 1), (lb, la, sb, sa, -1)):
            m = differ & (own > 0)
            if m.any():
                faces = _face_classes(labels, phases, intensity, gap_level, axis, step,
                                      (own, other, own_sl, oth_sl, m), probe, solid_level, partial_volume)
                _add_faces(out, *faces, a_face)
    return out


def _add_faces(out: SurfaceContacts, owner, cls, layer, a_face: float) -> None:
    """Add faces (owner label, class index or -1, read through a layer) of area ``a_face`` µm² to ``out``."""
    n = len(out.area)
    valid = cls >= 0
    c = np.bincount(owner[valid] * len(CONTACT_CLASSES) + cls[valid], minlength=n * len(CONTACT_CLASSES))
    out.n_faces += c.reshape(n, -1)
    out.area += c.reshape(n, -1) * a_face
    out.n_partial_volume += np.bincount(owner[layer], minlength=n)


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
