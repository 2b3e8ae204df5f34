"""Touching particles' shared boundary moved to the neck of the solid, from the segmentation masks.

Slice-wise masks of touching particles meet along a ragged line that wanders 1-2 voxels either way
of the true boundary: one particle's envelope takes bits of its neighbour, and every step of that
line is a face read as particle contact, which dilutes the particle's detachment. Here the NMC solid
near the masks is shared out again by a watershed on its distance map, seeded with each mask's core,
so the boundary between two touching particles runs where the solid is narrowest (the neck), as it
does between two grains. Axes (z, y, x).

Entry point: :func:`partition_solid`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .phases import NMC_HIGH, NMC_LOW

#: How far (voxels, 6-connected) beyond the masks the solid is shared out: as far as the envelope is
#: grown from the mask (:data:`detachment.particles.ENVELOPE_REACH_VOX`, which says why three).
REACH_VOX = 3
#: Passes of a 3 × 3 × 3 majority vote over the shared-out solid after the watershed: the watershed's
#: boundary between two basins is ragged on the distance map's plateaus, and every step of it is a face
#: read as particle contact.
MAJORITY_PASSES = 2
#: Closing (iterations of the 6-connected element) of the solid before its distance map is taken: a crack
#: through a particle makes the distance dip inside it, and the watershed would take the crack for a neck
#: and give the grain beyond it to the neighbour; closed, cracks up to about twice this wide are spanned, as
#: the envelope's own closing spans them (:func:`detachment.particles.refine_envelope`).
BRIDGE_VOX = 2


def _cores(labels: np.ndarray, solid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeds: each label's voxels whose six neighbours carry the same label, on the solid; a label with
    no such voxel (a mask one voxel thin) is seeded with all of its solid voxels. Also returns those thin
    labels."""
    padded = np.pad(labels, 1, mode="edge")
    core = labels > 0
    for axis in range(3):
        for step in (-1, 1):
            shifted = np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
            core &= shifted == labels
    seeds = np.where(core & solid, labels, 0)
    present = np.unique(labels[solid & (labels > 0)])
    missing = np.setdiff1d(present, np.unique(seeds))
    if missing.size:
        fill = solid & np.isin(labels, missing)
        seeds[fill] = labels[fill]
    return seeds, missing


def _majority(labels: np.ndarray, where: np.ndarray, passes: int) -> np.ndarray:
    """``labels`` with each voxel of ``where`` given the commonest label of ``where`` in its 3 × 3 × 3
    neighbourhood, ``passes`` times (ties: the lowest label)."""
    present = np.unique(labels[where])
    if len(present) < 2:
        return labels
    for _ in range(passes):
        # whole voxel counts, so that equal counts tie exactly and the lowest label wins
        counts = np.stack([np.rint(27 * ndimage.uniform_filter(((labels == k) & where).astype(np.float32), 3,
                                                               mode="nearest")) for k in present])
        labels = np.where(where, present[counts.argmax(0)], labels)
    return labels


def _closed(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``mask`` closed by ``iterations`` of the 6-connected element, its border repeated beyond the array (a
    body cut by the crop's face goes on) so that the closing does not erode it there."""
    if iterations <= 0:
        return mask
    ball = ndimage.generate_binary_structure(3, 1)
    padded = np.pad(mask, iterations, mode="edge")
    inner = (slice(iterations, -iterations),) * 3
    return ndimage.binary_closing(padded, ball, iterations=iterations)[inner]


def partition_solid(labels: np.ndarray, phases: np.ndarray, sampling=(1.0, 1.0, 1.0),
                    reach_vox: int = REACH_VOX, majority_passes: int = MAJORITY_PASSES,
                    bridge_vox: int = BRIDGE_VOX) -> np.ndarray:
    """Particle labels with the NMC solid near the masks shared out at the necks.

    The NMC solid within ``reach_vox`` voxels of any mask is flooded from the masks' cores
    (:func:`skimage.segmentation.watershed` on the negated Euclidean distance, in µm, to the nearest voxel
    outside the solid closed by ``bridge_vox``), each voxel going to the basin it drains to, then the
    labelled solid is smoothed by ``majority_passes`` of a 3 × 3 × 3 majority vote (:data:`MAJORITY_PASSES`).
    Every other voxel keeps its mask label: the masks' electrolyte and CBD (cracks, or an overshoot that the
    envelope refinement cuts off) are left to :func:`detachment.particles.refine_envelope`.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer particle masks, 0 = background (a crop with a margin around the particles of
        interest: a neighbour's core outside the crop cannot seed it).
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes on the same grid (:mod:`detachment.phases`).
    sampling : sequence of float, default (1.0, 1.0, 1.0)
        (z, y, x) voxel edge lengths (µm): the distance map is physical on anisotropic voxels.
    reach_vox : int, default :data:`REACH_VOX`
        How far beyond the masks the solid is shared out, voxels.
    majority_passes : int, default :data:`MAJORITY_PASSES`
        Passes of the majority vote that smooths the shared-out boundaries (0: the watershed's as it is).
    bridge_vox : int, default :data:`BRIDGE_VOX`
        Iterations of the closing of the solid before its distance map (0: the solid as it is).

    Returns
    -------
    numpy.ndarray
        (z, y, x) labels of the same dtype: ``labels`` away from the solid and on solid no core drains
        to; a particle that touches no other gains the solid within ``reach_vox`` of its mask (as
        :func:`detachment.particles.refine_envelope` would add it) and loses none.
    """
    from skimage.segmentation import watershed

    labels = np.asarray(labels)
    nmc = (phases == NMC_LOW) | (phases == NMC_HIGH)
    ball = ndimage.generate_binary_structure(3, 1)
    solid = nmc & ndimage.binary_dilation(labels > 0, ball, iterations=reach_vox)
    if not solid.any():
        return labels.copy()
    seeds, thin = _cores(labels, solid)
    distance = ndimage.distance_transform_edt(_closed(solid, bridge_vox), sampling=sampling)
    shared = watershed(-distance, seeds, mask=solid)
    out = np.where(shared > 0, shared, labels).astype(labels.dtype)
    # a mask too thin for a core would lose its voxels to any vote: it neither votes nor is voted on
    voting = nmc & (out > 0) & ~np.isin(out, thin)
    return _majority(out, voting, majority_passes) if majority_passes else out
