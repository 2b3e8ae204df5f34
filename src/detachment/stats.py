"""Statistics across particles and cells (main text Fig. 4, Supp. Fig. 8).

Particle-level summaries and tests per group (C-rate), the cell-level test (the cell is the replicate),
detachment by size, Pearson correlations with bootstrap intervals, and the pooled voxel-level Pearson r
of a set of particles from their moments (law of total covariance).

Main entry points: :func:`all_particles`, :func:`analysed_particles`, :func:`by_group`, :func:`by_cell`,
:func:`cell_level_test`, :func:`by_size`, :func:`correlation_table`, :func:`pooled_pearson`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` interval of bootstrap replicates (non-finite ones left out)."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(samples, a)), float(np.quantile(samples, 1 - a))


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Parameters
    ----------
    values : array_like
        The sample; non-finite values are left out.
    n_boot : int, default 2000
        Bootstrap replicates.
    level : float, default 0.95
        Confidence level, 0-1.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    tuple of float
        (low, high), in the values' units; NaN, NaN without finite values.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    return _percentile_ci(rng.choice(v, size=(n_boot, v.size), replace=True).mean(1), level)


def by_group(particles: pd.DataFrame, group: str = "c_rate", value: str = "detachment", seed: int = 0
             ) -> pd.DataFrame:
    """Per group: n, mean, median, std and bootstrap 95 % CI of ``value``; Mann–Whitney U p-value of each
    group against the first group (two-sided).

    The particles are the units of this test: its p-value says the particles of the groups differ, which
    with one cell per group separates two volumes, not two cycling rates (see :func:`cell_level_test`).

    Parameters
    ----------
    particles : pandas.DataFrame
        One row per particle, with the ``group`` and ``value`` columns (NaN values left out).
    group : str, default "c_rate"
        Grouping column; groups in order of first appearance, the first is the reference.
    value : str, default "detachment"
        Column summarised.
    seed : int, default 0
        Seed of the bootstrap.

    Returns
    -------
    pandas.DataFrame
        One row per group: ``group``, ``n``, ``mean``, ``median``, ``std`` (ddof 1), ``ci95_low``,
        ``ci95_high`` (bootstrap CI of the mean, :func:`bootstrap_ci`) and
        ``mannwhitney_p_vs_<first group>`` (NaN for the first group). Empty without particles.
    """
    groups = list(dict.fromkeys(particles[group]))
    if not groups:  # no particle at all (e.g. a model that found none): an empty table, not a crash
        return pd.DataFrame(columns=[group, "n", "mean", "median", "std", "ci95_low", "ci95_high"])
    first = particles.loc[particles[group] == groups[0], value].dropna()
    rows = []
    for g in groups:
        v = particles.loc[particles[group] == g, value].dropna()
        lo, hi = bootstrap_ci(v, seed=seed)
        p = stats.mannwhitneyu(v, first, alternative="two-sided").pvalue if g != groups[0] and len(v) and \
            len(first) else np.nan
        rows.append({group: g, "n": int(v.size), "mean": v.mean(), "median": v.median(),
                     "std": v.std(ddof=1), "ci95_low": lo, "ci95_high": hi, "mannwhitney_p_vs_" + str(groups[0]): p})
    return pd.DataFrame(rows)


def by_cell(particles: pd.DataFrame, group: str = "c_rate", cell: str = "cell", value: str = "detachment"
            ) -> pd.DataFrame:
    """Per cell: its group, particle count and mean / std of ``value`` over its particles.

    Parameters
    ----------
    particles : pandas.DataFrame
        One row per particle with the ``cell``, ``group`` and ``value`` columns (NaN values left out).
    group : str, default "c_rate"
        Grouping column.
    cell : str, default "cell"
        Cell column.
    value : str, default "detachment"
        Column summarised.

    Returns
    -------
    pandas.DataFrame
        Columns ``cell``, ``group``, ``n``, ``mean``, ``std`` (ddof 1), one row per cell, in order of
        first appearance.
    """
    columns = [cell, group, "n", "mean", "std"]
    d = particles.dropna(subset=[value])
    if d.empty:
        return pd.DataFrame(columns=columns)
    g = d.groupby([cell, group], sort=False)[value]
    return pd.DataFrame({"n": g.size(), "mean": g.mean(), "std": g.std(ddof=1)}).reset_index()[columns]


def with_reading_uncertainty(cells: pd.DataFrame, spreads: dict, sample_cells: dict, cell: str = "cell"
                             ) -> pd.DataFrame:
    """Add each cell's contact-reading uncertainty to :func:`by_cell`'s table.

    Parameters
    ----------
    cells : pandas.DataFrame
        :func:`by_cell` output.
    spreads : dict of str to float
        Sample -> ``spread`` of its ``contact_level.csv`` (share of faces on which the level's and the
        deconvolved reading disagree, signed; NaN where not computed).
    sample_cells : dict of str to str
        Sample -> its cell.
    cell : str, default "cell"
        Cell column of ``cells``.

    Returns
    -------
    pandas.DataFrame
        ``cells`` with ``contact_reading_spread``: the largest absolute spread over the cell's samples
        (0-1; NaN where none was computed). A cell mean whose spread is near the C-rate difference
        cannot tell the rates apart by its contacts.
    """
    return _with_per_cell(cells, cell, "contact_reading_spread", {s: abs(float(v)) for s, v in spreads.items()},
                          sample_cells, max)


def with_least_separation(cells: pd.DataFrame, separations: dict, sample_cells: dict, cell: str = "cell"
                          ) -> pd.DataFrame:
    """Add how well each cell's contact readings told gap from CBD to :func:`by_cell`'s table.

    Parameters
    ----------
    cells : pandas.DataFrame
        :func:`by_cell` output.
    separations : dict of str to float
        Sample -> ``separation`` of its ``contact_level.csv`` (Ashman's D of the gap and CBD Gaussians;
        NaN where nothing was fitted).
    sample_cells : dict of str to str
        Sample -> its cell.
    cell : str, default "cell"
        Cell column of ``cells``.

    Returns
    -------
    pandas.DataFrame
        ``cells`` with ``contact_separation_min``: the least separation over the cell's samples (NaN where
        none was fitted). Below :data:`detachment.plausibility.WEAK_CONTACT_SEPARATION` the cell's
        detachment carries more than its ``detachment_ambiguous_mean`` suggests.
    """
    return _with_per_cell(cells, cell, "contact_separation_min", {s: float(v) for s, v in separations.items()},
                          sample_cells, min)


def with_widest_edges(cells: pd.DataFrame, widths: dict, sample_cells: dict, cell: str = "cell") -> pd.DataFrame:
    """Add ``edge_width_max`` to :func:`by_cell`'s table: per cell, the widest step along the grid over its
    samples (σ, voxels; ``contact_level.csv`` ``edge_width``, sample -> float in ``widths``; NaN where none was
    measured). Beyond :data:`detachment.plausibility.MAX_CHECKED_EDGE_WIDTH` the cell's contacts were read
    with a warning (``sample_cells``: sample -> its cell; ``cell``: the cell column)."""
    return _with_per_cell(cells, cell, "edge_width_max", {s: float(v) for s, v in widths.items()}, sample_cells, max)


def uncertain_cells_note(cells: pd.DataFrame, cell: str = "cell") -> str:
    """A sentence naming the cells of :func:`with_least_separation`'s (and :func:`with_widest_edges`') table
    whose contact reading warned (gap and CBD only weakly separated,
    :func:`detachment.plausibility.weakly_separated`; edges wider than the reading is checked on,
    :func:`detachment.plausibility.edges_wide`), each with why and its ``detachment_ambiguous_mean`` where
    present (how far its mean may be off); "" where none warned."""
    from .plausibility import WEAK_CONTACT_SEPARATION, edges_wide, weakly_separated

    named = []
    for row in cells.to_dict("records"):
        d, width = row.get("contact_separation_min", np.nan), row.get("edge_width_max", np.nan)
        why = ([f"D {d:.2f}"] if weakly_separated(d) else []) + \
              ([f"edges {width:.2f} vox wide"] if edges_wide(width) else [])
        if why:
            share = float(row.get("detachment_ambiguous_mean", np.nan))
            named.append(f"{row[cell]} ({', '.join(why)}"
                         + (f", detachment_ambiguous_mean {share:.3f})" if np.isfinite(share) else ")"))
    if not named:
        return ""
    return (f"{len(named)} of {len(cells)} cells were read with a warning on their contacts (gap and CBD only "
            f"weakly separated, D below {WEAK_CONTACT_SEPARATION:g}, or edges wider than the reading is checked on): {', '.join(named)}; "
            f"their mean detachment may be off by up to their detachment_ambiguous_mean, so a difference "
            f"between cells smaller than that is not measured (detachment_by_cell.csv)")


def with_failed_checks(cells: pd.DataFrame, failed: dict, sample_cells: dict, cell: str = "cell") -> pd.DataFrame:
    """Add ``checks_failed`` to :func:`by_cell`'s table: per cell, ``"sample: check, check"`` for each of its
    samples with a failed check (``failed``: sample -> :func:`detachment.checks_record.failed_checks`), joined
    by ``"; "``; ``""`` where every check passed. A cell so named went on only because the run was told to
    warn (``sample_cells``: sample -> its cell; ``cell``: the cell column)."""
    per_cell: dict = {}
    for sample, c in sample_cells.items():
        if failed.get(sample):
            per_cell.setdefault(c, []).append(f"{sample}: {', '.join(failed[sample])}")
    out = cells.copy()
    out["checks_failed"] = ["; ".join(per_cell.get(c, [])) for c in out[cell]]
    return out


def failed_cells_note(cells: pd.DataFrame, cell: str = "cell") -> str:
    """A sentence naming the cells of :func:`with_failed_checks`' table whose samples failed a check and
    went on (the run told to warn), with the checks; "" where none did."""
    named = [f"{row[cell]} ({row['checks_failed']})" for row in cells.to_dict("records") if row.get("checks_failed")]
    if not named:
        return ""
    return (f"{len(named)} of {len(cells)} cells went on although checks failed, because the run was told to "
            f"warn: {'; '.join(named)}; their detachment is not a measurement these checks stand behind, so "
            f"leave them out of comparisons or say so (detachment_by_cell.csv checks_failed)")


def _with_per_cell(cells: pd.DataFrame, cell: str, column: str, values: dict, sample_cells: dict, reduce
                   ) -> pd.DataFrame:
    """``cells`` with ``column``: per cell, ``reduce`` (``min`` or ``max``) of its samples' finite ``values``
    (sample -> float; ``sample_cells``: sample -> cell); NaN for a cell with none."""
    per_cell = {}
    for sample, c in sample_cells.items():
        v = values.get(sample, np.nan)
        if np.isfinite(v):
            per_cell[c] = reduce(per_cell[c], v) if c in per_cell else v
    out = cells.copy()
    out[column] = [per_cell.get(c, np.nan) for c in out[cell]]
    return out


def with_undecided_share(cells: pd.DataFrame, particles: pd.DataFrame, cell: str = "cell",
                         value: str = "detachment") -> pd.DataFrame:
    """Add each cell's mean share of undecided surface to :func:`by_cell`'s table.

    Parameters
    ----------
    cells : pandas.DataFrame
        :func:`by_cell` output.
    particles : pandas.DataFrame
        The particles the table was made of, with ``cell`` and ``detachment_ambiguous`` (``particles.csv``:
        the share of a particle's surface the contact reading leaves undecided, 0-1; NaN where not read).
    cell, value : str, default "cell", "detachment"
        Cell column of both tables; the column :func:`by_cell` summarised (particles without it are left
        out, as there).

    Returns
    -------
    pandas.DataFrame
        ``cells`` with ``detachment_ambiguous_mean``: the mean of the cell's particles' shares (NaN where
        none has one): how far the cell mean would move were all those faces read the other way. Where
        they err both ways the mean moves far less, and faces the map itself misplaces (a thin coat
        merged into its particle) are not among them: neither an error bar nor a bound.
    """
    out = cells.copy()
    if "detachment_ambiguous" not in particles:
        out["detachment_ambiguous_mean"] = np.nan
        return out
    means = particles.dropna(subset=[value]).groupby(cell, sort=False)["detachment_ambiguous"].mean()
    out["detachment_ambiguous_mean"] = [float(means.get(c, np.nan)) for c in out[cell]]
    return out


#: Above this many ways to split the cells, the permutation test samples splits instead of listing them.
EXACT_PERMUTATIONS_MAX = 100_000


def _permutation_p(a: np.ndarray, b: np.ndarray, n_random: int = 20_000, seed: int = 0) -> float:
    """Two-sided permutation p-value of the difference of means of ``a`` and ``b``: exact over every split
    of the pooled values into groups of their sizes, or, beyond :data:`EXACT_PERMUTATIONS_MAX` splits,
    over ``n_random`` seeded random splits (counting the observed one)."""
    from itertools import combinations
    from math import comb

    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean()) - 1e-12
    if comb(len(pooled), len(a)) <= EXACT_PERMUTATIONS_MAX:
        sums = np.array([pooled[list(idx)].sum() for idx in combinations(range(len(pooled)), len(a))])
        return float(np.mean(np.abs(sums / len(a) - (pooled.sum() - sums) / len(b)) >= observed))
    rng = np.random.default_rng(seed)
    draws = np.array([rng.permutation(pooled)[: len(a)].sum() for _ in range(n_random)])
    diffs = np.abs(draws / len(a) - (pooled.sum() - draws) / len(b))
    return float((1 + np.sum(diffs >= observed)) / (1 + n_random))


def cell_level_test(cells: pd.DataFrame, group: str = "c_rate") -> pd.DataFrame:
    """Tests between groups on the cells' means (the cell is the replicate, not the particle).

    Parameters
    ----------
    cells : pandas.DataFrame
        :func:`by_cell` output (one row per cell, ``mean`` = its mean over particles).
    group : str, default "c_rate"
        The grouping column; each group is tested against the first.

    Returns
    -------
    pandas.DataFrame
        Per group: ``n_cells``, ``cell_mean`` and ``cell_sd`` (over cell means, ddof 1),
        ``welch_p_cells_vs_<first>``, the Welch t-test p-value of the cell means against the first
        group (needs two cells in each), and ``permutation_p_cells_vs_<first>``, the two-sided
        permutation p-value of the difference of means (exact up to :data:`EXACT_PERMUTATIONS_MAX`
        splits, else 20 000 seeded random splits; with two cells per group its smallest possible value
        is 1/3). p-values are NaN for the first group.
    """
    groups = list(dict.fromkeys(cells[group]))
    if not groups:
        return pd.DataFrame(columns=[group, "n_cells", "cell_mean", "cell_sd"])
    first = cells.loc[cells[group] == groups[0], "mean"].to_numpy(float)
    rows = []
    for g in groups:
        v = cells.loc[cells[group] == g, "mean"].to_numpy(float)
        test = g != groups[0] and len(v) >= 2 and len(first) >= 2
        rows.append({group: g, "n_cells": len(v), "cell_mean": v.mean(),
                     "cell_sd": v.std(ddof=1) if len(v) > 1 else np.nan,
                     f"welch_p_cells_vs_{groups[0]}": stats.ttest_ind(v, first, equal_var=False).pvalue
                     if test else np.nan,
                     f"permutation_p_cells_vs_{groups[0]}": _permutation_p(v, first) if test else np.nan})
    return pd.DataFrame(rows)


def by_size(particles: pd.DataFrame, n_bins: int = 5, value: str = "detachment") -> pd.DataFrame:
    """Detachment in diameter quantile bins: mean, SEM across particles, and the mean per-particle
    measurement uncertainty (``detachment_std``), which is larger for small particles (fewer faces).

    Parameters
    ----------
    particles : pandas.DataFrame
        One row per particle with ``diameter_um``, ``value`` and optionally ``detachment_std``.
    n_bins : int, default 5
        Number of quantile bins of the diameter (fewer where quantiles coincide).
    value : str, default "detachment"
        Column summarised (NaN rows left out).

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``diameter_low_um``, ``diameter_high_um`` (µm), ``n``, ``mean``, ``sem`` (NaN
        below two particles) and ``measurement_std_mean`` (mean ``detachment_std``, whatever ``value``
        is; NaN without that column).
    """
    columns = ["diameter_low_um", "diameter_high_um", "n", "mean", "sem", "measurement_std_mean"]
    d = particles.dropna(subset=[value])
    if d.empty:
        return pd.DataFrame(columns=columns)
    edges = np.unique(np.quantile(d.diameter_um.astype(float), np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.digitize(d.diameter_um, edges) - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        g = d[which == b]
        rows.append({"diameter_low_um": edges[b], "diameter_high_um": edges[b + 1], "n": len(g),
                     "mean": g[value].mean(), "sem": g[value].std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else np.nan,
                     "measurement_std_mean": g["detachment_std"].mean() if "detachment_std" in g else np.nan})
    return pd.DataFrame(rows, columns=columns)  # one particle: one edge, no bin


def correlation(x, y) -> tuple[float, float]:
    """Pearson r and its two-sided p-value, finite pairs only.

    Parameters
    ----------
    x, y : array_like
        Paired values of equal length.

    Returns
    -------
    tuple of float
        (r, p); NaN, NaN with fewer than 3 finite pairs.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan"), float("nan")
    r = stats.pearsonr(x[ok], y[ok])
    return float(r.statistic), float(r.pvalue)


def pearson_bootstrap_ci(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of Pearson r, resampling (x, y) pairs; finite pairs only.

    Parameters
    ----------
    x, y : array_like
        Paired values of equal length.
    n_boot : int, default 2000
        Bootstrap replicates.
    level : float, default 0.95
        Confidence level, 0-1.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    tuple of float
        (low, high); NaN, NaN with fewer than 3 finite pairs.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, x.size, (n_boot, x.size))
    xb, yb = x[idx], y[idx]
    xb = xb - xb.mean(1, keepdims=True)
    yb = yb - yb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xb * yb).sum(1) / np.sqrt((xb**2).sum(1) * (yb**2).sum(1))
    return _percentile_ci(r, level)


def _pooled(w, n, mx, my, sx, sy, cxy):
    """Pooled Pearson r of groups weighted ``w`` (rows of bootstrap weights, or one row of ones)."""
    wn = w * n
    tot = wn.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ex, ey = (wn @ mx) / tot, (wn @ my) / tot
        vx = (wn @ (sx**2 + mx**2)) / tot - ex**2
        vy = (wn @ (sy**2 + my**2)) / tot - ey**2
        c = (wn @ (cxy + mx * my)) / tot - ex * ey
        return c / np.sqrt(vx * vy)


def _usable_groups(*moments) -> list[np.ndarray]:
    """The groups' (n, moments...) arrays restricted to groups with n > 0 and finite moments."""
    arrs = [np.asarray(a, float) for a in moments]
    ok = (arrs[0] > 0) & np.all([np.isfinite(a) for a in arrs], axis=0)
    return [a[ok] for a in arrs]


def pooled_pearson(n, mean_x, mean_y, std_x, std_y, cov_xy) -> float:
    """Pearson r over the union of groups (e.g. the voxels of several particles) from each group's size
    and population moments (means, standard deviations and covariance with ddof = 0): the law of total
    covariance, exact. Groups with ``n`` = 0 or non-finite moments are left out.

    Parameters
    ----------
    n : array_like
        (k,) size of each group (e.g. voxels per particle).
    mean_x, mean_y : array_like
        (k,) group means of x and y.
    std_x, std_y : array_like
        (k,) group population standard deviations (ddof 0).
    cov_xy : array_like
        (k,) group population covariances (ddof 0).

    Returns
    -------
    float
        Pearson r of the pooled values; NaN without a usable group.
    """
    groups = _usable_groups(n, mean_x, mean_y, std_x, std_y, cov_xy)
    if groups[0].size == 0:
        return float("nan")
    return float(_pooled(np.ones(groups[0].size), *groups))


def cluster_bootstrap_pooled_ci(n, mean_x, mean_y, std_x, std_y, cov_xy, n_boot: int = 2000,
                                level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`pooled_pearson`, resampling whole groups (a cluster bootstrap:
    voxels of one particle are not independent).

    Parameters
    ----------
    n, mean_x, mean_y, std_x, std_y, cov_xy : array_like
        (k,) group sizes and population moments, as for :func:`pooled_pearson`.
    n_boot : int, default 2000
        Bootstrap replicates.
    level : float, default 0.95
        Confidence level, 0-1.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    tuple of float
        (low, high); NaN, NaN with fewer than 3 usable groups.
    """
    groups = _usable_groups(n, mean_x, mean_y, std_x, std_y, cov_xy)
    k = groups[0].size
    if k < 3:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, k, (n_boot, k))
    w = np.zeros((n_boot, k))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)  # how often each group is drawn per replicate
    return _percentile_ci(_pooled(w, *groups), level)


#: (x, y) column pairs of the correlation table (Supp. Fig. 8 and the damage analysis).
CORRELATION_PAIRS = (("detachment", "electron_density_mean"), ("detachment", "nmc_high_fraction"),
                     ("detachment", "mean_um"), ("detachment", "diameter_um"),
                     ("crack_surface_per_volume_per_um", "height_um"))


def all_particles(tables: list[pd.DataFrame], samples, cells, c_rates) -> pd.DataFrame:
    """One table of every sample's particles, with ``sample``, ``cell`` and ``c_rate`` in front.

    Parameters
    ----------
    tables : list of pandas.DataFrame
        Per-sample particle tables (particles joined with diffusion), in the order of ``samples``.
    samples, cells, c_rates : sequence
        Each table's sample name, cell and C-rate.

    Returns
    -------
    pandas.DataFrame
        The tables concatenated, ``sample``, ``cell`` and ``c_rate`` first. A sample with no particle
        contributes no rows (its empty table would turn every column to object dtype); ``touches_border``
        stays boolean.
    """
    tables = [t.copy() for t in tables]
    for t, sample, cell, rate in zip(tables, samples, cells, c_rates):
        t.insert(0, "sample", sample)
        t.insert(1, "cell", cell)
        t.insert(2, "c_rate", rate)
    return pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)


def analysed_particles(particles: pd.DataFrame, exclude_border: bool) -> pd.DataFrame:
    """The particles the statistics use: all, or those not cut by the volume's border.

    Parameters
    ----------
    particles : pandas.DataFrame
        From :func:`all_particles`; its ``touches_border`` is made boolean in place (an empty sample's
        table leaves it as object dtype).
    exclude_border : bool
        Leave out particles with ``touches_border``.

    Returns
    -------
    pandas.DataFrame
        ``particles`` itself, or its rows not touching the border.
    """
    if "touches_border" in particles:
        particles["touches_border"] = particles.touches_border.astype("boolean").fillna(False).astype(bool)
    return particles[~particles.touches_border] if exclude_border and "touches_border" in particles else particles


def correlation_table(particles: pd.DataFrame, pairs=CORRELATION_PAIRS) -> pd.DataFrame:
    """Pearson r, its p-value and n for each (x, y) column pair (rows with NaN in either left out).

    Parameters
    ----------
    particles : pandas.DataFrame
        One row per particle with the columns of ``pairs``.
    pairs : sequence of (str, str), default :data:`CORRELATION_PAIRS`
        (x, y) column pairs.

    Returns
    -------
    pandas.DataFrame
        Columns ``x``, ``y``, ``pearson_r``, ``p_value``, ``n``.
    """
    rows = []
    for x, y in pairs:
        r, pv = correlation(particles[x], particles[y])
        rows.append({"x": x, "y": y, "pearson_r": r, "p_value": pv, "n": int(particles[[x, y]].dropna().shape[0])})
    return pd.DataFrame(rows)
