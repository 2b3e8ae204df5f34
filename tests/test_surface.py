"""Face-counted surface contacts against analytic boxes and a brute-force per-face loop."""

from __future__ import annotations

import numpy as np
import pytest

from detachment.phases import AL, CBD, NMC_LOW, VOID
from detachment.surface import LAYER_VOTE_RADIUS, crack_faces, surface_contacts


def test_box_contacts_are_exact_face_areas_with_anisotropic_voxels():
    labels = np.zeros((10, 12, 14), np.uint32)
    labels[3:7, 4:9, 5:11] = 1  # 4 x 5 x 6 voxels
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[7:] = VOID  # the top face (z = 7) faces electrolyte
    phases[:3] = AL  # the bottom face rests on Al
    phases[labels == 1] = NMC_LOW
    vz, vy, vx = 0.2, 0.1, 0.05
    c = surface_contacts(labels, phases, (vz, vy, vx))
    top = 5 * 6 * vy * vx
    sides = 2 * (4 * 6 * vz * vx) + 2 * (4 * 5 * vz * vy)
    np.testing.assert_allclose(c.area[1], [top, sides, top, 0.0])
    assert c.n_faces[1].tolist() == [30, 2 * 24 + 2 * 20, 30, 0]
    assert c.detachment[1] == pytest.approx(top / (2 * top + sides))


def test_contacts_match_brute_force_loop_on_random_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (7, 8, 9)).astype(np.uint32)
    phases = rng.integers(0, 5, labels.shape).astype(np.uint8)
    vs = (0.3, 0.2, 0.1)
    areas = (vs[1] * vs[2], vs[0] * vs[2], vs[0] * vs[1])
    cls = {VOID: 0, CBD: 1, AL: 2, 2: 3, 3: 3}
    expected = np.zeros((4, 4))
    for z, y, x in np.ndindex(labels.shape):
        own = labels[z, y, x]
        if own == 0:
            continue
        for axis in range(3):
            for step in (-1, 1):
                q = [z, y, x]
                q[axis] += step
                if not 0 <= q[axis] < labels.shape[axis]:
                    continue
                other = labels[tuple(q)]
                if other == own:
                    continue
                k = 3 if other > 0 else cls[int(phases[tuple(q)])]
                expected[own, k] += areas[axis]
    c = surface_contacts(labels, phases, vs)
    np.testing.assert_allclose(c.area, expected)


def _brute_force_through_layer(labels, phases, grey=None, level=None, radius=LAYER_VOTE_RADIUS):
    """Per label: face counts by class and the faces read as electrolyte through a CBD layer, one face at a
    time. The neighbour's class as the plain reading gives it; then CBD with background electrolyte beyond
    it in the face's direction is a one-voxel layer, CBD, CBD and electrolyte a two-voxel one (the voxels
    beyond clipped to the volume); each layer face is electrolyte where the same particle's other faces
    (not layers) whose particle voxel lies in the cube of ``radius`` around its own read electrolyte more
    often than CBD, and on a tie where the layer is one voxel."""
    cls = {VOID: 0, CBD: 1, AL: 2, 2: 3, 3: 3}
    n = int(labels.max()) + 1
    counts, through, layers = np.zeros((n, 4), int), np.zeros(n, int), [0, 0]

    def background(q):
        return labels[q] == 0 and phases[q] in (VOID, CBD)

    def electrolyte(q):
        return background(q) and (grey[q] < level if grey is not None else phases[q] == VOID)

    def beyond(p, axis, step, d):
        r = list(p)
        r[axis] = min(max(p[axis] + d * step, 0), labels.shape[axis] - 1)
        return tuple(r)

    faces = []  # (particle voxel, label, class, layer depth)
    for p in np.ndindex(labels.shape):
        own = labels[p]
        if own == 0:
            continue
        for axis in range(3):
            for step in (-1, 1):
                q = beyond(p, axis, step, 1)
                if q == p or labels[q] == own:
                    continue
                if labels[q] > 0:
                    k = 3
                elif phases[q] in (VOID, CBD):
                    k = 0 if electrolyte(q) else 1
                else:
                    k = cls[int(phases[q])]
                depth = 0
                if k == 1:
                    r, t = beyond(p, axis, step, 2), beyond(p, axis, step, 3)
                    if r != q and electrolyte(r):
                        depth = 1
                    elif r != q and t != r and background(r) and not electrolyte(r) and electrolyte(t):
                        depth = 2
                faces.append((p, own, k, depth))
    for p, own, k, depth in faces:
        if depth:
            near = [c for v, o, c, d in faces if o == own and d == 0 and max(abs(a - b) for a, b in zip(v, p)) <= radius]
            void, cbd = near.count(0), near.count(1)
            if void > cbd or (void == cbd and depth == 1):
                k, through[own] = 0, through[own] + 1
            layers[depth - 1] += 1
        counts[own, k] += 1
    return counts, through, layers


@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("on_grey", [False, True])
def test_reading_through_a_cbd_layer_matches_a_face_by_face_loop(seed, on_grey):
    """``partial_volume``: random labels, codes and grey levels against a face-by-face loop, on the phase codes
    and on the grey levels against a level; without it the plain reading (no face read through). The draws
    hold layers of one and of two voxels, and layer faces the faces around read each way."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((12, 13, 14)) < 0.45, rng.integers(1, 4, (12, 13, 14)), 0).astype(np.uint32)
    phases = rng.choice(np.array([VOID, CBD, CBD, AL, NMC_LOW], np.uint8), labels.shape)
    # rows of more electrolyte, so that the faces around a layer read electrolyte in some places, CBD in others
    rows = np.broadcast_to(rng.random((12, 13, 1)) < 0.3, labels.shape)
    phases = np.where(rows & (phases == CBD) & (rng.random(labels.shape) < 0.6), VOID, phases)
    grey = rng.random(labels.shape) * np.where(rows, 0.7, 1.0) if on_grey else None
    level = 0.5 if on_grey else None
    counts, through, layers = _brute_force_through_layer(labels, phases, grey, level)
    got = surface_contacts(labels, phases, intensity=grey, gap_level=level, partial_volume=True)
    assert min(layers) > 5 and 10 < through.sum() < sum(layers) - 10, (layers, through.sum())
    np.testing.assert_array_equal(got.n_faces, counts)
    np.testing.assert_array_equal(got.n_partial_volume, through)
    plain = surface_contacts(labels, phases, intensity=grey, gap_level=level)
    np.testing.assert_array_equal(plain.n_partial_volume, 0)
    moved = counts.copy()
    moved[:, 0] -= through
    moved[:, 1] += through
    np.testing.assert_array_equal(plain.n_faces, moved)


@pytest.mark.parametrize("coat, beyond, detached", [(1, VOID, 1.0), (2, VOID, 0.0), (1, "particle", 0.0),
                                                    (1, AL, 0.0)])
def test_a_box_in_a_one_voxel_cbd_layer_with_electrolyte_beyond_reads_detached_and_a_thicker_coat_does_not(
        coat, beyond, detached):
    """A 7 x 8 x 9 box in a CBD layer ``coat`` voxels thick on each face, then electrolyte, another particle
    or Al: read through the layer, only the one-voxel layer with electrolyte beyond reads as electrolyte
    (every face, each counted as read through); without it every face reads CBD."""
    from scipy import ndimage

    box = np.zeros((21, 22, 23), bool)
    box[7:14, 7:15, 7:16] = True
    cross = ndimage.generate_binary_structure(3, 1)
    shell = ndimage.binary_dilation(box, cross, iterations=coat) & ~box
    labels = box.astype(np.uint32)
    phases = np.where(box, NMC_LOW, np.where(shell, CBD, VOID)).astype(np.uint8)
    outer = ndimage.binary_dilation(box | shell, cross) & ~(box | shell)
    if beyond == "particle":
        labels[outer] = 2
        phases[outer] = NMC_LOW
    elif beyond == AL:
        phases[outer] = AL
    got = surface_contacts(labels, phases, partial_volume=True)
    assert got.detachment[1] == pytest.approx(detached)
    assert got.n_partial_volume[1] == (got.n_faces[1].sum() if detached else 0)
    assert surface_contacts(labels, phases).detachment[1] == 0.0


def test_a_cbd_layer_reads_as_the_surface_around_it_a_gap_on_a_detached_top_a_coat_below(monkeypatch):
    """A 6 x 12 x 12 box with electrolyte straight above its top and CBD three voxels thick on its sides and
    bottom. On the top, a stripe of 12 faces has a one-voxel CBD layer before the electrolyte (a rim voxel
    part particle, part gap) and one of 6 faces a two-voxel layer; below, a stripe of 12 faces has a coat one
    voxel thick with electrolyte beneath. Read by the faces around them, both top stripes are electrolyte
    and the thin coat CBD: every top face is detached, nothing else (each layer read as electrolyte counted);
    the layer alone would read the thin coat as electrolyte too, the plain reading every layer as CBD."""
    labels = np.zeros((20, 23, 23), np.uint32)
    labels[7:13, 5:17, 5:17] = 1
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[13:] = VOID  # electrolyte above the top (z = 12)
    phases[labels == 1] = NMC_LOW
    phases[13, 8:14, 10:12] = CBD  # one-voxel layer on the top
    phases[13:15, 8:14, 14] = CBD  # two-voxel layer on the top
    phases[:6, 8:14, 10:12] = VOID  # below z = 6: a coat one voxel thick under the bottom (z = 7)
    top, bottom, sides = 12 * 12, 12 * 12, 4 * 6 * 12
    got = surface_contacts(labels, phases, partial_volume=True)
    assert got.n_faces[1].tolist() == [top, bottom + sides, 0, 0]
    assert got.n_partial_volume[1] == 12 + 6
    plain = surface_contacts(labels, phases)
    assert plain.n_faces[1].tolist() == [top - 18, bottom + sides + 18, 0, 0]
    from detachment import surface

    # each layer by itself: one voxel is electrolyte, two are CBD
    monkeypatch.setattr(surface, "layer_is_gap", lambda void, cbd, depth: np.asarray(depth) == 1)
    by_layer = surface_contacts(labels, phases, partial_volume=True)
    assert by_layer.n_faces[1].tolist() == [top - 6 + 12, bottom - 12 + sides + 6, 0, 0]


def test_crack_faces_count_void_solid_faces_inside_one_particle():
    labels = np.zeros((9, 9, 9), np.uint32)
    labels[1:8, 1:8, 1:8] = 1
    phases = np.full(labels.shape, NMC_LOW, np.uint8)
    phases[labels == 0] = CBD
    phases[2:7, 4, 2:7] = VOID  # a 5 x 5 planar crack, 1 voxel thick
    area = crack_faces(labels, phases, (1.0, 1.0, 1.0))
    # two 5x5 faces across y, plus the crack's rim faces inside the particle along z and x
    assert area[1] == pytest.approx(2 * 25 + 2 * 5 + 2 * 5)


def test_probe_two_reads_a_blurred_gap_as_electrolyte():
    # particle with a 2-voxel electrolyte gap on top, beyond it CBD; thresholding turned the gap voxel
    # touching the particle into CBD (partial volume): probe=1 reads attached, probe=2 reads detached
    labels = np.zeros((14, 12, 12), np.uint32)
    labels[3:8, 3:9, 3:9] = 1
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[labels == 1] = NMC_LOW
    phases[9, 3:9, 3:9] = VOID  # second gap voxel; the first (z = 8) was misread as CBD
    top = 6 * 6
    c1 = surface_contacts(labels, phases, probe=1)
    c2 = surface_contacts(labels, phases, probe=2)
    assert c1.n_faces[1, 0] == 0
    assert c2.n_faces[1, 0] == top
    assert c2.n_faces[1].sum() == c1.n_faces[1].sum()


def test_probe_two_keeps_a_one_voxel_gap_as_electrolyte_even_before_cbd_or_another_particle():
    # particle 1 with a 1-voxel void gap above it (then CBD) and a 1-voxel void gap beside it (then
    # particle 2): the faces across both gaps are electrolyte, as the face neighbour says (probe=1)
    labels = np.zeros((14, 12, 16), np.uint32)
    labels[3:8, 3:9, 3:9] = 1
    labels[3:8, 3:9, 10:14] = 2
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[labels > 0] = NMC_LOW
    phases[8, 3:9, 3:9] = VOID  # gap above, CBD at z = 9
    phases[3:8, 3:9, 9] = VOID  # gap between the particles
    c1 = surface_contacts(labels, phases, probe=1)
    c2 = surface_contacts(labels, phases, probe=2)
    assert c2.n_faces[1, 0] == c1.n_faces[1, 0] == 6 * 6 + 5 * 6
    assert c2.n_faces[1, 3] == c1.n_faces[1, 3] == 0


@pytest.mark.parametrize("probe", [1, 2])
def test_a_dark_gap_thresholded_as_cbd_reads_as_electrolyte_with_the_grey_level_rule(probe):
    # a one-voxel gap above the particle, blurred up into CBD's phase range, then CBD; beside the
    # particle true CBD contact (grey level above the cut); the cut is the void/CBD midpoint
    labels = np.zeros((14, 12, 12), np.uint32)
    labels[3:8, 3:9, 3:9] = 1
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[labels == 1] = NMC_LOW
    grey = np.where(labels == 1, 0.72, 0.37).astype(np.float32)  # CBD beside NMC, lifted by blur
    grey[8, 3:9, 3:9] = 0.14  # the gap: phase CBD (above the 0.12 volume threshold), darker than 0.15
    plain = surface_contacts(labels, phases, probe=probe)
    seen = surface_contacts(labels, phases, probe=probe, intensity=grey, gap_level=0.15)
    assert plain.n_faces[1, 0] == 0
    assert seen.n_faces[1, 0] == 6 * 6  # exactly the faces under the gap
    assert seen.n_faces[1, 1] == plain.n_faces[1, 1] - 6 * 6  # the rest stays CBD
    assert seen.n_faces[1].sum() == plain.n_faces[1].sum()
    # a dark voxel inside another particle is particle contact, not a gap
    labels[9:12, 3:9, 3:9] = 2
    grey[9:12, 3:9, 3:9] = 0.72
    phases[9:12, 3:9, 3:9] = NMC_LOW
    grey[8, 3:9, 3:9] = 0.37  # no gap now
    assert surface_contacts(labels, phases, probe=probe, intensity=grey, gap_level=0.15).n_faces[1, 0] == 0


def test_gap_level_is_the_void_cbd_midpoint_of_the_phase_model():
    from detachment.particles import gap_level

    attrs = {"order": "void, cbd, al, nmc_low, nmc_high", "means": np.array([0.0, 0.3, 0.5, 0.7, 0.9])}
    assert gap_level(attrs) == pytest.approx(0.15)
    assert gap_level({"order": "void, cbd"}) is None  # imported phases without grey levels
    assert gap_level({"order": "a, b", "means": np.array([0.0, 1.0])}) is None


def test_with_a_gap_level_the_grey_level_decides_between_electrolyte_and_cbd_whatever_the_phase_code():
    """A box whose top neighbours are coded electrolyte but read bright, and (second case) whose -x
    neighbours are coded CBD but read dark: with a gap level (probe 1) those faces follow the grey levels;
    without one they follow the codes. Al and another particle keep their classes."""
    labels = np.zeros((9, 9, 9), np.uint32)
    labels[3:6, 3:6, 3:6] = 1
    labels[3:6, 3:6, 6] = 2                      # another particle on the +x side
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[6:] = VOID
    phases[:3] = AL
    phases[labels > 0] = NMC_LOW
    grey = np.full(labels.shape, 0.3, np.float32)
    grey[6:] = 0.4                               # coded electrolyte, bright
    n = 9  # faces per side of the 3 x 3 x 3 box; classes void, CBD, Al, particle
    assert surface_contacts(labels, phases).n_faces[1].tolist() == [n, 3 * n, n, n]
    assert surface_contacts(labels, phases, intensity=grey, gap_level=0.15).n_faces[1].tolist() == [0, 4 * n, n, n]
    grey[3:6, 3:6, 2] = 0.0                      # the -x neighbours: coded CBD, dark
    read = surface_contacts(labels, phases, intensity=grey, gap_level=0.15)
    assert read.n_faces[1].tolist() == [n, 3 * n, n, n] and read.detachment[1] == pytest.approx(1 / 6)
