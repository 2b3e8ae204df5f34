"""Assignment core: match the instances of slice z to the tracks last seen in the slices before it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .overlaps import SliceIndex, iou_matrix
from .settings import LinkSettings
from .tracks import TrackBook


@dataclass
class Assignment:
    """Which track each instance of one slice joins, built up by matching and fragment absorption.

    Parameters
    ----------
    remaining : set of int
        Instance ids not yet assigned (they start new tracks unless absorbed).
    assigned : dict
        Instance id -> track id.
    ious : dict
        Instance id -> IoU of its link to the track's last mask (set for the instance that continues it).
    bridged : list of (instance, track, previous z)
        Links across missing slices, for gap filling.
    """

    remaining: set[int]
    assigned: dict[int, int] = field(default_factory=dict)
    ious: dict[int, float] = field(default_factory=dict)
    bridged: list[tuple[int, int, int]] = field(default_factory=list)

    def add_links(self, insts: list[int], tracks: list[int], ious: list[float], book: TrackBook, prev_z: int,
                  z: int) -> None:
        """Assign instances of slice ``z`` to tracks last seen in slice ``prev_z``, counting the gap.

        Parameters
        ----------
        insts, tracks : lists of int
            Instance ids and their track ids.
        ious : list of float
            IoU of each link.
        book : TrackBook
            The tracks; the bridged gap (slices) is added to their statistics.
        prev_z, z : int
            Slice indices, ``prev_z < z``.
        """
        self.assigned.update(zip(insts, tracks))
        self.ious.update(zip(insts, ious))
        self.remaining.difference_update(insts)
        if z - prev_z > 1:
            for inst, track in zip(insts, tracks):
                book[track].gaps += z - prev_z - 1
                self.bridged.append((inst, track, prev_z))


def similarity(counts: np.ndarray, a_sizes: np.ndarray, b_sizes: np.ndarray, how: str) -> np.ndarray:
    """Dense similarity of tracks' last masks (rows) and instances (columns).

    Parameters
    ----------
    counts : (n_a, n_b) int array
        Shared pixels of each pair (:meth:`.overlaps.SliceIndex.overlap`).
    a_sizes, b_sizes : (n_a,), (n_b,) int arrays
        Pixels of each mask and each instance.
    how : {"iou", "overlap"}
        ``"iou"``: |a ∩ b| / |a ∪ b|; ``"overlap"``: |a ∩ b| / min(|a|, |b|).

    Returns
    -------
    (n_a, n_b) float array
        Similarity in [0, 1]; 0 for pairs that share no pixel.

    Raises
    ------
    ValueError
        When ``how`` is neither.
    """
    if how == "iou":
        return iou_matrix(counts, a_sizes, b_sizes)
    if how == "overlap":
        return counts / np.minimum(a_sizes[:, None], b_sizes[None, :])
    raise ValueError(f"link.cost: {how!r} is not 'iou' or 'overlap'")


def match_slice(cur: SliceIndex, history, book: TrackBook, s: LinkSettings, z: int) -> Assignment:
    """Hungarian matching of slice ``z`` to the tracks, with gap closing.

    The instances are matched to the tracks last seen in slice z-1 by
    :func:`scipy.optimize.linear_sum_assignment` on 1 - similarity, pairs below ``s.min_iou``
    rejected; instances left over are offered to the tracks last seen in z-2, z-3, ... (nearest first).

    Parameters
    ----------
    cur : SliceIndex
        The instances of slice ``z``.
    history : sequence of LinkedSlice
        The previous slices, oldest first.
    book : TrackBook
        The tracks; gap statistics are updated.
    s : LinkSettings
        ``min_iou`` and ``cost`` are used.
    z : int
        Slice index of ``cur``.

    Returns
    -------
    Assignment
        The instances matched and those left over.
    """
    a = Assignment(remaining=set(cur.ids.tolist()))
    for layer in reversed(history):  # nearest slice first
        if not a.remaining:
            break
        # only tracks whose last appearance is this previous slice may continue from it
        alive = book.last_seen_in(layer.tracks(), layer.z)
        if not alive:
            continue
        rem = sorted(a.remaining)
        counts = cur.overlap(layer, alive, rem)
        if not counts.any():
            continue
        a_sizes = np.array([layer.sizes[t] for t in alive], np.int64)
        b_sizes = cur.sizes[cur.positions(rem)]
        sim = similarity(counts, a_sizes, b_sizes, s.cost)
        iou = sim if s.cost == "iou" else iou_matrix(counts, a_sizes, b_sizes)
        r, c = linear_sum_assignment(1.0 - sim)
        keep = (sim[r, c] >= s.min_iou) & (sim[r, c] > 0)
        r, c = r[keep], c[keep]
        a.add_links([rem[j] for j in c.tolist()], [alive[i] for i in r.tolist()], iou[r, c].tolist(),
                    book, layer.z, z)
    return a
