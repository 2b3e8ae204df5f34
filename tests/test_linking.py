"""Hungarian linking and greedy stitching on stacks with known answers; bounded memory."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest

from detachment.linking import LinkSettings, link_file, link_slices, stitch_greedy
from detachment.metrics import particle_scores


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def linked(stack, **kw):
    it, linker = link_slices(stack, LinkSettings(**kw))
    return np.stack(list(it)), linker


def per_slice_ids(vol3d):
    """Turn 3D ids into arbitrary per-slice ids (what a slice-wise segmenter gives)."""
    out = np.zeros_like(vol3d)
    rng = np.random.default_rng(0)
    for z, sl in enumerate(vol3d):
        ids = np.unique(sl[sl > 0])
        perm = rng.permutation(len(ids)) + 1
        for i, p in zip(ids, perm):
            out[z][sl == i] = p
    return out


def test_shifted_disks_become_one_particle_each():
    truth = np.zeros((12, 64, 64), np.int32)
    for z in range(12):
        truth[z][disk((64, 64), 20, 15 + z, 8)] = 1  # drifts 1 px per slice
        truth[z][disk((64, 64), 45, 45 - z // 2, 6)] = 2
    out, _ = linked(per_slice_ids(truth))
    s = particle_scores(truth, out)
    assert s["recovered"] == 1.0 and s["n_pred"] == 2 and s["split_rate"] == 0 and s["merge_rate"] == 0


def test_spheres_from_true_slices_are_recovered_exactly():
    zz, yy, xx = np.mgrid[:30, :60, :60]
    truth = np.zeros(zz.shape, np.int32)
    centres = [(15, 15, 15, 10), (15, 15, 38, 10), (12, 42, 25, 9), (20, 45, 48, 8)]
    for k, (cz, cy, cx, r) in enumerate(centres, 1):
        truth[((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (truth == 0)] = k
    out, _ = linked(per_slice_ids(truth))
    s = particle_scores(truth, out)
    # a one- or few-pixel polar cap may start a track of its own (IoU with the next slice < min_iou)
    assert s["recovered"] == 1.0 and s["mean_iou"] > 0.99 and s["split_rate"] == 0 and s["merge_rate"] == 0
    out, _ = linked(per_slice_ids(truth), cost="overlap")  # overlap-fraction cost keeps the caps
    assert particle_scores(truth, out)["mean_iou"] == 1.0


def test_a_particle_missing_for_one_slice_is_bridged():
    stack = np.zeros((9, 40, 40), np.int32)
    for z in range(9):
        if z != 4:
            stack[z][disk((40, 40), 20, 20, 8)] = 3
    out, linker = linked(stack, max_gap=1)
    assert set(np.unique(out)) == {0, 1}
    assert linker.tracks[0].gaps == 1
    out0, _ = linked(stack, max_gap=0)
    assert set(np.unique(out0)) == {0, 1, 2}  # without gap closing: two particles


def test_hysteresis_keeps_a_particle_with_one_confident_slice_and_drops_one_without():
    from detachment.linking import link_array, max_score_per_particle

    stack = np.zeros((8, 40, 40), np.int32)
    for z in range(8):
        stack[z][disk((40, 40), 12, 12, 6)] = 1
        stack[z][disk((40, 40), 28, 28, 6)] = 2
    scores = [np.array([np.nan, 0.35, 0.4]) for _ in range(8)]
    scores[5] = np.array([np.nan, 0.9, 0.45])  # particle 1 is a confident detection in one slice only
    s = LinkSettings(min_track_score=0.6, min_voxels=1)
    out = link_array(stack, s, scores=scores)
    assert out[:, 12, 12].min() > 0 and len(np.unique(out[:, 12, 12])) == 1  # whole particle 1 kept
    assert not out[:, 28, 28].any()  # particle 2 never reaches 0.6: dropped
    best = max_score_per_particle(stack, link_array(stack, LinkSettings(min_voxels=1)), scores)
    assert sorted(best[1:].tolist()) == [0.45, 0.9]
    greedy = link_array(stack, s, method="greedy", scores=scores)
    assert np.array_equal(greedy > 0, out > 0)  # the greedy baseline gets the same hysteresis


def test_a_bridged_gap_is_filled_with_the_overlap_of_its_ends_and_spares_other_instances():
    stack = np.zeros((10, 40, 40), np.int32)
    for z in range(10):
        if z not in (4, 5):
            stack[z][disk((40, 40), 20, 18 + (z >= 6) * 4, 8)] = 1  # shifted by 4 px across the gap
    stack[5][disk((40, 40), 20, 30, 4)] = 2  # another instance inside the gap region
    out, linker = linked(stack, max_gap=2)
    track = out[3][20, 18]
    shared = (out[3] == track) & (out[6] == track)
    assert linker.tracks[track - 1].gaps == 2
    assert np.array_equal(out[4] == track, shared)
    assert np.array_equal(out[5] == track, shared & (stack[5] != 2))
    assert linker.tracks[track - 1].voxels == int((out == track).sum())
    unfilled, _ = linked(stack, max_gap=2, fill_gaps=False)
    assert not (unfilled[4] > 0).any()


# fragment absorption must not join distinct particles: the known-answer cases below hold with it too
ABSORB = pytest.mark.parametrize("absorb", [0.0, 0.6])


@ABSORB
def test_two_particles_touching_in_one_slice_are_not_merged(absorb):
    stack = np.zeros((7, 40, 60), np.int32)
    for z in range(7):
        gap = 0 if z == 3 else 4  # they touch at z = 3
        stack[z][disk((40, 60), 20, 18, 10)] = 1
        stack[z][disk((40, 60), 20, 18 + 20 + gap, 10) & (stack[z] == 0)] = 2
    out, _ = linked(per_slice_ids(stack), absorb_fraction=absorb)
    truth = np.zeros_like(stack)
    truth[stack > 0] = np.where(np.indices(stack.shape)[2][stack > 0] < 29, 1, 2)
    assert particle_scores(truth, out)["merge_rate"] == 0
    assert len(np.unique(out)) == 3


@ABSORB
def test_a_branch_continues_one_track_and_starts_another(absorb):
    stack = np.zeros((8, 40, 60), np.int32)
    for z in range(4):
        stack[z][disk((40, 60), 20, 30, 10)] = 1
    for z in range(4, 8):
        stack[z][disk((40, 60), 20, 24, 6)] = 1
        stack[z][disk((40, 60), 20, 40, 5)] = 2
    out, _ = linked(stack, min_iou=0.2, absorb_fraction=absorb)
    ids = np.unique(out[out > 0])
    assert len(ids) == 2  # one branch continues the trunk, the other is a new particle
    assert out[0, 20, 30] == out[7, 20, 24]


def _cracked_disk_stack(pieces_from=3, pieces_to=6, n_pieces=2, crack_half_width=0.5):
    """A drifting disk of radius 12 cut into ``n_pieces`` wedges by 1-px cracks in slices [from, to)."""
    stack = np.zeros((9, 48, 64), np.int32)
    yy, xx = np.mgrid[:48, :64]
    for z in range(9):
        cx = 28 + z // 3
        d = disk((48, 64), 24, cx, 12)
        if pieces_from <= z < pieces_to:
            angle = (np.arctan2(yy - 24, xx - cx) + np.pi) / (2 * np.pi) * n_pieces  # 0 .. n_pieces
            wedge = np.minimum(angle.astype(int), n_pieces - 1)
            crack = np.abs(angle - np.round(angle)) * 2 * np.pi / n_pieces * np.hypot(yy - 24, xx - cx) < crack_half_width
            for k in range(n_pieces):
                stack[z][d & (wedge == k) & ~crack] = k + 1
        else:
            stack[z][d] = 1
    return stack


def test_fragments_of_a_cracked_particle_join_its_track():
    halves = _cracked_disk_stack(n_pieces=2)
    # without absorption the half the Hungarian step leaves over starts a second particle
    off, _ = linked(halves, absorb_fraction=0)
    assert len(np.unique(off[off > 0])) == 2
    on, _ = linked(halves, absorb_fraction=0.6)
    assert set(np.unique(on)) == {0, 1}
    assert np.array_equal(on > 0, halves > 0)  # every piece kept, none painted where there was nothing
    # three wedges: none alone reaches min_iou with the whole disk above, together they do
    wedges = _cracked_disk_stack(n_pieces=3, crack_half_width=0.3)
    off, _ = linked(wedges, absorb_fraction=0, min_iou=0.4)
    assert len(np.unique(off[off > 0])) > 2
    on, linker = linked(wedges, absorb_fraction=0.6, min_iou=0.4)
    assert set(np.unique(on)) == {0, 1} and linker.tracks[0].gaps == 0


def _chipped_disk_stack():
    """A disk of radius 12 that the model cuts into a big and a small piece (3-px crack) in slices 3-5:
    together the pieces are not convex enough to be absorbed, so the small one starts a track."""
    stack = np.zeros((9, 48, 48), np.int32)
    xx = np.mgrid[:48, :48][1]
    d = disk((48, 48), 24, 24, 12)
    for z in range(9):
        if 3 <= z < 6:
            stack[z][d & (xx < 28)] = 1
            stack[z][d & (xx >= 31)] = 2
        else:
            stack[z][d] = 1
    return stack


def test_a_fragment_track_rejoins_the_particle_when_it_is_whole_again(tmp_path):
    stack = _chipped_disk_stack()
    off, _ = linked(stack, absorb_fraction=0)
    assert len(np.unique(off[off > 0])) == 2  # the small piece's track ends where the disk is whole again
    on, linker = linked(stack, absorb_fraction=0.6)
    assert len(np.unique(on[on > 0])) == 2  # still two ids in the stream: earlier slices were handed out
    from detachment.linking import link_array

    out = link_array(stack, LinkSettings(absorb_fraction=0.6, min_voxels=1))
    assert set(np.unique(out)) == {0, 1} and np.array_equal(out > 0, stack > 0)
    root = linker.root(int(on[4, 24, 40]))
    assert root == linker.root(int(on[0, 24, 24])) and linker.tracks[root - 1].voxels == int((stack > 0).sum())
    _write_slices(tmp_path / "s.h5", stack)
    table = link_file(tmp_path / "s.h5", tmp_path / "p.h5", LinkSettings(absorb_fraction=0.6, min_voxels=1))
    with h5py.File(tmp_path / "p.h5") as f:
        written = f["labels"][...]
    assert set(np.unique(written)) == {0, 1} and table.voxels.tolist() == [int((written == 1).sum())]
    assert table.z_min.tolist() == [0] and table.z_max.tolist() == [8] and table.connected_6.all()
    # the same across a slice where the model saw nothing: the pieces' tracks are compared where last seen
    stack[6] = 0
    out = link_array(stack, LinkSettings(absorb_fraction=0.6, min_voxels=1, max_gap=1))
    assert set(np.unique(out)) == {0, 1}
    assert len(np.unique(link_array(stack, LinkSettings(absorb_fraction=0, min_voxels=1, max_gap=1)))) == 3


def test_a_rejoin_found_in_the_last_slice_is_carried_out():
    # the merge waits for a next slice; at the end of the stream there is none, and it is made
    from detachment.linking import link_array

    stack = _chipped_disk_stack()
    stack[3:8] = stack[3]  # cut into two pieces from slice 3 until the last one, whole only there
    out = link_array(stack, LinkSettings(absorb_fraction=0.6, min_voxels=1))
    assert set(np.unique(out)) == {0, 1} and np.array_equal(out > 0, stack > 0)


@ABSORB
def test_two_particles_merged_by_the_model_in_one_slice_stay_apart(absorb):
    stack = np.zeros((9, 40, 60), np.int32)
    for z in range(9):
        a, b = disk((40, 60), 20, 19, 10), disk((40, 60), 20, 38, 8) & ~disk((40, 60), 20, 19, 10)
        if z == 4:
            stack[z][a | b] = 1  # one instance over both
        else:
            stack[z][a], stack[z][b] = 1, 2
    out, linker = linked(per_slice_ids(stack), absorb_fraction=absorb)
    ids = linker.aliases()[out]
    assert len(np.unique(ids[ids > 0])) == 2
    assert ids[0, 20, 19] == ids[8, 20, 19] and ids[0, 20, 38] == ids[8, 20, 38] != ids[0, 20, 19]
    if absorb:  # side by side they are not convex; and they part again in the next slice
        out, linker = linked(per_slice_ids(stack), absorb_fraction=absorb, absorb_solidity=0.0)
        assert len(np.unique(linker.aliases()[out])) == 3


@ABSORB
def test_two_convex_neighbours_merged_by_the_model_in_one_slice_stay_apart(absorb):
    # two near-equal touching discs are convex enough together (solidity ~0.88) to pass for the pieces of
    # one particle; that they part again in the next slice is what keeps them apart
    stack = np.zeros((9, 40, 64), np.int32)
    a, b = disk((40, 64), 20, 20, 10), disk((40, 64), 20, 38, 9.5) & ~disk((40, 64), 20, 20, 10)
    for z in range(9):
        if z == 4:
            stack[z][a | b] = 1  # one instance over both
        else:
            stack[z][a], stack[z][b] = 1, 2
    from detachment.linking.masks import solidity_at_least

    assert solidity_at_least(a | b, 0.85)  # the convexity guard alone would let them merge
    out, linker = linked(per_slice_ids(stack), absorb_fraction=absorb)
    ids = linker.aliases()[out]
    assert len(np.unique(ids[ids > 0])) == 2
    assert ids[0, 20, 20] == ids[8, 20, 20] != ids[0, 20, 38] == ids[8, 20, 38]
    if absorb:  # the joined slice is shared out again: each disc's pixels there go to its own particle
        assert np.array_equal(ids[4] == ids[0, 20, 38], b) and np.array_equal(ids[4] == ids[0, 20, 20], a)
        assert [linker.tracks[ids[0, 20, x] - 1].voxels for x in (20, 38)] == [int(a.sum()) * 9, int(b.sum()) * 9]
    # where the whole instance goes on (the pieces of one particle) the merge is carried out
    whole = stack.copy()
    whole[4:][whole[4:] > 0] = 1
    out, linker = linked(per_slice_ids(whole), absorb_fraction=absorb)
    ids = linker.aliases()[out]
    assert len(np.unique(ids[ids > 0])) == (1 if absorb else 2)


@ABSORB
def test_a_small_particle_ending_under_a_bigger_one_stays_apart(absorb, monkeypatch):
    # a small particle's top lies under a bigger one that widens over it in the next slices: the bigger
    # one's instance holds the small one's last mask, but its own mask already explains it best
    stack = np.zeros((6, 48, 64), np.int32)
    for z in range(3):
        stack[z][disk((48, 64), 24, 14, 4)] = 1
        stack[z][disk((48, 64), 24, 30, 10)] = 2
    for z in range(3, 6):
        stack[z][disk((48, 64), 24, 27, 16)] = 1
    out, linker = linked(per_slice_ids(stack), absorb_fraction=absorb, min_iou=0.2)
    ids = linker.aliases()[out]
    assert len(np.unique(ids[ids > 0])) == 2 and ids[2, 24, 14] != ids[2, 24, 30] == ids[5, 24, 27]
    if absorb:  # without the gain and convexity guards the two would be joined
        monkeypatch.setattr("detachment.linking.repair.REJOIN_GAIN", 0.0)
        out, linker = linked(per_slice_ids(stack), absorb_fraction=absorb, min_iou=0.2, absorb_solidity=0.0)
        assert len(np.unique(linker.aliases()[out])) == 2


@pytest.mark.parametrize("seed", range(6))
def test_track_bookkeeping_matches_the_labels_on_messy_stacks(seed):
    # touching discs the model joins, cuts and misses at random: whatever the linker merges, keeps apart
    # or paints back, each particle's voxel count and bounding box hold its labelled voxels
    rng = np.random.default_rng(seed)
    shape = (14, 48, 96)
    stack = np.zeros(shape, np.int32)
    centres = [(24, 20), (24, 39), (24, 60), (10, 80)]
    radii = rng.uniform(7, 10, len(centres))
    for z in range(shape[0]):
        nxt = 1
        for k, ((cy, cx), r) in enumerate(zip(centres, radii)):
            d = disk(shape[1:], cy, cx + z // 4, r) & (stack[z] == 0)
            roll = rng.random()
            if roll < 0.1:
                continue  # missed in this slice
            if roll < 0.3 and k > 0 and (stack[z] == nxt - 1).any():
                stack[z][d] = nxt - 1  # joined with the previous disc
                continue
            if roll < 0.45:  # cut in two
                xx = np.mgrid[: shape[1], : shape[2]][1]
                stack[z][d & (xx < cx + z // 4)] = nxt
                stack[z][d & (xx > cx + z // 4 + 1)] = nxt + 1
                nxt += 2
                continue
            stack[z][d] = nxt
            nxt += 1
    out, linker = linked(stack, absorb_fraction=0.6)
    ids = linker.aliases()[out]
    assert (ids[stack > 0] > 0).all()  # every instance pixel labelled (gap fills may add some)
    table = linker.book.table()
    assert set(table.track) == set(np.unique(ids[ids > 0]).tolist())
    for row in table.itertuples():
        where = np.argwhere(ids == row.track)
        assert row.voxels == len(where)
        assert (where.min(0) >= [row.z_min, row.y_min, row.x_min]).all()
        assert (where.max(0) <= [row.z_max, row.y_max - 1, row.x_max - 1]).all()


def test_empty_slices_and_a_one_slice_volume():
    stack = np.zeros((5, 30, 30), np.int32)
    out, linker = linked(stack)
    assert not out.any() and linker.tracks == []
    one = np.zeros((1, 30, 30), np.int32)
    one[0][disk((30, 30), 15, 15, 5)] = 7
    out, _ = linked(one)
    assert set(np.unique(out)) == {0, 1}


@ABSORB
def test_greedy_stitcher_merges_where_hungarian_does_not(absorb):
    # a large particle above two small ones: greedy gives both small ones the big one's id; with
    # absorption both small ones lie inside the big one's last mask, but side by side they are not
    # convex, so the second one stays a new particle
    stack = np.zeros((4, 40, 60), np.int32)
    for z in range(2):
        stack[z][disk((40, 60), 20, 30, 14)] = 1
    for z in range(2, 4):
        stack[z][disk((40, 60), 20, 22, 7)] = 1
        stack[z][disk((40, 60), 20, 38, 7)] = 2
    greedy = np.stack(list(stitch_greedy(stack, threshold=0.2)))
    hung, _ = linked(stack, min_iou=0.2, absorb_fraction=absorb)
    assert len(np.unique(greedy[greedy > 0])) == 1
    assert len(np.unique(hung[hung > 0])) == 2


def _random_labels(rng, shape, n_max, sparse=False):
    """Salt-and-pepper or blob labels, 0 = background; ``sparse``: ids far apart (> 4x the pixel count)."""
    if rng.random() < 0.5:
        lab = rng.integers(0, rng.integers(1, n_max + 1) + 1, shape)
    else:
        from scipy import ndimage

        lab = ndimage.label(ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5)[0]
    return lab * 1_000_003 if sparse else lab


def test_fast_overlap_counting_equals_per_pair_masks():
    """The linker's one-pass counts, IoUs and boxes against the direct per-pair boolean masks."""
    from scipy import ndimage

    from detachment.linking.overlaps import LinkedSlice, SliceIndex, iou_matrix, pair_counts

    rng = np.random.default_rng(5)
    for trial in range(60):
        shape = tuple(int(v) for v in rng.integers(1, 50, 2))
        a = _random_labels(rng, shape, 12).astype(np.uint32)  # a previous slice's track ids
        b = _random_labels(rng, shape, 12, sparse=trial % 5 == 0).astype(np.int64)  # instance ids
        idx = SliceIndex(b)
        assert idx.ids.tolist() == np.unique(b[b > 0]).tolist()
        assert idx.sizes.tolist() == [np.count_nonzero(b == j) for j in idx.ids]
        rows = np.unique(a[a > 0])
        counts = pair_counts(idx, a.ravel()[idx.fg], rows)
        brute = np.array([[np.count_nonzero((a == i) & (b == j)) for j in idx.ids] for i in rows], np.int64)
        assert np.array_equal(counts, brute.reshape(len(rows), len(idx.ids)))
        a_sizes = np.array([np.count_nonzero(a == i) for i in rows], np.int64)
        brute_iou = [[np.count_nonzero((a == i) & (b == j)) / np.count_nonzero((a == i) | (b == j))
                      for j in idx.ids] for i in rows]
        assert np.array_equal(iou_matrix(counts, a_sizes, idx.sizes), np.reshape(brute_iou, counts.shape))
        dense = np.where(b > 0, np.searchsorted(idx.ids, b) + 1, 0)  # instance k -> k + 1
        assert idx.boxes() == ndimage.find_objects(dense, len(idx.ids))
        # a held slice, painted and relabelled: subsets of its tracks against subsets of the instances,
        # counted over the whole foreground, over the instances' pixels and over the tracks' pixels
        boxes = ndimage.find_objects(a)
        layer = LinkedSlice(0, a.copy(), {int(i): int(n) for i, n in zip(rows, a_sizes)},
                            {int(i): boxes[i - 1] for i in rows})
        if len(rows) and idx.ids.size:
            y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            box = (slice(y, min(y + 8, shape[0])), slice(x, min(x + 8, shape[1])))
            layer.paint(int(rows[0]), box, layer.labels[box] == 0)
            layer.relabel(int(rows[-1]), int(rows[0]))
            assert layer.sizes == {int(i): int(np.count_nonzero(layer.labels == i)) for i in layer.tracks()}
            for r, c in ((layer.tracks()[::2], idx.ids.tolist()[1::2]), (layer.tracks(), idx.ids.tolist()[:1]),
                         (layer.tracks()[:1], idx.ids.tolist())):
                want = np.reshape([[np.count_nonzero((layer.labels == i) & (b == j)) for j in c] for i in r],
                                  (len(r), len(c)))
                assert np.array_equal(idx._counts_at_cols(layer, r, c), want)
                assert np.array_equal(idx._counts_at_rows(layer, r, c), want)
                assert np.array_equal(idx.overlap(layer, r, c), want)
            idx.counts_under(layer)  # cached, then painted again: the cache must not be used
            layer.paint(int(rows[0]), (slice(0, shape[0]), slice(0, shape[1])), layer.labels == 0)
            r, c = layer.tracks(), idx.ids.tolist()
            want = np.reshape([[np.count_nonzero((layer.labels == i) & (b == j)) for j in c] for i in r],
                              (len(r), len(c)))
            assert np.array_equal(idx.overlap(layer, r, c), want)


def test_solidity_shortcut_decides_as_the_convex_hull():
    from detachment.linking.masks import solidity, solidity_at_least

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:30, :30]
    for trial in range(150):
        if trial % 3 == 0:  # discs, ellipses and pairs of them: around the threshold
            m = (yy - 15) ** 2 / rng.uniform(4, 80) + (xx - 15) ** 2 / rng.uniform(4, 80) <= 1
            m |= (yy - rng.integers(5, 25)) ** 2 + (xx - rng.integers(5, 25)) ** 2 <= rng.integers(0, 30)
        else:
            m = rng.random((rng.integers(1, 12), rng.integers(1, 12))) < rng.uniform(0.3, 1.0)
        if not m.any():
            continue
        for thr in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0):
            assert solidity_at_least(m, thr) == (solidity(m) >= thr)


def _write_slices(path, stack):
    with h5py.File(path, "w") as f:
        d = f.create_dataset("labels", data=stack.astype(np.uint32), chunks=(1,) + stack.shape[1:])
        d.attrs["voxel_size_um"] = np.ones(3)


def test_link_file_drops_small_renumbers_and_flags(tmp_path):
    stack = np.zeros((6, 40, 40), np.int32)
    for z in range(6):
        stack[z][disk((40, 40), 20, 20, 8)] = 1
    stack[2, 0:3, 0:3] = 2  # 9 voxels at the border: below min_voxels
    stack[3:6, 0:6, 30:36] = 5  # at the border, 108 voxels
    _write_slices(tmp_path / "slices.h5", stack)
    table = link_file(tmp_path / "slices.h5", tmp_path / "particles.h5", LinkSettings(min_voxels=50, slab=4))
    with h5py.File(tmp_path / "particles.h5") as f:
        out = f["labels"][...]
    assert sorted(np.unique(out)) == [0, 1, 2]
    assert table.label.tolist() == [1, 2]
    assert table.touches_border.tolist() == [True, True]  # z = 0 and z = 5 are volume faces too
    assert table.voxels.tolist() == [int((out == 1).sum()), 108]
    assert table.connected_6.all()


def test_link_file_greedy_method(tmp_path):
    stack = np.zeros((4, 30, 30), np.int32)
    for z in range(4):
        stack[z][disk((30, 30), 15, 15, 6)] = z + 1
    _write_slices(tmp_path / "s.h5", stack)
    table = link_file(tmp_path / "s.h5", tmp_path / "p.h5", LinkSettings(min_voxels=1), method="greedy")
    assert len(table) == 1
    with pytest.raises(ValueError, match="linking method"):
        link_file(tmp_path / "s.h5", tmp_path / "q.h5", LinkSettings(), method="magic")


def _peak_linking_memory(depth):
    rng = np.random.default_rng(0)
    base = np.zeros((64, 64), np.int32)
    for k in range(1, 9):
        cy, cx = rng.integers(8, 56, 2)
        base[disk((64, 64), cy, cx, 5) & (base == 0)] = k

    def slices():
        for _ in range(depth):
            yield base.copy()

    tracemalloc.start()
    it, _ = link_slices(slices(), LinkSettings())
    for _ in it:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_does_not_grow_with_depth():
    small, deep = _peak_linking_memory(16), _peak_linking_memory(128)
    assert deep < 1.5 * small
