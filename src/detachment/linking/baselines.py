"""The greedy baseline (cellpose ``stitch3D``-style) and in-memory evaluation of both linkers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from ..metrics import overlap, particle_scores
from .linker import link_slices
from .settings import LinkSettings


def stitch_greedy(slices: Iterable[np.ndarray], threshold: float = 0.25) -> Iterator[np.ndarray]:
    """Greedy stitching in the manner of cellpose ``stitch3D``.

    Each instance takes the id of the previous-slice instance it overlaps most if that IoU reaches
    ``threshold``, else a new id; no one-to-one constraint, no gap closing.

    Parameters
    ----------
    slices : iterable of (y, x) int arrays
        Per-slice instance ids, 0 = background.
    threshold : float
        Minimum IoU to continue an id.

    Returns
    -------
    iterator of (y, x) uint32 arrays
        The slices labelled with 3D ids (1-based, 0 = background).
    """
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


def link_array(stack: np.ndarray, s: LinkSettings, method: str = "hungarian", greedy_threshold: float = 0.25,
               scores: list[np.ndarray] | None = None) -> np.ndarray:
    """In-memory linking of a per-slice label stack into 3D particles.

    Particles under ``s.min_voxels`` are removed and, given ``scores``, particles whose best instance
    scores under ``s.min_track_score``.

    Parameters
    ----------
    stack : (z, y, x) int array
        Per-slice instance ids, 0 = background.
    s : LinkSettings
        The linking settings.
    method : {"hungarian", "greedy"}
        :func:`detachment.linking.link_slices` or :func:`stitch_greedy`.
    greedy_threshold : float
        IoU threshold of the greedy method.
    scores : list of 1D float arrays, optional
        Per slice, detection scores indexed by instance id (NaN = none).

    Returns
    -------
    (z, y, x) uint32 array
        3D particle ids (not renumbered), 0 = background.

    Raises
    ------
    ValueError
        When ``method`` is neither.
    """
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
    """Best instance score of every 3D id.

    Parameters
    ----------
    stack : (z, y, x) int array
        Per-slice instance ids, 0 = background.
    linked : (z, y, x) int array
        3D ids of the same voxels, 0 = background.
    scores : list of 1D float arrays
        Per slice, detection scores indexed by instance id (NaN = none).

    Returns
    -------
    (linked.max() + 1,) float array
        Indexed by 3D id; NaN where no instance has a score.
    """
    best = np.full(int(linked.max()) + 1, -np.inf)
    for sl, ln, sc in zip(stack, linked, scores):
        m = (sl > 0) & (ln > 0) & (sl < len(sc))
        if m.any():
            np.fmax.at(best, ln[m], sc[sl[m]])
    return np.where(np.isfinite(best), best, np.nan)


def evaluate_linking(truth: np.ndarray, cnn_slices: np.ndarray, s: LinkSettings, watershed_3d: np.ndarray | None,
                     greedy_threshold: float = 0.25, scores: list[np.ndarray] | None = None) -> pd.DataFrame:
    """Particle recovery of each linker on true and on CNN per-slice instances, and of 3D watershed.

    Linking true slices measures linking errors apart from segmentation errors. Given ``scores``,
    ``cnn_slices`` are candidates and both linkers apply the same hysteresis (``s.min_track_score``).

    Parameters
    ----------
    truth : (z, y, x) int array
        True 3D particle ids, 0 = background; its slices are the true per-slice input.
    cnn_slices : (z, y, x) int array
        The model's per-slice instance ids, 0 = background.
    s : LinkSettings
        The linking settings.
    watershed_3d : (z, y, x) int array or None
        3D watershed particle ids to score beside the linkers.
    greedy_threshold : float
        IoU threshold of the greedy baseline.
    scores : list of 1D float arrays, optional
        Per slice of ``cnn_slices``, detection scores indexed by instance id.

    Returns
    -------
    pandas.DataFrame
        One row per ``input`` (true_slices | cnn_slices | volume) and ``method`` (hungarian | greedy |
        watershed_3d), with :func:`detachment.metrics.particle_scores`.
    """
    rows = []
    for name, stack in (("true_slices", truth), ("cnn_slices", cnn_slices)):
        for method in ("hungarian", "greedy"):
            pred = link_array(stack, s, method, greedy_threshold, scores if name == "cnn_slices" else None)
            rows.append({"input": name, "method": method, **particle_scores(truth, pred)})
    if watershed_3d is not None:
        rows.append({"input": "volume", "method": "watershed_3d", **particle_scores(truth, watershed_3d)})
    return pd.DataFrame(rows)
