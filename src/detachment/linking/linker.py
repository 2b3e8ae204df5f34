"""The streaming Hungarian linker: one slice at a time, in z order, with bounded memory."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from . import repair
from .assign import match_slice
from .overlaps import LinkedSlice, SliceIndex
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
    history : deque of LinkedSlice
        The last ``s.max_gap + 1`` slices, labelled with track ids (gap filling and rejoining paint them).
    z : int
        Index of the next slice.
    """

    def __init__(self, s: LinkSettings):
        self.s = s
        self.book = TrackBook()
        self.history: deque = deque(maxlen=s.max_gap + 1)
        self.z = 0
        self.proposed: list[tuple[int, int]] = []  # merges waiting for the next slice

    @property
    def tracks(self) -> list[Track]:
        """All tracks so far.

        Returns
        -------
        list of Track
            ``tracks[i - 1]`` is track ``i``.
        """
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
        s, book, history = self.s, self.book, self.history
        cur = SliceIndex(np.asarray(labels2d))
        a = match_slice(cur, history, book, s, z)
        if s.absorb_fraction > 0 and a.remaining:
            repair.absorb_fragments(cur, a, history, book, s, z)
        parents = repair.piece_parents(cur, a, history, s, z) if a.remaining and s.absorb_fraction > 0 else {}
        for inst in sorted(a.remaining):
            a.assigned[inst] = book.start(z, born_in=parents.get(inst))
        track_of = np.fromiter(map(a.assigned.__getitem__, cur.ids.tolist()), np.uint32, len(cur.ids))
        out = np.zeros(cur.lab.shape, np.uint32)
        out.ravel()[cur.fg] = track_of[cur.index]
        book.record_links(a.assigned, a.ious, scores, z)
        sizes, boxes = book.record_slice(z, track_of.tolist(), cur.sizes.tolist(), cur.boxes())
        kept_apart: dict[int, int] = {}
        if s.absorb_fraction > 0:
            kept_apart = repair.confirm_rejoins(self.proposed, history, book, z)
            self.proposed = repair.rejoin_fragments(cur, a.assigned, history, book, s)
        if s.fill_gaps:
            for inst, track, prev_z in a.bridged:
                repair.fill_gap(cur, inst, history, book, track, prev_z, z, kept_apart.get(track))
        history.append(LinkedSlice(z, out, sizes, boxes))
        return out

    def finish(self) -> None:
        """End the stream: carry out the merges still waiting for a next slice."""
        repair.confirm_rejoins(self.proposed, self.history, self.book, None)
        self.proposed = []

    def root(self, track: int) -> int:
        """The track a track was finally merged into (:meth:`TrackBook.root`).

        Parameters
        ----------
        track : int
            A track id.

        Returns
        -------
        int
            Its root's track id (itself when never merged).
        """
        return self.book.root(track)

    def aliases(self) -> np.ndarray:
        """Lookup table track id -> the track it was finally merged into (:meth:`TrackBook.aliases`).

        Returns
        -------
        (n_tracks + 1,) uint32 array
            Identity for tracks never merged; index 0 (background) maps to 0.
        """
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
        linker.finish()
        yield from pending

    return delayed(), linker
