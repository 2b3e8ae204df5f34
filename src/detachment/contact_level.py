"""The grey level that tells an electrolyte gap from CBD just outside a particle, fitted per volume.

Axes (z, y, x). A particle's surface faces electrolyte (detached) or CBD / Al / another particle. On a
reconstruction the voxel across a face is mixed with the bright particle by the point-spread function:
an electrolyte gap beside NMC reads well above the void grey level, CBD well above the CBD level, both
lifted by about the same spill. The volume-wide void/CBD threshold (placed for the bulk phases) and their
midpoint leave part of the gaps on the CBD side (measured on the default phantoms with the truth's
envelopes: detachment biased -0.026 / -0.008, 1C / C/10).

Over all particles of a volume, the grey levels of the face neighbours that are background (void or CBD
in the phase map) are bimodal: gap and CBD, each lifted by the spill. :func:`fit_contact_level` fits two
Gaussians to them by expectation-maximisation and returns the level where the weighted components are
equal. It needs no knowledge of the point-spread function and adapts to each volume's contrast. Where the
grey levels are not bimodal (Ashman's D < 2, or a component under 2 % of the faces: a sample with almost
no detachment or almost no coating), the fit is not trusted and the void/CBD midpoint of the phase model
is used instead (``fitted`` = False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .phases import CBD, VOID, gmm_decision_thresholds
from .surface import _pairs

MIN_ASHMAN_D = 2.0
MIN_WEIGHT = 0.02
MAX_FIT_VALUES = 200_000


@dataclass
class ContactLevel:
    """A fitted (or fallback) contact level and the two components it came from (grey-level units)."""

    level: float
    fitted: bool
    gap_mean: float = float("nan")
    gap_sigma: float = float("nan")
    gap_weight: float = float("nan")
    cbd_mean: float = float("nan")
    cbd_sigma: float = float("nan")
    cbd_weight: float = float("nan")
    n_faces: int = 0

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(self)])

    @classmethod
    def read_csv(cls, path) -> ContactLevel:
        """From a one-row table written by :meth:`to_frame`; ``ValueError`` naming the file otherwise. The
        level may be NaN only where it was not fitted (no grey levels to fall back on: phases only)."""
        t = pd.read_csv(path)
        missing = sorted({"level", "fitted"} - set(t.columns))
        if len(t) != 1 or missing:
            raise ValueError(f"{path}: expected one row with columns 'level' and 'fitted' (missing {missing}, "
                             f"{len(t)} rows)")
        if t.fitted.iloc[0] not in (True, False) or \
                not (np.isfinite(float(t.level.iloc[0])) or not bool(t.fitted.iloc[0])):
            raise ValueError(f"{path}: 'fitted' must be True or False and a fitted 'level' finite")
        row = t.iloc[0].to_dict()
        names = set(cls.__dataclass_fields__)
        row = {k: v for k, v in row.items() if k in names}
        row["fitted"] = bool(row["fitted"])
        row["n_faces"] = int(row.get("n_faces", 0))
        return cls(**row)


def face_neighbour_levels(envelope: np.ndarray, others: np.ndarray, phases: np.ndarray,
                          intensity: np.ndarray) -> np.ndarray:
    """Grey levels of the voxels across the faces of ``envelope`` (boolean) that are background (not in
    ``others``) and void or CBD in ``phases``; faces on the array border are left out."""
    background = ~envelope & ~others & ((phases == VOID) | (phases == CBD))
    out = []
    for axis in range(3):
        a, b = _pairs(envelope.shape, axis)  # each voxel and its +1 neighbour along the axis
        out.append(intensity[b][envelope[a] & background[b]])  # face towards +axis
        out.append(intensity[a][envelope[b] & background[a]])  # face towards -axis
    return np.concatenate(out).astype(np.float64)


def _two_gaussians_em(x: np.ndarray, iterations: int = 200, tol: float = 1e-7):
    """Means, sigmas and weights (ascending means) of a two-component 1D Gaussian mixture by EM.

    Fitted on every value, not on the histogram's peak cores as the phase model is: here the tails are the
    signal (gaps at a patch's edge read half way). On the default 1C phantom a peak-core fit put the cut
    at 0.283 instead of 0.269, and the truth's envelopes' faces read 1.2 % too detached at 0.28, 0.5 %
    at 0.27 (measured)."""
    mu = np.percentile(x, [20.0, 80.0])
    sd = np.full(2, max(x.std() / 2, 1e-6))
    w = np.array([0.5, 0.5])
    prev = -np.inf
    for _ in range(iterations):
        dens = w / sd * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2)
        total = dens.sum(1, keepdims=True) + 1e-300
        resp = dens / total
        n = resp.sum(0) + 1e-12
        w = n / len(x)
        mu = (resp * x[:, None]).sum(0) / n
        sd = np.maximum(np.sqrt((resp * (x[:, None] - mu) ** 2).sum(0) / n), 1e-6)
        ll = float(np.log(total).sum())
        if ll - prev < tol * abs(ll):
            break
        prev = ll
    order = np.argsort(mu)
    return mu[order], sd[order], w[order]


def fit_contact_level(values, fallback: float, min_faces: int = 200) -> ContactLevel:
    """:class:`ContactLevel` from face-neighbour grey levels (:func:`face_neighbour_levels` over all
    particles); ``fallback`` (the void/CBD midpoint) where there are fewer than ``min_faces`` values or
    they are not bimodal."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < min_faces:
        return ContactLevel(float(fallback), False, n_faces=int(x.size))
    # EM cost grows with the faces; 200 000 of them (a fixed random subset) pin the components well enough
    sample = x if x.size <= MAX_FIT_VALUES else np.random.default_rng(0).choice(x, MAX_FIT_VALUES, replace=False)
    mu, sd, w = _two_gaussians_em(sample)
    ashman_d = np.sqrt(2) * abs(mu[1] - mu[0]) / np.sqrt(sd[0] ** 2 + sd[1] ** 2)
    comps = dict(gap_mean=float(mu[0]), gap_sigma=float(sd[0]), gap_weight=float(w[0]), cbd_mean=float(mu[1]),
                 cbd_sigma=float(sd[1]), cbd_weight=float(w[1]), n_faces=int(x.size))
    if ashman_d < MIN_ASHMAN_D or w.min() < MIN_WEIGHT:
        return ContactLevel(float(fallback), False, **comps)
    # where the weighted densities cross between the means, as the phase model cuts its classes
    level = float(gmm_decision_thresholds(mu, sd, w, np.linspace(mu[0], mu[1], 4001))[0])
    return ContactLevel(level, True, **comps)
