"""Linking per-slice instances into 3D particles (Supp. Note 1: Hungarian maximum matching).

Modules: :mod:`.assign` (matching slice z to the tracks), :mod:`.tracks` (tracks, aliases, statistics),
:mod:`.repair` (fragment absorption and rejoining, gap filling), :mod:`.linker` (the streaming linker),
:mod:`.overlaps` (per-slice instance index, overlap counting), :mod:`.masks` (mask IoU, convexity),
:mod:`.baselines` (greedy stitching, in-memory evaluation), :mod:`.files` (HDF5 front end),
:mod:`.settings`. The algorithm is described in docs/methods.md (Linking).
"""

from .baselines import evaluate_linking, link_array, max_score_per_particle, stitch_greedy
from .files import finalize, link_file, read_candidates, slice_scores, write_linked
from .linker import SliceLinker, link_slices
from .settings import LinkSettings
from .tracks import Track, TrackBook

__all__ = ["LinkSettings", "SliceLinker", "Track", "TrackBook", "evaluate_linking", "finalize",
           "link_array", "link_file", "link_slices", "max_score_per_particle", "read_candidates",
           "slice_scores", "stitch_greedy", "write_linked"]
