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
        a, b = self.bbox_lo, self.bbox_hi
        self.bbox_lo = [min(a[0], lo[0]), min(a[1], lo[1]), min(a[2], lo[2])]
        self.bbox_hi = [max(b[0], hi[0]), max(b[1], hi[1]), max(b[2], hi[2])]


class TrackBook:
    """The tracks of one linking run, addressed by 1-based track id.

    Attributes
    ----------
    tracks : list of Track
        ``tracks[i - 1]`` is track ``i``.
    """

    def __init__(self):
        self.tracks: list[Track] = []

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
        return len(self.tracks)

    def merge(self, fragment: int, into: int) -> None:
        """Merge track ``fragment`` into track ``into`` (statistics and alias); ``fragment`` ends for good.

        Parameters
        ----------
        fragment, into : int
            Track ids; ``fragment`` must differ from ``into``.
        """
        self[into].absorb(self[fragment])
        self[fragment].merged_into = into
        self[fragment].last_z = -1  # never continued again

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

    def record_slice(self, z: int, tracks: list[int], sizes: list[int], boxes: list) -> dict[int, int]:
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
        """
        acc: dict[int, list[int]] = {}
        for track, n, (ys, xs) in zip(tracks, sizes, boxes):
            g = acc.get(track)
            if g is None:
                acc[track] = [n, ys.start, xs.start, ys.stop, xs.stop]
            else:
                g[0] += n
                g[1], g[2] = min(g[1], ys.start), min(g[2], xs.start)
                g[3], g[4] = max(g[3], ys.stop), max(g[4], xs.stop)
        for track, (n, y0, x0, y1, x1) in acc.items():
            t = self[track]
            t.voxels += n
            t.grow([z, y0, x0], [z + 1, y1, x1])
        return {track: g[0] for track, g in acc.items()}

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
