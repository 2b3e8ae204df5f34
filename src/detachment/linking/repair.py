"""Fragment repair: absorb pieces of a cut particle, rejoin their tracks, fill bridged gaps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from ..metrics import overlap
from .assign import Assignment
from .settings import LinkSettings
from .tracks import TrackBook

# a fragment's track joins the track continuing over it only if the union matches the continuing
# instance this much better (IoU) than that track alone
REJOIN_GAIN = 0.1


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of equal shape (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area of a non-empty 2D boolean mask, computed on its bounding box."""
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = mask[sl]
    return float(crop.sum() / max(convex_hull_image(crop).sum(), 1))


def _pieces(lab, remaining: set, history, book: TrackBook, s: LinkSettings) -> tuple[dict, dict]:
    """Track -> the leftover instances at least ``s.absorb_fraction`` inside its last mask, and track -> the
    slice of that mask (tracks of nearer slices first)."""
    cur = np.where(np.isin(lab, list(remaining)), lab, 0)
    fg = cur > 0
    pieces: dict[int, list[int]] = {}
    last_z: dict[int, int] = {}
    for prev_z, prev in reversed(history):  # nearest slice first: its tracks choose first
        under = prev[fg]
        if not under.any():  # the usual case: a new particle's first slice, on background
            continue
        alive = [t for t in np.unique(under[under > 0]) if book[t].last_z == prev_z]
        if not alive:
            continue
        ov = overlap(np.where(np.isin(prev, alive), prev, 0), cur)
        inside = ov.counts / ov.b_sizes[ov.pairs[:, 1]]
        for (i, j), f in zip(ov.pairs, inside):
            if f >= s.absorb_fraction:
                t = int(ov.a_ids[i])
                pieces.setdefault(t, []).append(int(ov.b_ids[j]))
                last_z[t] = prev_z
    return pieces, last_z


def _choose_pieces(target, lab_c, own: list, cand: list, s: LinkSettings) -> tuple[np.ndarray, list]:
    """The candidate pieces that join a track: all at once if that works, else one by one, largest first.

    Returns the track's mask in this slice with the pieces taken (cropped like ``target``) and the pieces.
    """
    mask = np.isin(lab_c, own)
    sizes = {j: np.count_nonzero(lab_c == j) for j in cand}

    def joins(trial, before):
        return solidity(trial) >= s.absorb_solidity and mask_iou(trial, target) > mask_iou(before, target)

    # all pieces at once first: a particle cut in three is convex only when whole again
    whole = mask | np.isin(lab_c, cand)
    if cand and joins(whole, mask):
        return whole, cand
    taken = []
    for j in sorted(cand, key=lambda j: -sizes[j]):
        trial = mask | (lab_c == j)
        if joins(trial, mask):
            mask = trial
            taken.append(j)
    return mask, taken


def absorb_fragments(lab, a: Assignment, history, book: TrackBook, s: LinkSettings, z: int) -> None:
    """Join leftover instances that are fragments of a continuing particle to its track (``a`` in place).

    A leftover instance ``j`` joins track ``t`` when at least ``s.absorb_fraction`` of ``j`` lies inside
    ``t``'s last mask, the mask of ``t`` in this slice with ``j`` added stays convex (solidity ≥
    ``s.absorb_solidity``) and matches ``t``'s last mask better than without ``j``. A track not yet
    continued in this slice takes a group of such pieces only if together they reach ``s.min_iou``.

    Parameters
    ----------
    lab : (y, x) int array
        Instance ids of slice ``z``, 0 = background.
    a : Assignment
        The slice's assignment after matching; updated in place.
    history : sequence of (z, (y, x) uint32 array)
        The previous slices (oldest first) labelled with track ids.
    book : TrackBook
        The tracks; gap statistics are updated.
    s : LinkSettings
        ``absorb_fraction``, ``absorb_solidity`` and ``min_iou`` are used.
    z : int
        Slice index of ``lab``.
    """
    pieces, last_z = _pieces(lab, a.remaining, history, book, s)
    slices = dict(history)
    for t, cand in pieces.items():
        prev_z = last_z[t]
        own = [i for i, tr in a.assigned.items() if tr == t]
        # crop to the track's last mask, its instances here and the candidate pieces
        box = ndimage.find_objects(((slices[prev_z] == t) | np.isin(lab, own + cand)).astype(np.uint8))[0]
        target, lab_c = slices[prev_z][box] == t, lab[box]
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


def piece_parents(lab, a: Assignment, history, s: LinkSettings, z: int) -> dict[int, int]:
    """Leftover instance -> the track continuing here whose slice z-1 mask holds at least
    ``s.absorb_fraction`` of it (a piece the model cut off a particle it saw whole the slice before).

    Parameters
    ----------
    lab : (y, x) int array
        Instance ids of slice ``z``, 0 = background.
    a : Assignment
        The slice's assignment after matching and absorption.
    history : sequence of (z, (y, x) uint32 array)
        The previous slices (oldest first) labelled with track ids.
    s : LinkSettings
        ``absorb_fraction`` is used.
    z : int
        Slice index of ``lab``.

    Returns
    -------
    dict
        Instance id -> track id (:attr:`Track.born_in` of the track the instance starts).
    """
    if not history or history[-1][0] != z - 1:
        return {}
    cont = set(a.assigned.values())
    prev = history[-1][1]
    ov = overlap(np.where(np.isin(lab, list(a.remaining)), lab, 0), prev)
    out = {}
    for (i, j), c in zip(ov.pairs, ov.counts):
        t = int(ov.b_ids[j])
        if t in cont and c >= s.absorb_fraction * ov.a_sizes[i]:
            out[int(ov.a_ids[i])] = t
    return out


def rejoin_fragments(lab, assigned: dict, history, book: TrackBook, s: LinkSettings) -> None:
    """Merge a track that ended under an instance continuing another track into that track.

    Where a per-slice model cut a particle into pieces and the pieces become whole again, the whole
    instance continues one piece's track and the other piece's track would end there. A track ``e`` last
    seen in slice z' (z-1 or, across a gap, down to z-1-``max_gap``, nearest first) is merged into track
    ``t`` when at least ``s.absorb_fraction`` of ``e``'s last mask lies inside ``t``'s instance in this
    slice, the union of ``e`` and ``t`` in z' matches this instance at least :data:`REJOIN_GAIN` IoU
    better than ``t`` alone, and either that union is convex (solidity ≥ ``s.absorb_solidity``) or one
    of the two tracks began as a piece cut off the other (:attr:`Track.born_in`).

    Parameters
    ----------
    lab : (y, x) int array
        Instance ids of the slice being linked, 0 = background.
    assigned : dict
        Its instance id -> track id, complete.
    history : sequence of (z, (y, x) uint32 array)
        The previous slices (oldest first) labelled with track ids; merged tracks are relabelled in place
        (slices already handed out go through :meth:`TrackBook.aliases`).
    book : TrackBook
        The tracks; merges are recorded.
    s : LinkSettings
        ``absorb_fraction`` and ``absorb_solidity`` are used.
    """
    if not assigned:
        return
    inst_of = {t: [i for i, tr in assigned.items() if tr == t] for t in set(assigned.values())}
    for prev_z, prev in reversed(history):  # nearest slice first
        _rejoin_from(prev_z, prev, lab, assigned, inst_of, book, s)


def _rejoin_from(prev_z: int, prev, lab, assigned: dict, inst_of: dict, book: TrackBook, s: LinkSettings
                 ) -> None:
    """:func:`rejoin_fragments` for the tracks last seen in slice ``prev_z``."""
    under = prev[lab > 0]
    ended = [e for e in np.unique(under[under > 0]) if book[e].last_z == prev_z]
    if not ended:
        return
    ov = overlap(np.where(np.isin(prev, ended), prev, 0), lab)
    best: dict[int, tuple[int, float]] = {}
    for (i, j), c in zip(ov.pairs, ov.counts):
        e, inst = int(ov.a_ids[i]), int(ov.b_ids[j])
        f = c / ov.a_sizes[i]
        if f >= s.absorb_fraction and f > best.get(e, (0, 0.0))[1]:
            best[e] = (inst, f)
    for e, (inst, _) in sorted(best.items()):
        t = assigned.get(inst)  # e ended before this slice, so t != e
        if t is None:
            continue
        here = np.isin(lab, inst_of[t])
        before = prev == t
        if not before.any():
            continue
        both = before | (prev == e)
        box = ndimage.find_objects((both | here).astype(np.uint8))[0]
        gain = mask_iou(both[box], here[box]) - mask_iou(before[box], here[box])
        kin = book[e].born_in == t or book[t].born_in == e
        if gain < REJOIN_GAIN or not (kin or solidity(both[box]) >= s.absorb_solidity):
            continue
        prev[prev == e] = t  # relabel in place; slices already handed out go through aliases
        book.merge(e, t)


def fill_gap(history, book: TrackBook, track: int, prev_z: int, z: int, current: np.ndarray) -> None:
    """Paint ``track`` into the slices strictly between ``prev_z`` and ``z`` where its masks in both end
    slices overlap and the gap slice is unlabelled.

    Parameters
    ----------
    history : sequence of (z, (y, x) uint32 array)
        The previous slices, holding ``prev_z`` .. z-1 (not yet handed out); painted in place.
    book : TrackBook
        The tracks; ``track``'s voxels and bounding box grow.
    track : int
        Track id, bridged from slice ``prev_z`` to slice ``z``.
    prev_z, z : int
        Slice indices of the gap's ends.
    current : (y, x) bool array
        The track's instance in slice ``z``.
    """
    slices = dict(history)
    shared = (slices[prev_z] == track) & current
    t = book[track]
    for gz in range(prev_z + 1, z):
        gap = slices[gz]
        fill = shared & (gap == 0)
        n = int(fill.sum())
        if n == 0:
            continue
        gap[fill] = track
        t.voxels += n
        ys, xs = np.nonzero(fill)
        t.grow([gz, ys.min(), xs.min()], [gz + 1, ys.max() + 1, xs.max() + 1])
