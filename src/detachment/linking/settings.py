"""Settings of the ``link`` config section (see workflow/schemas/config.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LinkSettings:
    """The ``link`` config section; defaults equal the schema's.

    Parameters
    ----------
    min_iou : float
        Reject slice-to-slice pairs whose similarity (see ``cost``) is below this, in (0, 1].
    max_gap : int
        Bridge up to this many slices in which a particle was not detected (0 = no gap closing).
    cost : {"iou", "overlap"}
        Similarity the assignment maximises: ``"iou"`` = |a ∩ b| / |a ∪ b|; ``"overlap"`` =
        |a ∩ b| / min(|a|, |b|) (pixels).
    min_voxels : int
        Particles with fewer voxels are dropped.
    slab : int
        Slices read and written at a time by the file front end.
    fill_gaps : bool
        Paint a bridged gap with the pixels both linked instances share.
    min_track_score : float
        Hysteresis: keep a particle only if one of its instances scores at least this (0 = keep all).
    absorb_fraction : float
        A leftover instance this much inside a track's last mask (fraction of its pixels) may join it;
        the same fraction governs fragment rejoining (0 = both off).
    absorb_solidity : float
        ... if the joined mask stays this convex (area / convex-hull area, in (0, 1]).
    """

    min_iou: float = 0.2
    max_gap: int = 3
    cost: str = "iou"
    min_voxels: int = 50
    slab: int = 16
    fill_gaps: bool = True
    min_track_score: float = 0.0
    absorb_fraction: float = 0.6
    absorb_solidity: float = 0.85
