"""User-level differentially private cohort features with OpenDP.

The privacy unit is a pseudonymous user, however many events they have. Each user's data is
first reduced, in Polars, to at most `max_cohorts_per_user` rows (cohorts picked in a
pseudo-random order seeded by the release date, never by activity, so the choice depends only on
that user's own rows): per-category event counts clipped, a purchase flag, and the user's own
mean session length clipped to its bounds. OpenDP then releases, per cohort, one statistic per
declared feature, each with its `budget_share` of the release: a noisy user count, noisy
per-category event sums, a noisy count of purchasers and a noisy sum of the users' mean
sessions. Rates and means divide by the noisy user count (post-processing, no extra budget).
`privacy: pure` draws Laplace noise (ε-DP); `privacy: zcdp` Gaussian noise (ρ-zCDP), whose
error grows with the square root of the number of cohorts a user may touch rather than linearly.

Every released value comes with its noise scale, a 95% error bound (OpenDP's
`summarize(alpha=0.05)`; for rates and means a first-order bound from the two noisy values they
divide) and an `_unreliable` flag where that bound exceeds the value.

With `cohorts: config` the keys (region × age band × device type) come from config and are
public; cohorts absent from the data are still released (as noise), and data outside the keys is
never revealed, nor are the H3 cells or wider bands k-anonymity fell back on. With `cohorts:
private` OpenDP keeps only cohorts whose noisy user count clears a threshold chosen so that one
user reveals a cohort with probability at most `delta`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, time
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any, cast

import polars as pl

from pipeline.config import FeaturesConfig
from pipeline.core.errors import BudgetExceededError
from pipeline.core.records import StageStats

DIMENSIONS = ("region", "age_band", "device_type")
MAX_ROWS_BOUND = 1_000_000_000  # public bound on table length, for OpenDP's overflow checks


@dataclass(frozen=True)
class FeatureRelease:
    table: pl.DataFrame
    epsilon: float | None  # None for a zCDP release
    rho: float  # its cost in zCDP (ε²/2 for a pure release)
    delta: float
    mechanism: str
    library: str


def cohort_keys(cfg: FeaturesConfig, age_bands: tuple[str, ...]) -> pl.DataFrame:
    """The public cohort grid, from config only."""
    rows = list(itertools.product(cfg.regions, age_bands, cfg.device_types))
    return pl.DataFrame(rows, schema=list(DIMENSIONS), orient="row")


def count_features(cfg: FeaturesConfig) -> list[str]:
    """Released integer features: noisy counts."""
    events = cfg.features.events_per_category
    return ["active_users", *((f"events_{c}" for c in cfg.categories) if events else ())]


def ratio_features(cfg: FeaturesConfig) -> dict[str, tuple[int, int]]:
    """Released float features, averages over users, with each user's value bounds."""
    f = cfg.features
    out: dict[str, tuple[int, int]] = {}
    if f.purchase_rate:
        out["purchase_rate"] = (0, 1)
    if f.mean_session_seconds:
        out["mean_session_seconds"] = f.mean_session_seconds.bounds
    return out


def centred(value: pl.Expr, lo: int, hi: int) -> pl.Expr:
    """2 * value - (lo + hi): a user's value around the middle of its bounds, doubled to stay an
    integer. Its sum moves by at most hi - lo per user, half what a sum of raw values in
    [0, hi] would, so the average's noise is halved (the sum-around-the-midpoint of PipelineDP's
    MEAN). The average is (sum / users + lo + hi) / 2."""
    return (value * 2 - (lo + hi)).cast(pl.Int64)


def bound_contributions(events: pl.DataFrame, cfg: FeaturesConfig, *, user_col: str,
                        seed: int) -> pl.DataFrame:
    """One row per (user, cohort), at most `max_cohorts_per_user` per user, values clipped."""
    f = cfg.features
    aggs: list[pl.Expr] = []
    if f.events_per_category:
        aggs += [pl.col("content_category").eq(cat).sum().clip(0, f.events_per_category
                                                                .max_per_user)
                 .cast(pl.Int64).alias(f"events_{cat}") for cat in cfg.categories]
    per_user = {"purchase_rate": pl.col("event_type").eq("purchase").any().cast(pl.Int64),
                "mean_session_seconds": pl.col("session_seconds").mean().round(0)}
    for name, (lo, hi) in ratio_features(cfg).items():
        value = per_user[name].clip(lo, hi).fill_null(lo)
        aggs.append(centred(value, lo, hi).alias(f"{name}_centred"))
    per_cohort = events.group_by(user_col, *DIMENSIONS).agg(aggs)
    order = pl.concat_str(pl.col(user_col), *DIMENSIONS, separator="|").hash(seed=seed)
    return (per_cohort.with_columns(_order=order)
            .with_columns(_rank=pl.col("_order").rank("ordinal").over(user_col))
            .filter(pl.col("_rank") <= cfg.max_cohorts_per_user)
            .drop("_order", "_rank"))


def _aggregations(cfg: FeaturesConfig) -> list[tuple[pl.Expr, str, float]]:
    """(OpenDP aggregation, column, noise scale) for every released statistic.

    A feature's `budget_share` is split evenly over its statistics (one per category for
    events). A user is in at most `max_cohorts_per_user` (k) rows, one per cohort, so a
    statistic whose rows lie in [-B, B] moves by k·B in L1 (Laplace: scale = k·B / ε) and by
    √k·B in L2 (Gaussian: scale = √k·B / √(2ρ)).
    """
    from opendp.extras.polars import dp_len  # also registers the `.dp` expression namespace

    f = cfg.features

    def scale(share: float, n_stats: int, bound: float) -> float:
        return cfg.mechanism.scale(budget=cfg.budget, share=share, n_stats=n_stats,
                                   per_user=cfg.max_cohorts_per_user, bound=bound)

    s = scale(f.active_users.budget_share, 1, 1)
    out = [(dp_len(signed=True, scale=s), "active_users", s)]
    if f.events_per_category:
        hi, n = f.events_per_category.max_per_user, len(cfg.categories)
        s = scale(f.events_per_category.budget_share, n, hi)
        out += [(pl.col(f"events_{c}").dp.sum((0, hi), scale=s), f"events_{c}", s)  # type: ignore[attr-defined]
                for c in cfg.categories]
    for name, (lo, hi) in ratio_features(cfg).items():
        spec = getattr(f, name)
        s = scale(spec.budget_share, 1, hi - lo)
        total = pl.col(f"{name}_centred").dp.sum((lo - hi, hi - lo), scale=s)  # type: ignore[attr-defined]
        out.append((total, f"{name}_sum", s))
    return [(expr.alias(name), name, s) for expr, name, s in out]


def _opendp() -> SimpleNamespace:
    """The OpenDP functions used here, imported from their modules: `opendp.prelude` also
    imports scikit-learn when it is installed, which costs ~5 s per task."""
    from opendp.accuracy import (
        discrete_gaussian_scale_to_accuracy,
        discrete_laplacian_scale_to_accuracy,
    )
    from opendp.context import domain_of, unit_of
    from opendp.domains import with_margin
    from opendp.extras.polars import Bound, Margin
    from opendp.measurements import make_private_lazyframe
    from opendp.measures import approximate, max_divergence, zero_concentrated_divergence
    from opendp.mod import enable_features

    enable_features("contrib")
    return SimpleNamespace(
        laplace_accuracy=discrete_laplacian_scale_to_accuracy,
        gaussian_accuracy=discrete_gaussian_scale_to_accuracy, domain_of=domain_of,
        unit_of=unit_of, with_margin=with_margin, Bound=Bound, Margin=Margin,
        make_private_lazyframe=make_private_lazyframe, approximate=approximate,
        max_divergence=max_divergence, zero_concentrated_divergence=zero_concentrated_divergence,
        version=version("opendp"))


def _measurement(dp: SimpleNamespace, bounded: pl.LazyFrame, cfg: FeaturesConfig,
                 keys: pl.DataFrame | None, aggs: list[tuple[pl.Expr, str, float]]
                 ) -> tuple[Any, Any]:
    """One OpenDP measurement for the whole release, and the privacy unit's distance.

    The scales are fixed by `_aggregations`: OpenDP's Context would search for them, building
    the measurement ~1,000 times per query (seconds each release). For private cohorts, the
    threshold is the smallest that keeps δ within `cfg.delta` (each build takes milliseconds).
    """
    k = cfg.max_cohorts_per_user
    unit, d_in = dp.unit_of(contributions=[
        dp.Bound(per_group=k), dp.Bound(by=list(DIMENSIONS), per_group=1, num_groups=k)])
    domain = dp.with_margin(dp.domain_of(bounded, infer=True),
                            dp.Margin(by=list(DIMENSIONS), max_length=MAX_ROWS_BOUND))
    measure = cfg.mechanism.measure(dp)
    # OpenDP ignores the plan's data but copies it on every build: plan over an empty frame.
    empty = pl.LazyFrame(schema=bounded.collect_schema())
    plan = empty.group_by(list(DIMENSIONS)).agg(expr for expr, _, _ in aggs)
    if keys is not None:
        plan = plan.join(keys.lazy(), on=list(DIMENSIONS), how="right")  # the keys, not the data's
        return dp.make_private_lazyframe(domain, unit, measure, plan, global_scale=1.0), d_in

    def build(threshold: int) -> Any:
        return dp.make_private_lazyframe(domain, unit, dp.approximate(measure), plan,
                                         global_scale=1.0, threshold=threshold)

    lo, hi = 1, 2  # δ falls as the threshold rises: find the least threshold within cfg.delta
    while build(hi).map(d_in)[1] > cfg.delta:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if build(mid).map(d_in)[1] <= cfg.delta else (mid, hi)
    return build(hi), d_in


def release_features(events: pl.DataFrame, cfg: FeaturesConfig, *, age_bands: tuple[str, ...],
                     user_col: str, release_date: str) -> tuple[FeatureRelease, StageStats]:
    """Draw one DP release from the events of its period. Callers must go through the ledger:
    never call this twice for the same release."""
    dp = _opendp()
    seed = int(release_date.replace("-", ""))
    keys = cohort_keys(cfg, age_bands) if cfg.cohorts == "config" else None
    # Rows outside the public grid (a region not served, an age band widened for k-anonymity)
    # go first, so they never take the place of a user's cohort inside it.
    in_grid = (events.join(keys, on=list(DIMENSIONS), how="semi") if keys is not None
               else events.drop_nulls(list(DIMENSIONS)))
    bounded = bound_contributions(in_grid, cfg, user_col=user_col, seed=seed).lazy()
    aggs = _aggregations(cfg)
    measurement, d_in = _measurement(dp, bounded, cfg, keys, aggs)
    spent = measurement.map(d_in)
    loss, delta = spent if cfg.cohorts == "private" else (spent, 0.0)
    planned = cfg.budget
    if loss > planned * (1 + 1e-9) or delta > cfg.delta * (1 + 1e-9):
        raise BudgetExceededError(f"OpenDP accounts {loss}, δ={delta} for a release planned at "
                                  f"{planned}, δ={cfg.delta}: the scales are wrong; nothing "
                                  "was released")
    noisy = cast(pl.LazyFrame, measurement(bounded)).collect()
    accuracy = cfg.mechanism.accuracy(dp)
    scale = {name: s for _, name, s in aggs}
    error95 = {name: accuracy(s, 0.05) for name, s in scale.items()}
    ts = datetime.combine(datetime.fromisoformat(release_date).date(), time(23, 59, 59),
                          tzinfo=UTC)
    table = (_with_accuracy(noisy, cfg, scale, error95)
             .with_columns(cohort_id=pl.concat_str(*DIMENSIONS, separator="|"),
                           feature_date=pl.lit(ts.date()),
                           event_timestamp=pl.lit(ts).dt.cast_time_unit("us"))
             .select("cohort_id", *DIMENSIONS, "feature_date", "event_timestamp",
                     *released_columns(cfg))
             .sort("cohort_id"))
    noise = cfg.mechanism.label
    cohorts = "private cohort selection" if cfg.cohorts == "private" else "public cohort keys"
    release = FeatureRelease(
        table=table, epsilon=cfg.epsilon, rho=cfg.rho_cost, delta=float(delta),
        mechanism=f"OpenDP Polars: integer {noise}, user-level, {cohorts}",
        library=f"opendp {dp.version}")
    stats = StageStats(stage="features", rows_in=events.height, rows_out=table.height, details={
        "feature_set": cfg.feature_set, "period": cfg.period, "privacy": cfg.privacy,
        "epsilon": cfg.epsilon, "rho": cfg.rho_cost, "delta": float(delta),
        "accounted_by_opendp": loss, "cohorts": cfg.cohorts,
        "budget_shares": {name: spec.budget_share
                          for name, spec in cfg.features.enabled().items()},
        "privacy_unit": f"user ({user_col}), up to {cfg.max_cohorts_per_user} cohort(s) each",
        "cohorts_released": table.height,
        "users_counted": bounded.select(pl.col(user_col).n_unique()).collect().item(),
        "error95_active_users": error95["active_users"]})
    return release, stats


def _with_accuracy(noisy: pl.DataFrame, cfg: FeaturesConfig, scale: dict[str, float],
                   error95: dict[str, float]) -> pl.DataFrame:
    """Clip counts at 0, divide rates and means, and add each value's noise scale, 95% error
    bound and `_unreliable` flag (error bound above the value, or no value)."""
    users = pl.col("active_users")
    cols: list[pl.Expr] = []
    for c in count_features(cfg):
        cols += [pl.col(c).cast(pl.Int64).clip(0, None), pl.lit(scale[c]).alias(f"{c}_noise_scale"),
                 pl.lit(error95[c]).alias(f"{c}_error95")]
    for r, (lo, hi) in ratio_features(cfg).items():
        total = pl.col(f"{r}_sum")
        value = pl.when(users > 0).then(((total / users + lo + hi) / 2).clip(lo, hi))
        # First order: the sum's error, plus how far the value sits from the middle times the
        # user count's error, over twice the users (see `centred`).
        err = pl.when(users > 0).then(
            (error95[f"{r}_sum"] + (2 * value - lo - hi).abs() * error95["active_users"])
            / (2 * users))
        # The sum's Laplace scale in the value's units (it is divided by 2 * users).
        noise = pl.when(users > 0).then(scale[f"{r}_sum"] / (2 * users))
        cols += [value.alias(r), noise.alias(f"{r}_noise_scale"), err.alias(f"{r}_error95")]
    out = noisy.with_columns(cols)
    flags = [(pl.col(c).is_null() | (pl.col(f"{c}_error95") > pl.col(c))).alias(f"{c}_unreliable")
             for c in (*count_features(cfg), *ratio_features(cfg))]
    return out.with_columns(flags)


def released_columns(cfg: FeaturesConfig) -> list[str]:
    """Per feature: the value, its noise scale, 95% error bound and unreliable flag."""
    return [f"{c}{suffix}" for c in (*count_features(cfg), *ratio_features(cfg))
            for suffix in ("", "_noise_scale", "_error95", "_unreliable")]
