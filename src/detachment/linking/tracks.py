"""Track bookkeeping: the tracks of one linking run, their aliases and per-track statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: columns of the per-track table handed to :func:`detachment.linking.finalize`
TABLE_COLUMNS = ["track", "z_min", "z_max", "y_min", "y_max", "x_min", "x_max", "voxels", "mean_link_iou",
                 "gaps_bridged", "max_score"]


@dataclass
class Track:
    """One 3D particle being linked.

    Parameters
    ----------
    first_z, last_z : int
        First and last slice (z index) holding one of its instances; ``last_z`` = -1 once merged away.
    voxels : int
        Voxels so far (gap fills included).
    iou_sum : float
        Sum of the IoUs of its slice-to-slice links; ``links`` : int, their number.
    gaps : int
        Slices bridged by gap closing.
    max_score : float
        Best detection score of its instances (NaN = no score).
    bbox_lo, bbox_hi : list of 3 numbers
        Bounding box (z, y, x) in voxels, ``bbox_hi`` exclusive; ±inf while empty.
    merged_into : int or None
        The track (1-based id) this one was merged into as a fragment of the same particle.
    born_in : int or None
        The track whose previous-slice mask this one's first instance lies in (a piece cut off it).
    """

    first_z: int
    last_z: int
    voxels: int = 0
    iou_sum: float = 0.0
    links: int = 0
    gaps: int = 0
    max_score: float = float("nan")
    bbox_lo: list = field(default_factory=lambda: [np.inf, np.inf, np.inf])
    bbox_hi: list = field(default_factory=lambda: [-np.inf, -np.inf, -np.inf])
    merged_into: int | None = None
    born_in: int | None = None

    def absorb(self, other: Track) -> None:
        """Take over the statistics of ``other``, a fragment of the same particle.

        Parameters
        ----------
        other : Track
            The fragment's track; left unchanged.
        """
        self.first_z = min(self.first_z, other.first_z)
        self.voxels += other.voxels
        self.iou_sum += other.iou_sum
        self.links += other.links
        self.gaps += other.gaps
        self.max_score = float(np.fmax(self.max_score, other.max_score))  # NaN = no score
        self.grow(other.bbox_lo, other.bbox_hi)

    def grow(self, lo, hi) -> None:
        """Extend the bounding box to cover ``[lo, hi)``.

        Parameters
        ----------
        lo, hi : sequences of 3 numbers
            Corners (z, y, x) in voxels, ``hi`` exclusive.
        """
        # in place and unrolled, without min/max calls or a new list: called for every track in every slice
        a, b = self.bbox_lo, self.bbox_hi
        if lo[0] < a[0]:
            a[0] = lo[0]
        if lo[1] < a[1]:
            a[1] = lo[1]
        if lo[2] < a[2]:
            a[2] = lo[2]
        if hi[0] > b[0]:
            b[0] = hi[0]
        if hi[1] > b[1]:
            b[1] = hi[1]
        if hi[2] > b[2]:
            b[2] = hi[2]


class TrackBook:
    """The tracks of one linking run, addressed by 1-based track id.

    Attributes
    ----------
    tracks : list of Track
        ``tracks[i - 1]`` is track ``i``.

    Notes
    -----
    The book keeps each track's :attr:`Track.last_z` also in an array (index = track id), so the
    tracks last seen in a slice are found in one step (:meth:`last_seen_in`); ``last_z`` is therefore
    changed through the book only (:meth:`start`, :meth:`record_links`, :meth:`merge`).
    """

    def __init__(self):
        self.tracks: list[Track] = []
        self._last_z = np.zeros(64, np.int64)  # index = track id

    def __getitem__(self, track: int) -> Track:
        return self.tracks[track - 1]

    def __len__(self) -> int:
        return len(self.tracks)

    def start(self, z: int, born_in: int | None = None) -> int:
        """Start a track in slice ``z``.

        Parameters
        ----------
        z : int
            Slice index of its first instance.
        born_in : int or None
            The track it was cut off, if any (:attr:`Track.born_in`).

        Returns
        -------
        int
            The new track's id.
        """
        self.tracks.append(Track(first_z=z, last_z=z, born_in=born_in))
        if len(self.tracks) >= len(self._last_z):
            self._last_z = np.concatenate([self._last_z, np.zeros_like(self._last_z)])
        self._last_z[len(self.tracks)] = z
        return len(self.tracks)

    def last_seen_in(self, tracks, z: int) -> list[int]:
        """The tracks among ``tracks`` whose last instance lies in slice ``z`` (order kept).

        Parameters
        ----------
        tracks : sequence or array of int
            Track ids.
        z : int
            Slice index.

        Returns
        -------
        list of int
        """
        ids = np.asarray(tracks, np.intp)
        return ids[self._last_z[ids] == z].tolist()

    def merge(self, fragment: int, into: int) -> None:
        """Merge track ``fragment`` into track ``into`` (statistics and alias); ``fragment`` ends for good.

        Parameters
        ----------
        fragment, into : int
            Track ids; ``fragment`` must differ from ``into``.
        """
        self[into].absorb(self[fragment])
        self[fragment].merged_into = into
        self[fragment].last_z = self._last_z[fragment] = -1  # never continued again

    def root(self, track: int) -> int:
        """The track a track id was finally merged into (itself when never merged).

        Parameters
        ----------
        track : int
            A track id.

        Returns
        -------
        int
            Its root's track id.
        """
        while self[track].merged_into is not None:
            track = self[track].merged_into
        return track

    def aliases(self) -> np.ndarray:
        """Lookup table track id -> the track it was finally merged into.

        Returns
        -------
        (n_tracks + 1,) uint32 array
            Identity for tracks never merged; index 0 (background) maps to 0.
        """
        return np.array([0] + [self.root(i) for i in range(1, len(self.tracks) + 1)], np.uint32)

    def record_links(self, assigned: dict[int, int], ious: dict[int, float], scores: np.ndarray | None,
                     z: int) -> None:
        """Mark the tracks continued in slice ``z`` and accumulate their link IoUs and best scores.

        Parameters
        ----------
        assigned : dict
            Instance id of slice ``z`` -> its track id.
        ious : dict
            Instance id -> IoU of its link to the track's previous mask (instances that continue a track).
        scores : 1D float array or None
            Detection score indexed by instance id (NaN = none); ids beyond its end have no score.
        z : int
            Slice index.
        """
        n_scores = len(scores) if scores is not None else 0
        for inst, track in assigned.items():
            t = self[track]
            t.last_z = z
            if inst < n_scores:
                t.max_score = _nanmax2(t.max_score, scores[inst])
            if inst in ious:
                t.iou_sum += ious[inst]
                t.links += 1
        self._last_z[list(assigned.values())] = z

    def record_slice(self, z: int, tracks: list[int], sizes: list[int], boxes: list) -> tuple[dict, dict]:
        """Add the voxels and bounding boxes of the instances of slice ``z``.

        Parameters
        ----------
        z : int
            Slice index.
        tracks, sizes, boxes : lists
            Per instance: its track id, its pixels and its bounding box (y, x slices).

        Returns
        -------
        dict
            Track id -> its pixels in slice ``z``.
        dict
            Track id -> its bounding box (y, x slices) in slice ``z``.
        """
        if len(set(tracks)) == len(tracks):  # one instance per track (the usual case)
            per_size, per_box = dict(zip(tracks, sizes)), dict(zip(tracks, boxes))
        else:
            per_size, per_box = {}, {}
            for track, n, (ys, xs) in zip(tracks, sizes, boxes):
                if track in per_size:
                    b = per_box[track]
                    n += per_size[track]
                    ys = slice(min(b[0].start, ys.start), max(b[0].stop, ys.stop))
                    xs = slice(min(b[1].start, xs.start), max(b[1].stop, xs.stop))
                per_size[track], per_box[track] = n, (ys, xs)
        for track, n in per_size.items():
            ys, xs = per_box[track]
            t = self.tracks[track - 1]
            t.voxels += n
            t.grow((z, ys.start, xs.start), (z + 1, ys.stop, xs.stop))
        return per_size, per_box

    def table(self) -> pd.DataFrame:
        """Per-track table of the tracks that hold voxels and were not merged away.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`TABLE_COLUMNS`: ``track`` id; bounding box in voxels (``z_max`` inclusive,
            ``y_max`` and ``x_max`` exclusive); ``voxels``; ``mean_link_iou`` (NaN without links);
            ``gaps_bridged`` (slices); ``max_score`` (NaN = no score).
        """
        rows = [{"track": i, "z_min": int(t.bbox_lo[0]), "z_max": int(t.bbox_hi[0]) - 1,
                 "y_min": int(t.bbox_lo[1]), "y_max": int(t.bbox_hi[1]), "x_min": int(t.bbox_lo[2]),
                 "x_max": int(t.bbox_hi[2]), "voxels": t.voxels,
                 "mean_link_iou": t.iou_sum / t.links if t.links else np.nan, "gaps_bridged": t.gaps,
                 "max_score": t.max_score}
                for i, t in enumerate(self.tracks, start=1) if t.voxels > 0 and t.merged_into is None]
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _nanmax2(a: float, b) -> float:
    """``float(np.nanmax([a, b]))`` without its array overhead and all-NaN warning (same result, signed
    zeros included)."""
    if b != b:
        return float(a)
    if a != a or b >= a:
        return float(b)
    return float(a)
