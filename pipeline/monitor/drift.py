"""Drift between DP releases that their noise cannot fake, and drift of the published rows.

A released value is the cohort's true value plus noise of known variance (its `_noise_scale`
column and the release's mechanism), so a day-over-day difference is tested against the noise
of both releases, never against a fixed threshold (which alarms on noise when cohorts are
small and misses real shifts when they are large). Post-processing of released values only:
no budget is spent and no unreleased value is read.

For each released value column and each cohort in both releases, the difference
`x_now - x_before` is the sum of two draws of noise (Laplace or Gaussian, each of its own
published scale) and of the cohort's day-to-day variation without any drift (other users are
active, each does other things). That variation is not noise and not drift. It is modelled as
Gaussian with a variance that follows the cohort's size (`c n` for counts, `c / n` for
means, `c q(1 - q) / n` for shares and rates; n the released user count of each day, q the
value), and `c` is estimated per value column, within up to `SIZE_BANDS` bands of cohorts of
similar size (real variation does not grow exactly as modelled), from the comparison itself
and earlier ones (`history`: the monitor stage pools the last `monitor.history_releases`),
robustly, as genomic control does in association studies (Devlin and Roeder, 1999): the
`c >= 0` at which the median cohort's evidence is what no drift gives, over the cohorts of at
least `MIN_USERS_TO_ESTIMATE` users (smaller ones are mostly clipped noise). A drift confined to
a minority of cohorts (one region) cannot hide itself this way, and the noise is always
accounted for in full.

Each cohort's p-value is exact for that model: Laplace noise has far heavier tails than a
Gaussian of the same variance (at 3,000 tests a Gaussian test alarms on noise alone on most
days), so the difference of two Laplace draws is taken as it is (its closed-form tail) and the
Gaussian part integrated by Gauss-Hermite quadrature. Each p-value is then turned into a
calibrated z (the normal quantile of the same tail, signed), and those combine exactly:
- each cohort (`cohort`);
- each value of each dimension, its cohorts' z by Stouffer's sum (`slice`: "region=Texas"),
  which sees a shift spread thinly across one region's cohorts;
- each value column as a whole, the sum of its z^2 against a chi-square (`feature`).
All p-values of a comparison are controlled together by Benjamini-Hochberg at `alpha`: with no
drift anywhere, the chance that a comparison raises any alarm is at most about `alpha`.

Published per-event rows are already k-anonymous and exact: each categorical column's
distribution is compared with the previous day's by the Jensen-Shannon distance (SciPy) and the
population stability index, against configured thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats
from scipy.spatial.distance import jensenshannon

from pipeline.features.base import DIMENSIONS, Variation
from pipeline.monitor.model import ColumnDrift, DriftFinding, FeatureDrift, NoiseKind, ValueDrift

CHI2_1_MEDIAN = float(stats.chi2.ppf(0.5, 1))  # 0.4549...
MIN_COHORTS_TO_ESTIMATE = 20  # fewer: no day-to-day variation is estimated (c = 0)
# Cohorts smaller than this (released users, either day) do not inform the estimate: their
# values are mostly noise clipped to the value's range, which varies less than the noise scale
# says, and would pull the median down.
MIN_USERS_TO_ESTIMATE = 10
SIZE_BANDS = 4  # the variation is estimated within up to this many bands of cohort size
PSI_EPS = 1e-4  # a category absent one day counts as this share, as PSI tools do
_HERMITE = np.polynomial.hermite.hermgauss(48)


def benjamini_hochberg(p: np.ndarray, alpha: float) -> np.ndarray:
    """Which p-values are rejected with the false discovery rate held at `alpha`."""
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    if m == 0:
        return reject
    order = np.argsort(p)
    passed = np.nonzero(p[order] <= alpha * np.arange(1, m + 1) / m)[0]
    if passed.size:
        reject[order[: passed.max() + 1]] = True
    return reject


def laplace_difference_tail(t: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """P(|L1 - L2| > t) for independent Laplace draws of scales b1 and b2 (t >= 0)."""
    t, b1, b2 = np.broadcast_arrays(np.asarray(t, float), np.asarray(b1, float),
                                    np.asarray(b2, float))
    same = np.isclose(b1, b2, rtol=1e-9)
    b = np.where(same, b1, 1.0)
    equal = (1 + t / (2 * b)) * np.exp(-t / b)
    d1, d2 = np.where(same, 1.0, b1), np.where(same, 2.0, b2)
    with np.errstate(over="ignore", invalid="ignore"):
        unequal = (d1**2 * np.exp(-t / d1) - d2**2 * np.exp(-t / d2)) / (d1**2 - d2**2)
    return np.clip(np.where(same, equal, unequal), 0.0, 1.0)


def difference_p_values(delta: np.ndarray, s1: np.ndarray, s2: np.ndarray,
                        variation: np.ndarray, kind: NoiseKind) -> np.ndarray:
    """Two-sided P(|D| >= |delta|) where D is the difference of two noise draws (scales s1
    and s2: Laplace b or Gaussian sigma) plus N(0, variation)."""
    t = np.abs(delta)
    if kind == "gaussian":
        return 2 * stats.norm.sf(t / np.sqrt(s1**2 + s2**2 + variation))
    sd = np.sqrt(np.maximum(variation, 0.0))
    nodes, weights = _HERMITE
    # P(D + S > t) = E_S P(D > t - S); two-sided by symmetry
    a = t[:, None] - np.sqrt(2) * sd[:, None] * nodes[None, :]
    tail = laplace_difference_tail(np.abs(a), s1[:, None], s2[:, None])
    above = np.where(a >= 0, 0.5 * tail, 1 - 0.5 * tail)
    return np.clip(2 * (above @ weights) / np.sqrt(np.pi), 0.0, 1.0)


def calibrated_z(p: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """The standard normal z with the same two-sided tail as `p`, signed."""
    return np.sign(sign) * stats.norm.isf(np.clip(p, 1e-300, 1.0) / 2)


def _variation_scale(delta: np.ndarray, s1: np.ndarray, s2: np.ndarray, size: np.ndarray,
                     kind: NoiseKind) -> float:
    """The `c` at which the median cohort's calibrated z^2 is what no drift gives (0 when the
    noise alone explains more than that): monotone in c, found by bisection on a log scale."""
    def excess(c: float) -> float:
        p = difference_p_values(delta, s1, s2, c * size, kind)
        return float(np.median(calibrated_z(p, np.ones_like(p)) ** 2)) - CHI2_1_MEDIAN

    if len(delta) < MIN_COHORTS_TO_ESTIMATE or excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, float(np.median(delta**2 / np.maximum(size, 1e-12))) or 1.0
    while excess(hi) > 0:
        hi *= 4
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def _variation_by_size(pool: _Pairs, size: np.ndarray, kind: NoiseKind) -> np.ndarray:
    """The `c` of cohorts of `size`, estimated within bands of cohorts of similar size in
    `pool` (up to `SIZE_BANDS`, each of at least `MIN_COHORTS_TO_ESTIMATE` informative
    cohorts): real variation does not grow exactly as the model says (a region's weather moves
    all of its users at once, which grows as n^2, not n), and one `c` for all would
    under-cover the largest cohorts. Sizes outside the bands take the nearest band's."""
    idx = np.nonzero(pool.informs)[0]
    bands = max(1, min(SIZE_BANDS, len(idx) // MIN_COHORTS_TO_ESTIMATE))
    order = idx[np.argsort(pool.size[idx], kind="stable")]
    edges: list[float] = []
    values: list[float] = []
    for band in np.array_split(order, bands):
        if band.size == 0:
            continue
        values.append(_variation_scale(pool.delta[band], pool.s0[band], pool.s1[band],
                                       pool.size[band], kind))
        edges.append(float(pool.size[band].max()))
    if not values:
        return np.zeros(len(size))
    which = np.searchsorted(np.array(edges[:-1]), size, side="left")
    return np.array(values)[np.minimum(which, len(values) - 1)]


@dataclass(frozen=True)
class _Pairs:
    """One value column's cohorts in two releases: the difference, both noise scales, the
    size its variation grows with, and whether the cohort is large enough to inform `c`."""

    table: pl.DataFrame
    delta: np.ndarray
    s0: np.ndarray
    s1: np.ndarray
    size: np.ndarray
    informs: np.ndarray

    @classmethod
    def of(cls, before: pl.DataFrame, now: pl.DataFrame, value: str, grows: Variation,
           users: str) -> _Pairs:
        joined = before.join(now, on="cohort_id", how="inner", suffix="_now")
        n0, n1 = ((pl.col(c).clip(1, None).cast(pl.Float64) if users in joined.columns
                   else pl.lit(1.0)) for c in (users, f"{users}_now"))
        q = ((pl.col(value) + pl.col(f"{value}_now")) / 2).clip(0.01, 0.99)
        size = (n0 + n1 if grows == "count"
                else (1 / n0 + 1 / n1) * (q * (1 - q) if grows == "share" else 1))
        part = joined.select(
            "cohort_id", *DIMENSIONS, pl.col(value).cast(pl.Float64).alias("x0"),
            pl.col(f"{value}_now").cast(pl.Float64).alias("x1"),
            pl.col(f"{value}_noise_scale").alias("s0"),
            pl.col(f"{value}_noise_scale_now").alias("s1"), size.alias("size"),
            (pl.min_horizontal(n0, n1) >= MIN_USERS_TO_ESTIMATE).alias("informs"),
        ).drop_nulls(["x0", "x1", "s0", "s1"]).filter((pl.col("s0") > 0) & (pl.col("s1") > 0))
        s0, s1, sz = (part[c].to_numpy().astype(float) for c in ("s0", "s1", "size"))
        return cls(part, (part["x1"] - part["x0"]).to_numpy(), s0, s1, sz,
                   part["informs"].to_numpy())

    @staticmethod
    def pooled(pairs: Sequence[_Pairs]) -> _Pairs:
        delta, s0, s1, size, informs = (np.concatenate([getattr(p, f) for p in pairs])
                                        for f in ("delta", "s0", "s1", "size", "informs"))
        return _Pairs(pl.DataFrame(), delta, s0, s1, size, informs)


def feature_drift(before: pl.DataFrame, now: pl.DataFrame, variation: dict[str, Variation], *,
                  kind: NoiseKind, users: str = "active_users", alpha: float = 0.01,
                  history: Sequence[tuple[pl.DataFrame, pl.DataFrame]] = (),
                  max_findings: int = 50) -> FeatureDrift:
    """Compare two releases of one feature set (see the module docstring). `variation` names
    each released value column to test and how its day-to-day variation grows with the
    cohort's users (`users`, the released count, read from both releases). `history`: earlier
    pairs of consecutive releases, pooled with this one to estimate the day-to-day variation
    (more cohorts give a steadier estimate; a drift that starts today is then a smaller part
    of what it is estimated from)."""
    joined = before.join(now, on="cohort_id", how="inner")
    rows: list[tuple[str, Literal["cohort", "slice", "feature"], str, float | None,
                     float | None, float, float]] = []  # ..., z, p
    summaries: list[ValueDrift] = []
    for value, grows in variation.items():
        pair = _Pairs.of(before, now, value, grows, users)
        if pair.table.height == 0:
            continue
        earlier = [_Pairs.of(b, n, value, grows, users) for b, n in history
                   if value in b.columns and value in n.columns]
        c = _variation_by_size(_Pairs.pooled([pair, *earlier]), pair.size, kind)
        part, delta, s0, s1, sz = pair.table, pair.delta, pair.s0, pair.s1, pair.size
        p = difference_p_values(delta, s0, s1, c * sz, kind)
        z = calibrated_z(p, delta)
        noise_var = (2 if kind == "laplace" else 1) * (s0**2 + s1**2)
        share = float(np.median(c * sz / (c * sz + noise_var)))
        chi = float(np.sum(z**2))
        p_all = float(stats.chi2.sf(chi, part.height))
        summaries.append(ValueDrift(value=value, cohorts=part.height,
                                    variation_share=round(share, 4), p_value=p_all,
                                    max_abs_z=round(float(np.abs(z).max()), 4)))
        rows.append((value, "feature", "all cohorts", None, None, math.sqrt(chi), p_all))
        rows += [(value, "cohort", cid, x0, x1, float(zc), float(pc)) for cid, x0, x1, zc, pc
                 in zip(part["cohort_id"], part["x0"], part["x1"], z, p, strict=True)]
        part = part.with_columns(z=pl.Series(z))
        for dim in DIMENSIONS:
            sl = part.group_by(dim).agg(pl.col("z").sum() / pl.len().sqrt(),
                                        pl.col("x0").mean(), pl.col("x1").mean(),
                                        pl.len().alias("n")).filter(pl.col("n") > 1)
            rows += [(value, "slice", f"{dim}={key}", x0, x1, float(zs),
                      float(2 * stats.norm.sf(abs(zs))))
                     for key, zs, x0, x1 in zip(sl[dim], sl["z"], sl["x0"], sl["x1"],
                                                strict=True)]
    p_values = np.array([r[-1] for r in rows], dtype=float)
    reject = benjamini_hochberg(p_values, alpha)
    found = sorted(np.nonzero(reject)[0], key=lambda i: (p_values[i], -abs(rows[i][5])))
    findings = [DriftFinding(value=rows[i][0], scope=rows[i][1], where=rows[i][2],
                             before=rows[i][3], now=rows[i][4], z=round(rows[i][5], 4),
                             p_value=float(p_values[i])) for i in found[:max_findings]]
    cohorts_before, cohorts_now = set(before["cohort_id"]), set(now["cohort_id"])
    return FeatureDrift(
        release_date=_date_of(now), previous_date=_date_of(before), alpha=alpha,
        tests=len(rows), cohorts_compared=joined.height,
        cohorts_appeared=len(cohorts_now - cohorts_before),
        cohorts_disappeared=len(cohorts_before - cohorts_now),
        values=summaries, findings=findings, significant=int(reject.sum()))


def _date_of(release: pl.DataFrame) -> str:
    return str(release["feature_date"][0]) if ("feature_date" in release.columns
                                                and release.height) else ""


NULL = "(null)"


@dataclass(frozen=True)
class PublishedCounts:
    """A published day's categorical columns, counted (`category_counts`): kept in the day's
    monitor record, so later days compare with it without reading the day again."""

    columns: dict[str, pl.DataFrame]  # value, n
    rows: int

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {c: dict(zip(t["value"].to_list(), t["n"].to_list(), strict=True))
                for c, t in self.columns.items()}

    @classmethod
    def from_dict(cls, counts: dict[str, dict[str, int]]) -> PublishedCounts:
        columns = {c: pl.DataFrame({"value": list(v), "n": list(v.values())},
                                   schema={"value": pl.String, "n": pl.UInt32})
                   for c, v in counts.items()}
        return cls(columns=columns, rows=max((sum(v.values()) for v in counts.values()),
                                             default=0))


def category_counts(shards: Iterable[pl.DataFrame], *, max_categories: int) -> PublishedCounts:
    """Each categorical column's counts per value (nulls as a value), summed shard by shard so
    a day is never read whole. Columns with more distinct values than `max_categories` (ids,
    timestamps, free text) are left out: a distribution over them says nothing."""
    totals: dict[str, pl.DataFrame] = {}
    dropped: set[str] = set()
    rows = 0
    for shard in shards:
        rows += shard.height
        for col, dtype in shard.schema.items():
            if col in dropped or not (dtype == pl.String or dtype == pl.Boolean
                                      or dtype == pl.Categorical or dtype == pl.Enum):
                continue
            counts = (shard.get_column(col).cast(pl.String).fill_null(NULL)
                      .value_counts(name="n").rename({col: "value"})
                      .with_columns(pl.col("n").cast(pl.UInt32)))
            merged = counts if col not in totals else (
                pl.concat([totals[col], counts]).group_by("value").agg(pl.col("n").sum()))
            if merged.height > max_categories:
                dropped.add(col)
                totals.pop(col, None)
            else:
                totals[col] = merged
    return PublishedCounts(columns=totals, rows=rows)


def _g_test(before: pl.DataFrame, now: pl.DataFrame) -> tuple[np.ndarray, np.ndarray,
                                                              float | None, int]:
    """Both days' shares over the union of values, and the G statistic of their counts with
    its degrees of freedom (None with fewer than two values seen)."""
    both = before.join(now, on="value", how="full", coalesce=True, suffix="_now").fill_null(0)
    n0 = both["n"].to_numpy().astype(float)
    n1 = both["n_now"].to_numpy().astype(float)
    seen = (n0 + n1) > 0
    g = None
    if seen.sum() > 1 and n0.sum() > 0 and n1.sum() > 0:
        g = float(stats.chi2_contingency(np.vstack([n0[seen], n1[seen]]),
                                         lambda_="log-likelihood", correction=False)[0])
    return n0, n1, g, int(seen.sum()) - 1


MIN_HISTORY = 2  # earlier day-to-day pairs before a published column's drift is judged


def column_drift(before: PublishedCounts, now: PublishedCounts, *, max_js: float,
                 max_psi: float, alpha: float = 0.01,
                 history: Sequence[tuple[PublishedCounts, PublishedCounts]] = (),
                 min_history: int = MIN_HISTORY) -> list[ColumnDrift]:
    """Each column in both days' `category_counts`: its shares compared (Jensen-Shannon
    distance, base 2, and the population stability index). A column drifted when the shift
    is both large (either measure above its threshold) and beyond what the column's own
    day-to-day variation gives: its G-test of the two days' counts, divided by the median
    ratio of G to its null median over the `history` pairs of earlier consecutive days
    (genomic control, as for the DP release), Benjamini-Hochberg over the columns at `alpha`.

    A fixed threshold alone alarms on every small day: its shares move by chance, and by
    whole k-anonymous groups, published or coarsened together, which makes the counts vary
    many times more than a simple sample's. With fewer than `min_history` earlier pairs a
    column's variation is not known yet and it is measured, not judged."""
    rows = []
    for col in sorted(before.columns.keys() & now.columns.keys()):
        n0, n1, g, dof = _g_test(before.columns[col], now.columns[col])
        if n0.sum() == 0 or n1.sum() == 0:
            continue
        p0, p1 = n0 / n0.sum(), n1 / n1.sum()
        js = float(jensenshannon(p0, p1, base=2))
        q0, q1 = np.maximum(p0, PSI_EPS), np.maximum(p1, PSI_EPS)
        psi = float(np.sum((q1 - q0) * np.log(q1 / q0)))
        ratios = []
        for a, b in history:
            if col in a.columns and col in b.columns:
                _, _, gh, dh = _g_test(a.columns[col], b.columns[col])
                if gh is not None and dh > 0:
                    ratios.append(gh / stats.chi2.median(dh))
        inflation = max(1.0, float(np.median(ratios))) if len(ratios) >= min_history else None
        p_value = (float(stats.chi2.sf(g / inflation, dof)) if g is not None and dof > 0
                   and inflation is not None else None)
        rows.append((col, len(p0), js, psi, p_value, inflation))
    judged = [r for r in rows if r[4] is not None]
    rejected = dict(zip((r[0] for r in judged), benjamini_hochberg(
        np.array([r[4] for r in judged]), alpha), strict=True)) if judged else {}
    return [ColumnDrift(column=col, categories=k, jensen_shannon=round(js, 6), psi=round(psi, 6),
                        p_value=None if p is None else float(f"{p:.3g}"),
                        inflation=None if lam is None else round(lam, 3),
                        drifted=bool(rejected.get(col, False)) and (js > max_js or psi > max_psi))
            for col, k, js, psi, p, lam in rows]
