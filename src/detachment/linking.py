"""Linking per-slice instances into 3D particles (Supp. Note 1: Hungarian maximum matching).

:func:`link_slices` walks z once. The instances of slice z are matched to the
tracks last seen in slice z-1 by :func:`scipy.optimize.linear_sum_assignment`
on the cost 1 − IoU (overlaps counted sparsely by :func:`detachment.metrics.overlap`);
pairs below ``min_iou`` are rejected. Instances left over are then offered to
tracks last seen in slice z-2, z-3, … up to ``max_gap`` missing slices (gap
closing), nearest slice first. With ``absorb_fraction``, a leftover instance
that lies mostly inside a track's last mask joins that track when the joined
mask stays convex (fragment absorption: a per-slice model may cut one cracked
particle into pieces; two particles side by side are not convex together).
Whatever is still unmatched starts a new track. The mirror case, pieces
becoming whole again, is fragment rejoining: a track ending in slice z-1 under
an instance that continues another track is merged into it when the two
together explain that instance better and are convex together or one was cut
off the other (track aliases, applied when the particles are renumbered). A bridged gap is filled
(``fill_gaps``) with the pixels the two linked instances share, where the gap slice holds no other instance: a particle the
per-slice model missed in one slice is not left with a hole through it. Only
the last ``max_gap + 1`` slices are kept in memory (output is delayed by
``max_gap`` slices so that gaps can still be filled), and the output is
written slab by slab, so memory does not grow with depth.

:func:`stitch_greedy` is the baseline in the manner of cellpose's
``stitch3D``: each instance takes the id of the previous-slice instance it
overlaps most if that IoU reaches the threshold, without one-to-one
constraint or gap closing.

Hysteresis (``min_track_score``): given each instance's detection score, a
particle is kept only if at least one of its instances scores
``min_track_score``; linking itself runs over every candidate instance, so a
particle continues through slices where the model was less sure.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.morphology import convex_hull_image

from . import io
from .metrics import overlap

log = logging.getLogger(__name__)


@dataclass
class LinkSettings:
    """``link`` config section."""

    min_iou: float = 0.2
    max_gap: int = 3
    cost: str = "iou"  # "iou": 1 - IoU; "overlap": 1 - |a ∩ b| / min(|a|, |b|)
    min_voxels: int = 50
    slab: int = 16
    fill_gaps: bool = True
    min_track_score: float = 0.0  # hysteresis: keep a particle only if one of its instances scores this
    absorb_fraction: float = 0.6  # a leftover instance this much inside a track's last mask may join it (0 = off)
    absorb_solidity: float = 0.85  # ... if the joined mask stays this convex (area / convex-hull area)


@dataclass
class _Track:
    first_z: int
    last_z: int
    voxels: int = 0
    iou_sum: float = 0.0
    links: int = 0
    gaps: int = 0
    max_score: float = float("nan")
    bbox_lo: list = field(default_factory=lambda: [np.inf, np.inf, np.inf])
    bbox_hi: list = field(default_factory=lambda: [-np.inf, -np.inf, -np.inf])
    merged_into: int | None = None  # set when this track turned out to be a fragment of another
    born_in: int | None = None  # the track whose previous-slice mask this one's first instance lies in

    def absorb(self, other: _Track) -> None:
        """Take over the statistics of ``other``, a fragment of the same particle."""
        self.first_z = min(self.first_z, other.first_z)
        self.voxels += other.voxels
        self.iou_sum += other.iou_sum
        self.links += other.links
        self.gaps += other.gaps
        self.max_score = float(np.fmax(self.max_score, other.max_score))  # NaN = no score
        self.grow(other.bbox_lo, other.bbox_hi)

    def grow(self, lo, hi) -> None:
        """Extend the bounding box (z, y, x; ``hi`` exclusive) to cover ``[lo, hi)``."""
        self.bbox_lo = [min(a, b) for a, b in zip(self.bbox_lo, lo)]
        self.bbox_hi = [max(a, b) for a, b in zip(self.bbox_hi, hi)]


def _pair_cost(ov, how: str) -> np.ndarray:
    """Dense (tracks x instances) similarity over the labels present (small per slice)."""
    if how == "iou":
        return ov.iou_matrix()
    if how == "overlap":
        m = np.zeros((len(ov.a_ids), len(ov.b_ids)))
        ia, ib = ov.pairs[:, 0], ov.pairs[:, 1]
        m[ia, ib] = ov.counts / np.minimum(ov.a_sizes[ia], ov.b_sizes[ib])
        return m
    raise ValueError(f"link.cost: {how!r} is not 'iou' or 'overlap'")


class SliceLinker:
    """Streaming Hungarian linker: feed slices in z order, get 3D-labelled slices back."""

    def __init__(self, s: LinkSettings):
        self.s = s
        self.tracks: list[_Track] = []
        self.history: deque = deque(maxlen=s.max_gap + 1)  # (z, slice labels as track ids)
        self.z = 0

    def add(self, labels2d: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """Link one (y, x) slice of per-slice instance ids; returns it relabelled with track ids (1-based).

        ``scores[i]``: detection score of instance id ``i`` (optional; tracks keep their maximum).
        """
        z = self.z
        self.z += 1
        lab = np.asarray(labels2d)
        ids = np.unique(lab[lab > 0])
        assigned: dict[int, int] = {}
        ious: dict[int, float] = {}
        remaining = set(ids.tolist())
        bridged: list[tuple[int, int, int]] = []  # (instance, track, previous z) across a gap
        for prev_z, prev in reversed(self.history):  # nearest slice first
            if not remaining:
                break
            cur = np.where(np.isin(lab, list(remaining)), lab, 0)
            # only tracks whose last appearance is this previous slice may continue from it
            alive = np.array([t for t in np.unique(prev[prev > 0]) if self.tracks[t - 1].last_z == prev_z])
            if alive.size == 0:
                continue
            ov = overlap(np.where(np.isin(prev, alive), prev, 0), cur)
            if len(ov.counts) == 0:
                continue
            sim = _pair_cost(ov, self.s.cost)
            iou = sim if self.s.cost == "iou" else ov.iou_matrix()
            r, c = linear_sum_assignment(1.0 - sim)
            for i, j in zip(r, c):
                if sim[i, j] >= self.s.min_iou and sim[i, j] > 0:
                    inst, track = int(ov.b_ids[j]), int(ov.a_ids[i])
                    assigned[inst] = track
                    ious[inst] = float(iou[i, j])
                    remaining.discard(inst)
                    self.tracks[track - 1].gaps += z - prev_z - 1
                    if z - prev_z > 1:
                        bridged.append((inst, track, prev_z))
        if self.s.absorb_fraction > 0 and remaining:
            self._absorb_fragments(lab, remaining, assigned, ious, bridged, z)
        parents = self._parents(lab, remaining, assigned, z) if remaining and self.s.absorb_fraction > 0 else {}
        for inst in sorted(remaining):
            self.tracks.append(_Track(first_z=z, last_z=z, born_in=parents.get(inst)))
            assigned[inst] = len(self.tracks)
        lut = np.zeros(int(lab.max()) + 1 if lab.size else 1, np.uint32)
        for inst, track in assigned.items():
            lut[inst] = track
        out = lut[lab]
        for inst, track in assigned.items():
            t = self.tracks[track - 1]
            t.last_z = z
            if scores is not None and inst < len(scores):
                t.max_score = float(np.nanmax([t.max_score, scores[inst]]))
            if inst in ious:
                t.iou_sum += ious[inst]
                t.links += 1
        self._update_stats(out, z)
        if self.s.absorb_fraction > 0:
            self._rejoin_fragments(lab, assigned, z)
        if self.s.fill_gaps:
            for inst, track, prev_z in bridged:
                self._fill_gap(track, prev_z, z, lab == inst)
        self.history.append((z, out))
        return out

    def _absorb_fragments(self, lab, remaining: set, assigned: dict, ious: dict, bridged: list, z: int) -> None:
        """Join leftover instances that are fragments of a continuing particle to its track (in place).

        A per-slice model may cut one particle into pieces along a crack. A leftover instance ``j`` joins
        track ``t`` when at least ``absorb_fraction`` of ``j`` lies inside ``t``'s last mask, the mask of
        ``t`` in this slice with ``j`` added stays convex (solidity ≥ ``absorb_solidity``: two particles
        side by side are not convex together, pieces of one cut particle are) and matches ``t``'s last
        mask better than without ``j``. A track not yet continued in this slice takes a group of such
        pieces only if together they reach ``min_iou``.
        """
        cur = np.where(np.isin(lab, list(remaining)), lab, 0)
        fg = cur > 0
        pieces: dict[int, list[int]] = {}  # track -> leftover instances mostly inside its last mask
        last_z: dict[int, int] = {}
        for prev_z, prev in reversed(self.history):  # nearest slice first: its tracks choose first
            under = prev[fg]
            if not under.any():  # the usual case: a new particle's first slice, on background
                continue
            alive = [t for t in np.unique(under[under > 0]) if self.tracks[t - 1].last_z == prev_z]
            if not alive:
                continue
            ov = overlap(np.where(np.isin(prev, alive), prev, 0), cur)
            inside = ov.counts / ov.b_sizes[ov.pairs[:, 1]]
            for (i, j), f in zip(ov.pairs, inside):
                if f >= self.s.absorb_fraction:
                    t = int(ov.a_ids[i])
                    pieces.setdefault(t, []).append(int(ov.b_ids[j]))
                    last_z[t] = prev_z
        slices = dict(self.history)
        for t, cand in pieces.items():
            prev_z = last_z[t]
            own = [i for i, tr in assigned.items() if tr == t]
            # crop to the track's last mask, its instances here and the candidate pieces
            box = ndimage.find_objects(((slices[prev_z] == t) | np.isin(lab, own + cand)).astype(np.uint8))[0]
            target, lab_c = slices[prev_z][box] == t, lab[box]
            mask = np.isin(lab_c, own)
            cand = [j for j in cand if j in remaining]  # not taken by a track of a nearer slice
            sizes = {j: np.count_nonzero(lab_c == j) for j in cand}

            def joins(trial, before, target=target):
                return _solidity(trial) >= self.s.absorb_solidity and \
                    _iou(trial, target) > _iou(before, target)

            # all pieces at once first: a particle cut in three is convex only when whole again
            whole = mask | np.isin(lab_c, cand)
            if cand and joins(whole, mask):
                mask, taken = whole, cand
            else:
                taken = []
                for j in sorted(cand, key=lambda j: -sizes[j]):
                    trial = mask | (lab_c == j)
                    if joins(trial, mask):
                        mask = trial
                        taken.append(j)
            if not taken or (not own and _iou(mask, target) < self.s.min_iou):
                continue
            for j in taken:
                remaining.discard(j)
                assigned[j] = t
            if not own:
                ious[taken[0]] = _iou(mask, target)
                self.tracks[t - 1].gaps += z - prev_z - 1
                if z - prev_z > 1:
                    bridged.extend((j, t, prev_z) for j in taken)

    def _parents(self, lab, remaining: set, assigned: dict, z: int) -> dict[int, int]:
        """Leftover instance -> the track continuing here whose slice z-1 mask holds at least
        ``absorb_fraction`` of it (a piece the model cut off a particle it saw whole the slice before)."""
        if not self.history or self.history[-1][0] != z - 1:
            return {}
        cont = set(assigned.values())
        prev = self.history[-1][1]
        ov = overlap(np.where(np.isin(lab, list(remaining)), lab, 0), prev)
        out = {}
        for (i, j), c in zip(ov.pairs, ov.counts):
            t = int(ov.b_ids[j])
            if t in cont and c >= self.s.absorb_fraction * ov.a_sizes[i]:
                out[int(ov.a_ids[i])] = t
        return out

    def _rejoin_fragments(self, lab, assigned: dict, z: int) -> None:
        """Merge a track that ended under an instance continuing another track into that track (aliases).

        The mirror of :meth:`_absorb_fragments`: where a per-slice model cut a particle into pieces and the
        pieces become whole again, the whole instance continues one piece's track and the other piece's
        track would end there, splitting the particle in 3D. A track ``e`` last seen in slice z' (z-1 or,
        across a gap, down to z-1-``max_gap``, nearest first) is merged into track ``t`` when at least
        ``absorb_fraction`` of ``e``'s last mask lies inside ``t``'s instance in this slice, and the union
        of ``e`` and ``t`` in z' matches this instance by at least ``REJOIN_GAIN`` IoU better than ``t``
        alone (a particle whose cap ends under a bigger one is already matched well by the bigger one's
        own mask, and is left alone), and either that union is convex (solidity ≥ ``absorb_solidity``)
        or one of the two tracks began as a piece cut off the other (``born_in``).
        """
        if not assigned:
            return
        inst_of = {t: [i for i, tr in assigned.items() if tr == t] for t in set(assigned.values())}
        for prev_z, prev in reversed(self.history):  # nearest slice first
            self._rejoin_from(prev_z, prev, lab, assigned, inst_of, z)

    def _rejoin_from(self, prev_z: int, prev, lab, assigned: dict, inst_of: dict, z: int) -> None:
        """:meth:`_rejoin_fragments` for the tracks last seen in slice ``prev_z``."""
        under = prev[lab > 0]
        ended = [e for e in np.unique(under[under > 0]) if self.tracks[e - 1].last_z == prev_z]
        if not ended:
            return
        ov = overlap(np.where(np.isin(prev, ended), prev, 0), lab)
        best: dict[int, tuple[int, float]] = {}
        for (i, j), c in zip(ov.pairs, ov.counts):
            e, inst = int(ov.a_ids[i]), int(ov.b_ids[j])
            f = c / ov.a_sizes[i]
            if f >= self.s.absorb_fraction and f > best.get(e, (0, 0.0))[1]:
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
            gain = _iou(both[box], here[box]) - _iou(before[box], here[box])
            kin = self.tracks[e - 1].born_in == t or self.tracks[t - 1].born_in == e
            if gain < REJOIN_GAIN or not (kin or _solidity(both[box]) >= self.s.absorb_solidity):
                continue
            prev[prev == e] = t  # relabel in place; slices already handed out go through aliases
            self.tracks[t - 1].absorb(self.tracks[e - 1])
            self.tracks[e - 1].merged_into = t
            self.tracks[e - 1].last_z = -1  # never continued again

    def root(self, track: int) -> int:
        """The track a (1-based) track id was finally merged into."""
        while self.tracks[track - 1].merged_into is not None:
            track = self.tracks[track - 1].merged_into
        return track

    def aliases(self) -> np.ndarray:
        """Lookup table track id -> the track it was merged into (identity for the others; index 0 = 0)."""
        return np.array([0] + [self.root(i) for i in range(1, len(self.tracks) + 1)], np.uint32)

    def _fill_gap(self, track: int, prev_z: int, z: int, current: np.ndarray) -> None:
        """Paint ``track`` into the slices strictly between ``prev_z`` and ``z`` (still in the history, not
        yet handed out) where its masks in both end slices overlap and the gap slice is unlabelled."""
        slices = dict(self.history)
        shared = (slices[prev_z] == track) & current
        t = self.tracks[track - 1]
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

    def _update_stats(self, out: np.ndarray, z: int) -> None:
        if not out.any():
            return
        objs = ndimage.find_objects(out)
        counts = np.bincount(out.ravel())
        for track, sl in enumerate(objs, start=1):
            if sl is None:
                continue
            t = self.tracks[track - 1]
            t.voxels += int(counts[track])
            t.grow([z, sl[0].start, sl[1].start], [z + 1, sl[0].stop, sl[1].stop])


# a fragment's track joins the track continuing over it only if the union matches the continuing
# instance this much better (IoU) than that track alone
REJOIN_GAIN = 0.1


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area of a 2D mask, computed on its bounding box."""
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = mask[sl]
    return float(crop.sum() / max(convex_hull_image(crop).sum(), 1))


def link_slices(slices: Iterable[np.ndarray], s: LinkSettings, scores: Iterable[np.ndarray] | None = None
                ) -> tuple[Iterator[np.ndarray], SliceLinker]:
    """Lazily link an iterable of (y, x) slices; returns (iterator of linked slices, the linker).

    ``scores``: per slice, an array of detection scores indexed by instance id (optional).
    A slice is handed out ``max_gap`` slices after it was added, once no later link can fill it.
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


def stitch_greedy(slices: Iterable[np.ndarray], threshold: float = 0.25) -> Iterator[np.ndarray]:
    """cellpose ``stitch3D``-style greedy stitching: argmax-IoU id of the previous slice, else a new id."""
    prev = None
    next_id = 1
    for lab in slices:
        lab = np.asarray(lab)
        ids = np.unique(lab[lab > 0])
        out = np.zeros(lab.shape, np.uint32)
        if ids.size == 0:
            prev = out
            yield out
            continue
        lut = np.zeros(int(lab.max()) + 1, np.uint32)
        if prev is not None and prev.any():
            ov = overlap(lab, prev)
            iou = ov.iou_matrix()
            for k, inst in enumerate(ov.a_ids):
                j = int(np.argmax(iou[k])) if iou.shape[1] else 0
                if iou.shape[1] and iou[k, j] >= threshold:
                    lut[inst] = ov.b_ids[j]
        for inst in ids:
            if lut[inst] == 0:
                lut[inst] = next_id
                next_id += 1
        out = lut[lab]
        prev = out
        yield out


def _slices_from(path, dataset: str, slab: int) -> Iterator[np.ndarray]:
    with h5py.File(path, "r") as f:
        d = f[dataset]
        for z0, z1 in io.slab_ranges(d.shape[0], slab):
            yield from d[z0:z1]


def write_linked(path, linked: Iterator[np.ndarray], shape, voxel_size_um, slab: int) -> None:
    """Stream linked slices into ``path`` (``/labels`` uint32, chunked by slice), atomically."""
    with io.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("labels", shape=shape, dtype=np.uint32, chunks=io.slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        d.attrs["voxel_size_um"] = np.asarray(voxel_size_um, float)
        buf = []
        z0 = 0
        for sl in linked:
            buf.append(sl)
            if len(buf) == slab:
                d[z0:z0 + slab] = np.stack(buf)
                z0 += slab
                buf = []
        if buf:
            d[z0:z0 + len(buf)] = np.stack(buf)


def finalize(path, out_path, tracks_table: pd.DataFrame, min_voxels: int, slab: int, min_score: float = 0.0,
             aliases: np.ndarray | None = None) -> pd.DataFrame:
    """Drop particles under ``min_voxels`` or whose best instance scores under ``min_score`` (NaN = no score:
    kept), renumber 1..n in order of first appearance, stream to ``out_path``.

    ``aliases``: track id -> the track it was merged into (:meth:`SliceLinker.aliases`); ``tracks_table``
    then holds only the tracks merged into.

    Adds per particle: ``touches_border`` (any face of the volume: statistics biased) and
    ``connected_6`` (its voxels form one 6-connected component; else it is flagged).
    """
    low = tracks_table.max_score < min_score if "max_score" in tracks_table else False
    # sorted: a track that other tracks were merged into may have been started after them
    keep = tracks_table[(tracks_table.voxels >= min_voxels) & ~low].sort_values(["z_min", "track"], kind="stable")
    top = max(int(tracks_table.track.max()) if len(tracks_table) else 0,
              int(aliases.max()) if aliases is not None and len(aliases) else 0)
    lut = np.zeros(top + 1, np.uint32)
    lut[keep.track.to_numpy()] = np.arange(1, len(keep) + 1, dtype=np.uint32)
    if aliases is not None:
        lut = lut[aliases]
    keep.insert(0, "label", np.arange(1, len(keep) + 1))
    with h5py.File(path, "r") as f:
        shape = f["labels"].shape
        voxel = f["labels"].attrs["voxel_size_um"]
    write_linked(out_path, (lut[s] for s in _slices_from(path, "labels", slab)), shape, voxel, slab)
    conn = []
    with h5py.File(out_path, "r") as f:
        d = f["labels"]
        for row in keep.itertuples():
            crop = d[row.z_min:row.z_max + 1, row.y_min:row.y_max, row.x_min:row.x_max] == row.label
            conn.append(ndimage.label(crop)[1] == 1)
    keep["connected_6"] = conn
    keep["touches_border"] = ((keep.z_min == 0) | (keep.z_max == shape[0] - 1) | (keep.y_min == 0)
                              | (keep.x_min == 0) | (keep.y_max == shape[1]) | (keep.x_max == shape[2]))
    return keep.drop(columns="track").reset_index(drop=True)


def slice_scores(table: pd.DataFrame, depth: int) -> list[np.ndarray]:
    """Per slice, detection scores indexed by instance id (NaN where no row), from a (z, label, score) table."""
    out = []
    by_z = {z: g for z, g in table.groupby("z")} if len(table) else {}
    for z in range(depth):
        g = by_z.get(z)
        a = np.full(int(g.label.max()) + 1 if g is not None else 1, np.nan)
        if g is not None:
            a[g.label.to_numpy(int)] = g.score.to_numpy(float)
        out.append(a)
    return out


def read_candidates(slices_path) -> tuple[str, list[np.ndarray] | None]:
    """Which dataset of a per-slice file to link (``/candidates`` when present) and its per-slice scores."""
    with h5py.File(slices_path, "r") as f:
        if "candidates" not in f or "table" not in f:
            return "labels", None
        cols = str(f["table"].attrs["columns"]).split(",")
        table = pd.DataFrame(f["table"][...], columns=cols)
        depth = f["candidates"].shape[0]
    return "candidates", slice_scores(table, depth)


def link_file(slices_path, out_path, s: LinkSettings, method: str = "hungarian", greedy_threshold: float = 0.25
              ) -> pd.DataFrame:
    """Link a per-slice file into 3D particles at ``out_path``; returns the per-particle table.

    Links ``/candidates`` with their scores (hysteresis, :class:`LinkSettings` ``min_track_score``) when the
    file has them, else ``/labels``.
    """
    dataset, scores = read_candidates(slices_path) if method == "hungarian" else ("labels", None)
    with h5py.File(slices_path, "r") as f:
        shape = f[dataset].shape
        voxel = f["labels"].attrs.get("voxel_size_um", np.ones(3))
    raw = _slices_from(slices_path, dataset, s.slab)
    out_path = Path(out_path)
    tmp_path = out_path.with_name(f".{out_path.name}.unfiltered")
    if method == "hungarian":
        linked, linker = link_slices(raw, s, scores)
        write_linked(tmp_path, linked, shape, voxel, s.slab)
        rows = [{"track": i, "z_min": int(t.bbox_lo[0]), "z_max": int(t.bbox_hi[0]) - 1,
                 "y_min": int(t.bbox_lo[1]), "y_max": int(t.bbox_hi[1]), "x_min": int(t.bbox_lo[2]),
                 "x_max": int(t.bbox_hi[2]), "voxels": t.voxels,
                 "mean_link_iou": t.iou_sum / t.links if t.links else np.nan, "gaps_bridged": t.gaps,
                 "max_score": t.max_score}
                for i, t in enumerate(linker.tracks, start=1) if t.voxels > 0 and t.merged_into is None]
        aliases = linker.aliases()
    elif method == "greedy":
        write_linked(tmp_path, stitch_greedy(raw, greedy_threshold), shape, voxel, s.slab)
        rows = _bbox_rows(tmp_path, s.slab)
        aliases = None
    else:
        raise ValueError(f"linking method {method!r} is not 'hungarian' or 'greedy'")
    table = pd.DataFrame(rows, columns=["track", "z_min", "z_max", "y_min", "y_max", "x_min", "x_max", "voxels",
                                        "mean_link_iou", "gaps_bridged", "max_score"])
    try:
        return finalize(tmp_path, out_path, table, s.min_voxels, s.slab, s.min_track_score, aliases)
    finally:
        tmp_path.unlink(missing_ok=True)


def _bbox_rows(path, slab: int) -> list[dict]:
    """Per-label bounding boxes and sizes of a 3D label file, streamed."""
    acc: dict[int, dict] = {}
    z = 0
    for sl in _slices_from(path, "labels", slab):
        if sl.any():
            counts = np.bincount(sl.ravel())
            for lab, o in enumerate(ndimage.find_objects(sl), start=1):
                if o is None:
                    continue
                r = acc.setdefault(lab, {"track": lab, "z_min": z, "z_max": z, "y_min": o[0].start,
                                         "y_max": o[0].stop, "x_min": o[1].start, "x_max": o[1].stop, "voxels": 0,
                                         "mean_link_iou": np.nan, "gaps_bridged": 0})
                r["z_max"] = z
                r["y_min"], r["y_max"] = min(r["y_min"], o[0].start), max(r["y_max"], o[0].stop)
                r["x_min"], r["x_max"] = min(r["x_min"], o[1].start), max(r["x_max"], o[1].stop)
                r["voxels"] += int(counts[lab])
        z += 1
    return [acc[k] for k in sorted(acc)]


def link_array(stack: np.ndarray, s: LinkSettings, method: str = "hungarian", greedy_threshold: float = 0.25,
               scores: list[np.ndarray] | None = None) -> np.ndarray:
    """In-memory linking of a (z, y, x) per-slice label stack, particles under ``min_voxels`` removed and,
    given per-slice ``scores``, particles whose best instance scores under ``s.min_track_score``."""
    if method == "hungarian":
        linked, linker = link_slices(stack, s, scores)
        out = np.stack(list(linked))  # runs the linker
        out = linker.aliases()[out]
    elif method == "greedy":
        out = np.stack(list(stitch_greedy(stack, greedy_threshold)))
    else:
        raise ValueError(f"linking method {method!r} is not 'hungarian' or 'greedy'")
    sizes = np.bincount(out.ravel())
    drop = sizes < s.min_voxels
    if scores is not None:
        drop |= max_score_per_particle(stack, out, scores) < s.min_track_score
    drop[0] = False
    return np.where(drop[out], 0, out).astype(np.uint32)


def max_score_per_particle(stack: np.ndarray, linked: np.ndarray, scores: list[np.ndarray]) -> np.ndarray:
    """Best instance score of every 3D id of ``linked`` (index = id; NaN where unknown)."""
    best = np.full(int(linked.max()) + 1, -np.inf)
    for sl, ln, sc in zip(stack, linked, scores):
        m = (sl > 0) & (ln > 0) & (sl < len(sc))
        if m.any():
            np.fmax.at(best, ln[m], sc[sl[m]])
    return np.where(np.isfinite(best), best, np.nan)


def evaluate_linking(truth: np.ndarray, cnn_slices: np.ndarray, s: LinkSettings, watershed_3d: np.ndarray | None,
                     greedy_threshold: float = 0.25, scores: list[np.ndarray] | None = None) -> pd.DataFrame:
    """Particle recovery of each linker on true and on CNN per-slice instances, and of 3D watershed.

    Rows: ``input`` (true_slices | cnn_slices | volume), ``method`` (hungarian | greedy | watershed_3d)
    and :func:`detachment.metrics.particle_scores`. Linking true slices measures linking errors apart
    from segmentation errors. Given ``scores``, ``cnn_slices`` are candidates and both linkers apply the
    same hysteresis (``s.min_track_score``).
    """
    from .metrics import particle_scores

    rows = []
    for name, stack in (("true_slices", truth), ("cnn_slices", cnn_slices)):
        for method in ("hungarian", "greedy"):
            pred = link_array(stack, s, method, greedy_threshold, scores if name == "cnn_slices" else None)
            rows.append({"input": name, "method": method, **particle_scores(truth, pred)})
    if watershed_3d is not None:
        rows.append({"input": "volume", "method": "watershed_3d", **particle_scores(truth, watershed_3d)})
    return pd.DataFrame(rows)
