"""The drift tests' statistics: exact tails for Laplace noise, p-values uniform when nothing
changed (noise and day-to-day variation of unequal cohorts), a shift in one region found and
named, and published columns compared shard by shard."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline.monitor.drift import (
    benjamini_hochberg,
    category_counts,
    column_drift,
    difference_p_values,
    feature_drift,
    laplace_difference_tail,
)

REGIONS = [f"r{i}" for i in range(12)]
BANDS = [f"a{i}" for i in range(7)]
DEVICES = ["mobile", "tablet", "desktop"]


@pytest.mark.parametrize(("b1", "b2"), [(1.0, 1.0), (1.0, 2.5), (0.3, 0.1)])
def test_laplace_difference_tail_matches_simulation(b1: float, b2: float) -> None:
    rng = np.random.default_rng(1)
    d = np.abs(rng.laplace(0, b1, 2_000_000) - rng.laplace(0, b2, 2_000_000))
    for t in (0.5, 2.0, 6.0):
        t = t * max(b1, b2)
        assert laplace_difference_tail(np.array([t]), np.array([b1]), np.array([b2]))[0] == \
            pytest.approx((d > t).mean(), rel=0.03, abs=2e-5)


@pytest.mark.parametrize("variation", [0.0, 0.5, 4.0])
def test_when_nothing_changed_then_p_values_are_uniform_even_in_the_tail(
        variation: float) -> None:
    """A Gaussian test on Laplace noise gives p < 1e-4 about 20 times too often; these are
    exact, with or without day-to-day variation on top."""
    rng = np.random.default_rng(2)
    n = 400_000
    s1, s2 = np.full(n, 1.0), rng.uniform(0.5, 2.0, n)
    delta = (rng.laplace(0, s1) - rng.laplace(0, s2)
             + rng.normal(0, np.sqrt(variation), n))
    p = difference_p_values(delta, s1, s2, np.full(n, variation), "laplace")
    assert stats.kstest(p, "uniform").pvalue > 1e-3
    for level in (1e-2, 1e-3, 1e-4):
        assert (p < level).mean() == pytest.approx(level, rel=0.25)
    gaussian = 2 * stats.norm.sf(np.abs(delta) / np.sqrt(2 * s1**2 + 2 * s2**2 + variation))
    if variation == 0:
        assert (gaussian < 1e-4).mean() > 5e-4  # why the exact tail is needed


def test_benjamini_hochberg_rejects_the_step_up_set() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    assert benjamini_hochberg(np.array([0.01, 0.02]), 0.05).tolist() == [True, True]
    assert benjamini_hochberg(np.array([]), 0.05).size == 0


def _population(rng: np.random.Generator, users: int) -> pl.DataFrame:
    """Cohorts of very unequal size, each with its own share of a category."""
    weights = rng.dirichlet(np.full(len(REGIONS) * len(BANDS) * len(DEVICES), 0.7))
    keys = [(r, a, d) for r in REGIONS for a in BANDS for d in DEVICES]
    return pl.DataFrame({
        "cohort_id": ["|".join(k) for k in keys], "region": [k[0] for k in keys],
        "age_band": [k[1] for k in keys], "device_type": [k[2] for k in keys],
        "users": rng.poisson(weights * users).astype(float),
        "share": rng.beta(2, 8, len(keys))})


def _release(pop: pl.DataFrame, rng: np.random.Generator, *, shift: float = 0.0,
             region: str = "") -> pl.DataFrame:
    """One day's release: each cohort's share as its users happen to act that day (binomial),
    plus Laplace noise of the release's scale, clipped to [0, 1]; and its noisy user count."""
    n = pop["users"].to_numpy()
    true = np.clip(pop["share"].to_numpy() + np.where(pop["region"] == region, shift, 0), 0, 1)
    observed = rng.binomial(np.maximum(n, 1).astype(int), true) / np.maximum(n, 1)
    active = np.maximum(np.round(n * rng.uniform(0.85, 0.95, n.size)), 0)
    b_users, b_votes = 1 / 0.15, 1 / 0.6
    users = np.maximum(active + rng.laplace(0, b_users, n.size), 0)
    total = np.maximum(users, 1)
    return pop.select("cohort_id", "region", "age_band", "device_type").with_columns(
        active_users=pl.Series(np.round(users)), active_users_noise_scale=pl.lit(b_users),
        share_x=pl.Series(np.clip(observed + rng.laplace(0, b_votes, n.size) / total, 0, 1)),
        share_x_noise_scale=pl.Series(b_votes / total))


VARIATION = {"active_users": "count", "share_x": "share"}


@pytest.mark.parametrize("users", [3_000, 100_000])
def test_when_nothing_changed_then_drift_stays_quiet(users: int) -> None:
    rng = np.random.default_rng(users)
    pop = _population(rng, users)
    alarms, days = 0, [_release(pop, rng)]
    for _ in range(60):
        now = _release(pop, rng)
        earlier = days[-8:]  # the stage pools the last 7 comparisons with the day's own
        alarms += feature_drift(earlier[-1], now, VARIATION, kind="laplace", alpha=0.01,
                                history=list(zip(earlier[:-1], earlier[1:], strict=True))
                                ).drifted
        days.append(now)
    assert alarms <= 3  # 1% of 60 expected; 4 or more happens by chance 0.3% of the time


def test_when_one_region_shifts_then_drift_names_the_feature_and_the_region() -> None:
    rng = np.random.default_rng(7)
    pop = _population(rng, 100_000)
    drift = feature_drift(_release(pop, rng), _release(pop, rng, shift=0.1, region="r3"),
                          VARIATION, kind="laplace", alpha=0.01)
    assert drift.drifted
    assert {f.value for f in drift.findings} == {"share_x"}
    top = drift.findings[0]
    assert (top.scope, top.where) == ("slice", "region=r3") and top.z > 5
    assert all(f.where.startswith("r3|") for f in drift.findings if f.scope == "cohort")
    assert drift.cohorts_compared == len(REGIONS) * len(BANDS) * len(DEVICES)


def test_when_published_columns_are_compared_then_counts_stream_and_ids_are_left_out() -> None:
    rng = np.random.default_rng(3)

    def day(p_sports: float) -> list[pl.DataFrame]:
        n = 20_000
        cats = rng.choice(["news", "sports", "music"], n, p=[0.6 - p_sports, p_sports, 0.4])
        table = pl.DataFrame({"top_category": cats, "user_pseudonym": [f"u{i}" for i in
                                                                        range(n)],
                              "region": rng.choice(REGIONS, n)})
        return [table[:7_000], table[7_000:]]  # two shards

    base = category_counts(day(0.2), max_categories=50)
    assert set(base.columns) == {"top_category", "region"}  # the pseudonym column is an id
    assert base.rows == 20_000
    earlier = [category_counts(day(0.2), max_categories=50) for _ in range(4)]
    history = list(zip(earlier[:-1], earlier[1:], strict=True))
    same = column_drift(base, category_counts(day(0.2), max_categories=50),
                        max_js=0.1, max_psi=0.2, history=history)
    moved = column_drift(base, category_counts(day(0.45), max_categories=50),
                         max_js=0.1, max_psi=0.2, history=history)
    assert not any(c.drifted for c in same)
    assert all(c.inflation is not None and c.inflation < 2 for c in same)  # simple samples
    (cat,) = [c for c in moved if c.column == "top_category"]
    assert cat.drifted and cat.psi > 0.2 and cat.p_value is not None and cat.p_value < 1e-6
    # without earlier days the same shift is measured, not judged
    unjudged = column_drift(base, category_counts(day(0.45), max_categories=50),
                            max_js=0.1, max_psi=0.2)
    assert all(c.p_value is None and not c.drifted for c in unjudged)
    assert [c for c in unjudged if c.column == "top_category"][0].psi > 0.2
    assert not [c for c in moved if c.column == "region"][0].drifted
