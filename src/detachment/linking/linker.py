"""The streaming Hungarian linker: one slice at a time, in z order, with bounded memory."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from . import repair
from .assign import match_slice
from .settings import LinkSettings
from .tracks import Track, TrackBook


class SliceLinker:
    """Streaming Hungarian linker: feed slices in z order, get them back labelled with track ids.

    Parameters
    ----------
    s : LinkSettings
        The linking settings.

    Attributes
    ----------
    book : TrackBook
        The tracks so far; ``tracks`` is its list (``tracks[i - 1]`` = track ``i``).
    history : deque of (z, (y, x) uint32 array)
        The last ``s.max_gap + 1`` slices, labelled with track ids (gap filling and rejoining paint them).
    z : int
        Index of the next slice.
    """

    def __init__(self, s: LinkSettings):
        self.s = s
        self.book = TrackBook()
        self.history: deque = deque(maxlen=s.max_gap + 1)
        self.z = 0

    @property
    def tracks(self) -> list[Track]:
        """All tracks, ``tracks[i - 1]`` = track ``i``."""
        return self.book.tracks

    def add(self, labels2d: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """Link the next slice.

        Parameters
        ----------
        labels2d : (y, x) int array
            Instance ids of the slice, 0 = background.
        scores : 1D float array, optional
            Detection score indexed by instance id (NaN = none); tracks keep their maximum.

        Returns
        -------
        (y, x) uint32 array
            The slice labelled with track ids (1-based, 0 = background). It stays in :attr:`history`
            for ``max_gap`` more slices, during which gap filling and rejoining may still paint it.
        """
        z = self.z
        self.z += 1
        lab = np.asarray(labels2d)
        s = self.s
        a = match_slice(lab, self.history, self.book, s, z)
        if s.absorb_fraction > 0 and a.remaining:
            repair.absorb_fragments(lab, a, self.history, self.book, s, z)
        parents = repair.piece_parents(lab, a, self.history, s, z) if a.remaining and s.absorb_fraction > 0 \
            else {}
        for inst in sorted(a.remaining):
            a.assigned[inst] = self.book.start(z, born_in=parents.get(inst))
        lut = np.zeros(int(lab.max()) + 1 if lab.size else 1, np.uint32)
        for inst, track in a.assigned.items():
            lut[inst] = track
        out = lut[lab]
        self.book.record_links(a.assigned, a.ious, scores, z)
        self.book.record_slice(out, z)
        if s.absorb_fraction > 0:
            repair.rejoin_fragments(lab, a.assigned, self.history, self.book, s)
        if s.fill_gaps:
            for inst, track, prev_z in a.bridged:
                repair.fill_gap(self.history, self.book, track, prev_z, z, lab == inst)
        self.history.append((z, out))
        return out

    def root(self, track: int) -> int:
        """The track a track id was finally merged into (see :meth:`TrackBook.root`)."""
        return self.book.root(track)

    def aliases(self) -> np.ndarray:
        """Lookup table track id -> the track it was merged into (see :meth:`TrackBook.aliases`)."""
        return self.book.aliases()


def link_slices(slices: Iterable[np.ndarray], s: LinkSettings, scores: Iterable[np.ndarray] | None = None
                ) -> tuple[Iterator[np.ndarray], SliceLinker]:
    """Lazily link (y, x) slices in z order.

    A slice is handed out ``s.max_gap`` slices after it was added, once no later link can fill it.

    Parameters
    ----------
    slices : iterable of (y, x) int arrays
        Per-slice instance ids, 0 = background.
    s : LinkSettings
        The linking settings.
    scores : iterable of 1D float arrays, optional
        Per slice, detection scores indexed by instance id (NaN = none).

    Returns
    -------
    iterator of (y, x) uint32 arrays
        The slices labelled with track ids; apply :meth:`SliceLinker.aliases` once it is exhausted.
    SliceLinker
        The linker, whose tracks are complete once the iterator is exhausted.
    """
    linker = SliceLinker(s)

    def delayed():
        pending: deque = deque()
        for sl, sc in zip(slices, scores if scores is not None else itertools.repeat(None)):
            pending.append(linker.add(sl, sc))
            if len(pending) > s.max_gap:
                yield pending.popleft()
        yield from pending

    return delayed(), linker
