"""Phase thresholding of a volume file, streamed slab by slab (memory ~ one slab + halo).

Pass 1 reads the grey-level range, pass 2 the histogram; the phase model is
fitted on the histogram (:mod:`detachment.phases`); pass 3 classifies each slab
with a halo of slices for the local clean-ups and accumulates the per-phase
interior histograms used for the FWHMs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import io, phases

log = logging.getLogger(__name__)


@dataclass
class ThresholdSettings:
    """Settings of the ``threshold`` config section (see workflow/schemas/config.schema.yaml)."""

    method: str = "gmm"
    bins: int = 256
    order: tuple[str, ...] = phases.DEFAULT_ORDER
    denoise: str = "none"
    denoise_sigma_vox: float = 1.0
    collector_min_thickness_vox: int = 3
    domain_sigma_vox: float = 0.7
    slab: int = 32

    def __post_init__(self):
        self.order = tuple(self.order)
        if self.method not in ("gmm", "multiotsu"):
            raise ValueError(f"threshold.method: {self.method!r} is not 'gmm' or 'multiotsu'")
        if self.denoise not in ("none", "gaussian", "median"):
            raise ValueError(f"threshold.denoise: {self.denoise!r} is not 'none', 'gaussian' or 'median'")
        if sorted(self.order) != sorted(phases.PHASE_NAMES.values()):
            raise ValueError(f"threshold.order: {list(self.order)} must list each of "
                             f"{sorted(phases.PHASE_NAMES.values())} once")

    @property
    def halo(self) -> int:
        h = self.collector_min_thickness_vox + 1
        h = max(h, math.ceil(3 * self.domain_sigma_vox) + 2)
        if self.denoise != "none":
            h += math.ceil(3 * self.denoise_sigma_vox) + 1
        return h


@dataclass
class ThresholdResult:
    model: phases.PhaseModel
    histogram: phases.Histogram
    fwhm: pd.DataFrame
    fractions: dict
    counts_per_slice: np.ndarray  # (z, phase code 0..4) voxel counts of the written map

    @property
    def solid_per_slice(self) -> np.ndarray:
        """NMC voxels (low + high density) in each z slice."""
        return self.counts_per_slice[:, phases.NMC_LOW] + self.counts_per_slice[:, phases.NMC_HIGH]

    @property
    def most_solid_slice(self) -> int:
        """The z slice with the most NMC voxels (through the particle layer)."""
        return int(np.argmax(self.solid_per_slice))


def classify_slab(data: np.ndarray, model: phases.PhaseModel, s: ThresholdSettings) -> np.ndarray:
    """Phase codes of one (z, y, x) slab (already denoised), with the local clean-ups."""
    p = phases.classify(data, model)
    p = phases.remove_thin_collector(p, data, model, s.collector_min_thickness_vox)
    return phases.refine_nmc_domains(data, p, model, s.domain_sigma_vox)


def threshold_volume(volume_path, phases_path, settings: ThresholdSettings, progress: bool = True
                     ) -> ThresholdResult:
    """Classify every voxel of ``volume_path`` and write ``/phases`` (uint8) to ``phases_path`` atomically."""
    s = settings
    shape, voxel = io.read_volume_info(volume_path)
    halo = s.halo

    def slabs(desc):
        it = io.iter_volume_slabs(volume_path, s.slab, halo)
        for z0, z1, data in tqdm(it, total=math.ceil(shape[0] / s.slab), desc=desc, disable=not progress,
                                 unit="slab"):
            data = phases.denoise(data, s.denoise, s.denoise_sigma_vox)
            a = max(0, z0 - halo)
            yield z0, z1, a, data

    lo, hi = np.inf, -np.inf
    for z0, z1, a, data in slabs("range"):
        core = data[z0 - a: z1 - a]
        lo, hi = min(lo, float(core.min())), max(hi, float(core.max()))
    edges = np.linspace(lo, hi, s.bins + 1)
    counts = np.zeros(s.bins, np.int64)
    for z0, z1, a, data in slabs("histogram"):
        counts += np.histogram(data[z0 - a: z1 - a], bins=s.bins, range=(lo, hi))[0]
    hist = phases.Histogram(counts, edges)
    model = phases.fit_phase_model(hist, s.method, s.order)
    log.info("%s thresholds %s", s.method, np.round(model.thresholds, 4))

    fine_edges = np.linspace(lo, hi, 4 * s.bins + 1)
    interior = np.zeros((len(phases.PHASE_NAMES), 4 * s.bins), np.int64)
    frac = np.zeros(len(phases.PHASE_NAMES), np.int64)
    per_slice = np.zeros((shape[0], len(phases.PHASE_NAMES)), np.int64)
    with io.atomic_output(phases_path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("phases", shape=shape, dtype=np.uint8, chunks=io.slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        for z0, z1, a, data in slabs("classify"):
            p = classify_slab(data, model, s)
            # one extra slice each side so the erosion of the interior is exact at slab seams
            b0, b1 = max(0, z0 - 1) - a, min(shape[0], z1 + 1) - a
            keep = np.zeros(b1 - b0, bool)
            keep[z0 - a - b0: z1 - a - b0] = True
            interior += phases.interior_histograms(data[b0:b1], p[b0:b1], fine_edges, keep=keep)
            core = p[z0 - a: z1 - a]
            d[z0:z1] = core
            frac += np.bincount(core.ravel(), minlength=len(frac))[: len(frac)]
            flat = core.reshape(z1 - z0, -1)
            for code in phases.PHASE_NAMES:
                per_slice[z0:z1, code] = np.count_nonzero(flat == code, axis=1)
        d.attrs["voxel_size_um"] = np.asarray(voxel)
        d.attrs["codes"] = ", ".join(f"{c}={n}" for c, n in phases.PHASE_NAMES.items())
        d.attrs["method"] = s.method
        d.attrs["thresholds"] = model.thresholds
        d.attrs["means"] = np.asarray(model.means, float)  # grey level of each phase, in ``order``
        d.attrs["order"] = ", ".join(model.names)
    rows = []
    for code, name in phases.PHASE_NAMES.items():
        centre, fwhm = phases.fit_fwhm(interior[code], fine_edges)
        k = model.names.index(name)
        rows.append({"phase": name, "code": code, "centre": centre, "fwhm": fwhm,
                     "interior_voxels": int(interior[code].sum()), "volume_fraction": frac[code] / frac.sum(),
                     "model_mean": model.means[k], "model_fwhm": model.sigmas[k] * phases.FWHM_PER_SIGMA,
                     "threshold_below": model.thresholds[k - 1] if k > 0 else np.nan,
                     "threshold_above": model.thresholds[k] if k < len(model.thresholds) else np.nan})
    return ThresholdResult(model, hist, pd.DataFrame(rows),
                           {phases.PHASE_NAMES[c]: frac[c] / frac.sum() for c in phases.PHASE_NAMES}, per_slice)


def histogram_table(result: ThresholdResult) -> pd.DataFrame:
    """Histogram as a table: bin edges, counts and the phase each bin is assigned to."""
    h = result.histogram
    codes = phases.classify(h.centers, result.model)
    return pd.DataFrame({"bin_low": h.edges[:-1], "bin_high": h.edges[1:], "count": h.counts,
                         "phase": [phases.PHASE_NAMES[int(c)] for c in codes]})
