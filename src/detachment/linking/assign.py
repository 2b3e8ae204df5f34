"""Assignment core: match the instances of slice z to the tracks last seen in the slices before it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..metrics import overlap
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

    def link(self, inst: int, track: int, book: TrackBook, prev_z: int, z: int) -> None:
        """Assign ``inst`` of slice ``z`` to ``track``, last seen in slice ``prev_z``, counting the gap.

        Parameters
        ----------
        inst, track : int
            Instance id and track id.
        book : TrackBook
            The tracks; ``track``'s bridged gap (slices) is added to its statistics.
        prev_z, z : int
            Slice indices, ``prev_z < z``.
        """
        self.assigned[inst] = track
        self.remaining.discard(inst)
        book[track].gaps += z - prev_z - 1
        if z - prev_z > 1:
            self.bridged.append((inst, track, prev_z))


def similarity(ov, how: str) -> np.ndarray:
    """Dense similarity of the labels present in an overlap table (small per slice).

    Parameters
    ----------
    ov : detachment.metrics.Overlap
        Overlap of the tracks' last masks (``a``) with the instances (``b``).
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
        return ov.iou_matrix()
    if how == "overlap":
        m = np.zeros((len(ov.a_ids), len(ov.b_ids)))
        ia, ib = ov.pairs[:, 0], ov.pairs[:, 1]
        m[ia, ib] = ov.counts / np.minimum(ov.a_sizes[ia], ov.b_sizes[ib])
        return m
    raise ValueError(f"link.cost: {how!r} is not 'iou' or 'overlap'")


def match_slice(lab: np.ndarray, history, book: TrackBook, s: LinkSettings, z: int) -> Assignment:
    """Hungarian matching of slice ``z`` to the tracks, with gap closing.

    The instances are matched to the tracks last seen in slice z-1 by
    :func:`scipy.optimize.linear_sum_assignment` on 1 - similarity, pairs below ``s.min_iou``
    rejected; instances left over are offered to the tracks last seen in z-2, z-3, ... (nearest first).

    Parameters
    ----------
    lab : (y, x) int array
        Instance ids of slice ``z``, 0 = background.
    history : sequence of (z, (y, x) uint32 array)
        The previous slices (oldest first) labelled with track ids.
    book : TrackBook
        The tracks; gap statistics are updated.
    s : LinkSettings
        ``min_iou`` and ``cost`` are used.
    z : int
        Slice index of ``lab``.

    Returns
    -------
    Assignment
        The instances matched and those left over.
    """
    a = Assignment(remaining=set(np.unique(lab[lab > 0]).tolist()))
    for prev_z, prev in reversed(history):  # nearest slice first
        if not a.remaining:
            break
        cur = np.where(np.isin(lab, list(a.remaining)), lab, 0)
        # only tracks whose last appearance is this previous slice may continue from it
        alive = np.array([t for t in np.unique(prev[prev > 0]) if book[t].last_z == prev_z])
        if alive.size == 0:
            continue
        ov = overlap(np.where(np.isin(prev, alive), prev, 0), cur)
        if len(ov.counts) == 0:
            continue
        sim = similarity(ov, s.cost)
        iou = sim if s.cost == "iou" else ov.iou_matrix()
        r, c = linear_sum_assignment(1.0 - sim)
        for i, j in zip(r, c):
            if sim[i, j] >= s.min_iou and sim[i, j] > 0:
                inst = int(ov.b_ids[j])
                a.ious[inst] = float(iou[i, j])
                a.link(inst, int(ov.a_ids[i]), book, prev_z, z)
    return a
