"""Ground truth of a phantom measured on its planted geometry, independently of the pipeline.

Contact areas are measured on a triangle mesh of each particle's envelope (marching cubes on the
lightly smoothed binary envelope): the mesh gives each bit of surface its area, and the planted phase map
says what touches it. A triangle takes the class of the outside voxel that shares a face with the
envelope and lies nearest to the point half a voxel out along the triangle's normal. The voxel at that
point itself may be an edge or corner neighbour wherever the normal is oblique, and a one-voxel coat or
gap closes the surface face by face only: read there, it would be read through.
The pipeline counts voxel faces (:mod:`detachment.surface`), which weights each bit of surface by
|n_z| + |n_y| + |n_x|; this module shares no code with it, so a bias of the face count shows up as an
error.

Entry point: :func:`mesh_contacts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID

CLASSES = ("void", "cbd", "al", "particle")
SMOOTHING_SIGMA_VOX = 0.7  # Gaussian on the binary envelope before marching cubes: a smooth surface, not stairs
_PAD = 3
#: Distance (voxels) along a triangle's outward normal to the point whose nearest face-adjacent outside
#: voxel gives its class: the mesh lies about half a voxel outside the envelope's voxel centres, so this
#: lands on the first voxel layer outside.
PROBE_DEPTH_VOX = 0.5


@dataclass
class MeshContacts:
    """Mesh contact areas per particle label.

    Attributes
    ----------
    area : numpy.ndarray
        (n + 1, 4) float, µm²: row = label (row 0 unused), ``area[:, k]`` = envelope area facing
        ``CLASSES[k]`` (void, CBD, Al, particle). Surface at the volume border, where what lies beyond is
        unknown, is left out.
    """

    area: np.ndarray

    @property
    def detachment(self) -> np.ndarray:
        """Area fraction (0-1) of each envelope facing void (electrolyte).

        (n + 1,) per label; NaN where nothing was measured (row 0 and absent labels).
        """
        total = self.area.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.area[:, 0] / total, np.nan)


def _outside_class(labels, phases, own: int, points: np.ndarray) -> np.ndarray:
    """Contact class (index into :data:`CLASSES`) of the voxels at integer ``points`` (n, 3) outside ``own``."""
    lab = labels[tuple(points.T)]
    ph = phases[tuple(points.T)]
    cls = np.full(len(points), -1, np.int64)
    cls[ph == VOID] = 0
    cls[ph == CBD] = 1
    cls[ph == AL] = 2
    cls[(ph == NMC_LOW) | (ph == NMC_HIGH)] = 3  # solid outside any envelope still is solid
    cls[(lab > 0) & (lab != own)] = 3
    return cls


def _outer_voxels(labels, phases, own: int):
    """The voxels outside ``own`` that share a face with it: coordinates (n, 3) and classes (n,).

    Where a face of ``own`` lies on the array's border, the voxel beyond it is listed with class -1
    (unknown)."""
    mask = labels == own
    surface = np.argwhere(mask & ~ndimage.binary_erosion(mask, border_value=1))
    shape = np.array(labels.shape)
    steps = np.concatenate([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)])
    outer = np.unique((surface[:, None, :] + steps[None]).reshape(-1, 3), axis=0)
    inside = np.all((outer >= 0) & (outer < shape), axis=1)
    keep = ~inside
    keep[inside] = ~mask[tuple(outer[inside].T)]
    outer, inside = outer[keep], inside[keep]
    cls = np.full(len(outer), -1, np.int64)
    cls[inside] = _outside_class(labels, phases, own, outer[inside])
    return outer, cls


def _particle_mesh(mask: np.ndarray, spacing):
    """Vertices (µm, crop coordinates), faces and the smoothed field of one envelope crop."""
    from skimage.measure import marching_cubes

    field = ndimage.gaussian_filter(mask.astype(np.float32), SMOOTHING_SIGMA_VOX, mode="nearest")
    if field.max() <= 0.5 or field.min() >= 0.5:
        return None, None, field
    verts, faces, _, _ = marching_cubes(field, 0.5, spacing=tuple(float(s) for s in spacing))
    return verts, faces, field


def _triangle_geometry(verts, faces, spacing, field):
    """Triangle areas (µm²), centroids (voxel units) and outward unit normals (voxel units)."""
    sp = np.asarray(spacing, float)
    tri = verts[faces]  # (n, 3 vertices, 3 coords) in µm
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    tri_vox = tri / sp
    centroid = tri_vox.mean(1)
    n = np.cross(tri_vox[:, 1] - tri_vox[:, 0], tri_vox[:, 2] - tri_vox[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    # outward = towards lower field values: flip the normals that point up the field
    inward = ndimage.map_coordinates(field, (centroid + 0.5 * n).T, order=1, mode="nearest") > \
        ndimage.map_coordinates(field, (centroid - 0.5 * n).T, order=1, mode="nearest")
    n[inward] *= -1
    return area, centroid, n


def mesh_contacts(labels: np.ndarray, phases: np.ndarray, voxel_size_um=(1.0, 1.0, 1.0),
                  n_labels: int | None = None) -> MeshContacts:
    """Envelope contact areas of every particle, measured on a marching-cubes mesh.

    Each triangle of the envelope mesh takes the class of the face-adjacent outside voxel nearest
    (Euclidean, voxel units) to the point :data:`PROBE_DEPTH_VOX` out along its outward normal. Where
    the volume border cuts a particle, the envelope is continued beyond it, and the triangles outside the
    volume (centroid beyond the outer voxel faces) or whose nearest outside voxel lies beyond it are not
    counted.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer instances, 0 = background; a particle's envelope is its labelled voxels (cracks
        inside carry its label).
    phases : numpy.ndarray
        (z, y, x) uint8 planted phase codes (noise-free; :mod:`detachment.phases`).
    voxel_size_um : sequence of float, default (1.0, 1.0, 1.0)
        (z, y, x) voxel edge lengths in µm.
    n_labels : int, optional
        Highest label (default: ``labels.max()``).

    Returns
    -------
    MeshContacts
        Per-label areas (µm²) facing void, CBD, Al and other particles (or solid outside any envelope).
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if n_labels is None else int(n_labels)
    area = np.zeros((n + 1, len(CLASSES)))
    shape = np.array(labels.shape)
    for lab, sl in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if sl is None:
            continue
        lo = np.array([max(s.start - _PAD, 0) for s in sl])
        hi = np.array([min(s.stop + _PAD, d) for s, d in zip(sl, labels.shape)])
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        # replicate the border beyond the volume so a cut particle is not closed by an artificial face there
        verts, faces, field = _particle_mesh(np.pad(labels[crop] == lab, _PAD, mode="edge"), voxel_size_um)
        if verts is None or len(faces) == 0:
            continue
        a, centroid, normal = _triangle_geometry(verts, faces, voxel_size_um, field)
        centroid += lo - _PAD  # volume voxel coordinates
        inside_volume = np.all((centroid >= -0.5) & (centroid <= shape - 0.5), axis=1)
        outer, outer_class = _outer_voxels(labels[crop], phases[crop], lab)
        if not len(outer) or not inside_volume.any():
            continue
        probe = centroid[inside_volume] + PROBE_DEPTH_VOX * normal[inside_volume]
        _, nearest = cKDTree(outer + lo).query(probe)
        cls = outer_class[nearest]
        keep = cls >= 0
        area[lab] = np.bincount(cls[keep], weights=a[inside_volume][keep], minlength=len(CLASSES))
    return MeshContacts(area)
