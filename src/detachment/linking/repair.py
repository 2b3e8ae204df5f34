"""Fragment repair: absorb pieces of a cut particle, rejoin their tracks, fill bridged gaps."""

from __future__ import annotations

import numpy as np

from .assign import Assignment
from .masks import labels_in, mask_iou, solidity_at_least, union_box
from .overlaps import SliceIndex
from .settings import LinkSettings
from .tracks import TrackBook

# a fragment's track joins the track continuing over it only if the union matches the continuing
# instance this much better (IoU) than that track alone
REJOIN_GAIN = 0.1


def _pieces(cur: SliceIndex, remaining: set, history, book: TrackBook, s: LinkSettings) -> tuple[dict, dict]:
    """Track -> the leftover instances at least ``s.absorb_fraction`` inside its last mask, and track -> the
    slice of that mask (tracks of nearer slices first, instances ascending)."""
    rem = sorted(remaining)
    rem_sizes = cur.sizes[cur.positions(rem)]
    pieces: dict[int, list[int]] = {}
    last_z: dict[int, int] = {}
    for layer in reversed(history):  # nearest slice first: its tracks choose first
        counts = cur.overlap(layer, layer.tracks(), rem)  # every track there x the leftover instances
        if not counts.any():  # the usual case: a new particle's first slice, on background
            continue
        hit = layer.tracks()[counts.any(1)]
        alive = book.last_seen_in(hit, layer.z)
        if not alive:
            continue
        counts = counts[np.searchsorted(layer.tracks(), alive)]
        ii, jj = np.nonzero(counts)  # row-major: tracks ascending, then instances
        inside = counts[ii, jj] / rem_sizes[jj]
        for i, j in zip(ii[inside >= s.absorb_fraction].tolist(), jj[inside >= s.absorb_fraction].tolist()):
            pieces.setdefault(alive[i], []).append(rem[j])
            last_z[alive[i]] = layer.z
    return pieces, last_z


def _choose_pieces(target, lab_c, own: list, cand: list, s: LinkSettings) -> tuple[np.ndarray, list]:
    """The candidate pieces that join a track: all at once if that works, else one by one, largest first.

    Returns the track's mask in this slice with the pieces taken (cropped like ``target``) and the pieces.
    """
    mask = labels_in(lab_c, own)
    sizes = {j: np.count_nonzero(lab_c == j) for j in cand}

    def joins(trial, before):  # the cheap test first: the convex hull is the costly one
        return mask_iou(trial, target) > mask_iou(before, target) and solidity_at_least(trial, s.absorb_solidity)

    # all pieces at once first: a particle cut in three is convex only when whole again
    whole = mask | labels_in(lab_c, cand)
    if cand and joins(whole, mask):
        return whole, cand
    taken = []
    for j in sorted(cand, key=lambda j: -sizes[j]):
        trial = mask | (lab_c == j)
        if joins(trial, mask):
            mask = trial
            taken.append(j)
    return mask, taken


def absorb_fragments(cur: SliceIndex, a: Assignment, history, book: TrackBook, s: LinkSettings, z: int) -> None:
    """Join leftover instances that are fragments of a continuing particle to its track (``a`` in place).

    A leftover instance ``j`` joins track ``t`` when at least ``s.absorb_fraction`` of ``j`` lies inside
    ``t``'s last mask, the mask of ``t`` in this slice with ``j`` added stays convex (solidity ≥
    ``s.absorb_solidity``) and matches ``t``'s last mask better than without ``j``. A track not yet
    continued in this slice takes a group of such pieces only if together they reach ``s.min_iou``.

    Parameters
    ----------
    cur : SliceIndex
        The instances of slice ``z``.
    a : Assignment
        The slice's assignment after matching; updated in place.
    history : sequence of LinkedSlice
        The previous slices, oldest first.
    book : TrackBook
        The tracks; gap statistics are updated.
    s : LinkSettings
        ``absorb_fraction``, ``absorb_solidity`` and ``min_iou`` are used.
    z : int
        Slice index of ``cur``.
    """
    pieces, last_z = _pieces(cur, a.remaining, history, book, s)
    layers = {layer.z: layer for layer in history}
    boxes = cur.boxes()
    for t, cand in pieces.items():
        prev_z = last_z[t]
        own = [i for i, tr in a.assigned.items() if tr == t]
        # crop to the track's last mask, its instances here and the candidate pieces
        box = union_box([layers[prev_z].boxes[t]] + [boxes[k] for k in cur.positions(own + cand)])
        target, lab_c = layers[prev_z].labels[box] == t, cur.lab[box]
        cand = [j for j in cand if j in a.remaining]  # not taken by a track of a nearer slice
        mask, taken = _choose_pieces(target, lab_c, own, cand, s)
        if not taken or (not own and mask_iou(mask, target) < s.min_iou):
            continue
        for j in taken:
            a.remaining.discard(j)
            a.assigned[j] = t
        if not own:
            a.ious[taken[0]] = mask_iou(mask, target)
            book[t].gaps += z - prev_z - 1
            if z - prev_z > 1:
                a.bridged.extend((j, t, prev_z) for j in taken)


def piece_parents(cur: SliceIndex, a: Assignment, history, s: LinkSettings, z: int) -> dict[int, int]:
    """Leftover instance -> the track continuing here whose slice z-1 mask holds at least
    ``s.absorb_fraction`` of it (a piece the model cut off a particle it saw whole the slice before).

    Parameters
    ----------
    cur : SliceIndex
        The instances of slice ``z``.
    a : Assignment
        The slice's assignment after matching and absorption.
    history : sequence of LinkedSlice
        The previous slices, oldest first.
    s : LinkSettings
        ``absorb_fraction`` is used.
    z : int
        Slice index of ``cur``.

    Returns
    -------
    dict
        Instance id -> track id (:attr:`Track.born_in` of the track the instance starts).
    """
    if not history or history[-1].z != z - 1:
        return {}
    layer = history[-1]
    cont = sorted(set(a.assigned.values()) & layer.sizes.keys())  # tracks continuing, present in z-1
    rem = sorted(a.remaining)
    counts = cur.overlap(layer, cont, rem).T  # instances x tracks
    rem_sizes = cur.sizes[cur.positions(rem)]
    out = {}
    for j, i in zip(*np.nonzero(counts)):  # instances ascending, then tracks: the last track wins
        if counts[j, i] >= s.absorb_fraction * rem_sizes[j]:
            out[rem[j]] = cont[i]
    return out


def rejoin_fragments(cur: SliceIndex, assigned: dict, history, book: TrackBook, s: LinkSettings
                     ) -> list[tuple[int, int]]:
    """Tracks that ended under an instance continuing another track and may be a piece of it.

    Where a per-slice model cut a particle into pieces and the pieces become whole again, the whole
    instance continues one piece's track and the other piece's track would end there. A track ``e`` last
    seen in slice z' (z-1 or, across a gap, down to z-1-``max_gap``, nearest first) is proposed for a merge
    into track ``t`` when at least ``s.absorb_fraction`` of ``e``'s last mask lies inside ``t``'s instance
    in this slice, the union of ``e`` and ``t`` in z' matches this instance at least :data:`REJOIN_GAIN`
    IoU better than ``t`` alone, and either that union is convex (solidity ≥ ``s.absorb_solidity``) or
    one of the two tracks began as a piece cut off the other (:attr:`Track.born_in`). The merge waits for
    the next slice (:func:`confirm_rejoins`): two particles the model joined in one slice part again.

    Parameters
    ----------
    cur : SliceIndex
        The instances of the slice being linked.
    assigned : dict
        Its instance id -> track id, complete.
    history : sequence of LinkedSlice
        The previous slices, oldest first.
    book : TrackBook
        The tracks (read only).
    s : LinkSettings
        ``absorb_fraction`` and ``absorb_solidity`` are used.

    Returns
    -------
    list of (int, int)
        The proposed merges (``e``, ``t``), for :func:`confirm_rejoins` after the next slice.
    """
    if not assigned:
        return []
    inst_of: dict[int, list[int]] = {}
    for i, tr in assigned.items():
        inst_of.setdefault(tr, []).append(i)
    proposed: list[tuple[int, int]] = []
    for layer in reversed(history):  # nearest slice first
        proposed += _rejoin_from(layer, cur, assigned, inst_of, book, s)
    return proposed


def _rejoin_from(layer, cur: SliceIndex, assigned: dict, inst_of: dict, book: TrackBook, s: LinkSettings
                 ) -> list[tuple[int, int]]:
    """:func:`rejoin_fragments` for the tracks last seen in slice ``layer``."""
    ended = book.last_seen_in(layer.tracks(), layer.z)  # those under ``cur`` count below
    if not ended:
        return []
    counts = cur.overlap(layer, ended, cur.ids.tolist())
    ii, jj = np.nonzero(counts)  # row-major: tracks ascending, then instances
    best: dict[int, tuple[int, float]] = {}
    for i, j in zip(ii.tolist(), jj.tolist()):
        e = ended[i]
        f = counts[i, j] / layer.sizes[e]  # of e's last mask
        if f >= s.absorb_fraction and f > best.get(e, (0, 0.0))[1]:
            best[e] = (int(cur.ids[j]), f)
    prev, boxes = layer.labels, cur.boxes()
    proposed = []
    for e, (inst, _) in sorted(best.items()):
        t = assigned.get(inst)  # e ended before this slice, so t != e
        if t is None or t not in layer.sizes:  # t has no mask in that slice
            continue
        # crop to t and e there and t's instances here
        box = union_box([layer.boxes[t], layer.boxes[e]] + [boxes[k] for k in cur.positions(inst_of[t])])
        before, here = prev[box] == t, labels_in(cur.lab[box], inst_of[t])
        both = before | (prev[box] == e)
        gain = mask_iou(both, here) - mask_iou(before, here)
        kin = book[e].born_in == t or book[t].born_in == e
        if gain >= REJOIN_GAIN and (kin or solidity_at_least(both, s.absorb_solidity)):
            proposed.append((e, t))
    return proposed


def confirm_rejoins(proposed: list[tuple[int, int]], history, book: TrackBook, z: int | None
                    ) -> dict[int, int]:
    """Carry out the merges :func:`rejoin_fragments` proposed one slice before, unless the fragment's track
    went on in slice ``z`` (a gap closed onto it): then the two were particles the model joined in one slice.

    Parameters
    ----------
    proposed : list of (int, int)
        (fragment, into) track ids.
    history : sequence of LinkedSlice
        The slices held; the fragment's last slice is relabelled in place when still held (slices already
        handed out go through :meth:`TrackBook.aliases`).
    book : TrackBook
        The tracks; merges are recorded.
    z : int or None
        The slice just linked; None at the end of the stream (nothing can go on).

    Returns
    -------
    dict
        Fragment -> into, for the merges not carried out (the fragment's gap fill may take its pixels
        back from ``into``'s instance, :func:`fill_gap`).
    """
    layers = {layer.z: layer for layer in history}
    kept_apart = {}
    for e, t in proposed:
        e, t = book.root(e), book.root(t)
        if e == t:
            continue
        if z is not None and book[e].last_z == z:
            kept_apart[e] = t
            continue
        layer = layers.get(book[e].last_z)
        if layer is not None:
            layer.relabel(e, t)
        book.merge(e, t)
    return kept_apart


def fill_gap(cur: SliceIndex, inst: int, history, book: TrackBook, track: int, prev_z: int, z: int,
             over: int | None = None) -> None:
    """Paint ``track`` into the slices strictly between ``prev_z`` and ``z`` where its masks in both end
    slices overlap and the gap slice is unlabelled (or labelled ``over``).

    Parameters
    ----------
    cur : SliceIndex
        The instances of slice ``z``.
    inst : int
        The track's instance in slice ``z``.
    history : sequence of LinkedSlice
        The previous slices, holding ``prev_z`` .. z-1 (not yet handed out); painted in place.
    book : TrackBook
        The tracks; ``track``'s voxels and bounding box grow (``over``'s voxels shrink).
    track : int
        Track id, bridged from slice ``prev_z`` to slice ``z``.
    prev_z, z : int
        Slice indices of the gap's ends.
    over : int, optional
        A track whose pixels the fill takes over: the one whose instance joined ``track``'s particle and
        another in a gap slice (:func:`confirm_rejoins`).
    """
    layers = {layer.z: layer for layer in history}
    box = cur.boxes()[int(cur.positions([inst])[0])]  # the fill lies inside the instance
    shared = (layers[prev_z].labels[box] == track) & (cur.lab[box] == inst)
    t = book[track]
    for gz in range(prev_z + 1, z):
        gap = layers[gz].labels[box]
        fill = shared & ((gap == 0) | (gap == over) if over is not None else gap == 0)
        n = int(fill.sum())
        if n == 0:
            continue
        for other, k in layers[gz].paint(track, box, fill).items():
            book[other].voxels -= k
        t.voxels += n
        ys, xs = np.nonzero(fill)
        y0, x0 = box[0].start, box[1].start
        t.grow([gz, ys.min() + y0, xs.min() + x0], [gz + 1, ys.max() + 1 + y0, xs.max() + 1 + x0])
