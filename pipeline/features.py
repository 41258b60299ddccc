"""User-level differentially private cohort features with OpenDP.

The privacy unit is a pseudonymous user, however many events they have. Each user's data is
first reduced, in Polars, to at most `max_cohorts_per_user` rows (cohorts picked in a
pseudo-random order seeded by the release date, never by activity, so the choice depends only on
that user's own rows), with per-category event counts clipped to
`max_events_per_category` and the user's mean session length clipped to the configured bounds.
OpenDP then releases, per cohort, a noisy user count, noisy per-category event sums and a noisy
sum of the users' mean sessions (mean = sum / count, as post-processing), under one ε.

Cohort keys (region × age band × device type) come from config and are public; cohorts absent
from the data are still released (as noise), and data outside the keys is never revealed. Keys
are never read from the data: not the H3 cells or regions the generalize stage chose, nor the
wider bands k-anonymity fell back on (those rows are simply outside the grid).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import cast

import polars as pl

from pipeline.config import FeaturesConfig
from pipeline.funnel import StageStats
from pipeline.storage import Zone

DIMENSIONS = ("region", "age_band", "device_type")
MAX_ROWS_BOUND = 1_000_000_000  # public bound on table length, for OpenDP's overflow checks


@dataclass(frozen=True)
class FeatureRelease:
    table: pl.DataFrame
    epsilon: float
    delta: float
    mechanism: str
    library: str


def features_zone(cfg: FeaturesConfig) -> Zone:
    """Where released feature partitions live (also Feast's offline source)."""
    return Zone(f"features/{cfg.feature_set}", sensitive=False)


def cohort_keys(cfg: FeaturesConfig, age_bands: tuple[str, ...]) -> pl.DataFrame:
    """The public cohort grid, from config only."""
    rows = list(itertools.product(cfg.regions, age_bands, cfg.device_types))
    return pl.DataFrame(rows, schema=list(DIMENSIONS), orient="row")


def bound_contributions(events: pl.DataFrame, cfg: FeaturesConfig, *, user_col: str,
                        seed: int) -> pl.DataFrame:
    """One row per (user, cohort), at most `max_cohorts_per_user` per user, values clipped."""
    lo, hi = cfg.session_seconds_bounds
    per_cohort = (events.group_by(user_col, *DIMENSIONS).agg(
        *(pl.col("content_category").eq(cat).sum().clip(0, cfg.max_events_per_category)
          .cast(pl.Int64).alias(f"events_{cat}") for cat in cfg.categories),
        pl.col("session_seconds").mean().clip(lo, hi).round(0).cast(pl.Int64)
        .fill_null(lo).alias("session_mean"),
    ))
    order = pl.concat_str(pl.col(user_col), *DIMENSIONS, separator="|").hash(seed=seed)
    return (per_cohort.with_columns(_order=order)
            .with_columns(_rank=pl.col("_order").rank("ordinal").over(user_col))
            .filter(pl.col("_rank") <= cfg.max_cohorts_per_user)
            .drop("_order", "_rank"))


def release_features(events: pl.DataFrame, cfg: FeaturesConfig, *, age_bands: tuple[str, ...],
                     user_col: str, release_date: str) -> tuple[FeatureRelease, StageStats]:
    """Draw one DP release. Callers must go through the ledger: never call this twice for the
    same release."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    seed = int(release_date.replace("-", ""))
    keys = cohort_keys(cfg, age_bands)
    # Rows outside the public grid (a region not served, an age band widened for k-anonymity)
    # go first, so they never take the place of a user's cohort inside it.
    in_grid = events.join(keys, on=list(DIMENSIONS), how="semi")
    bounded = bound_contributions(in_grid, cfg, user_col=user_col, seed=seed)
    lo, hi = cfg.session_seconds_bounds
    context = dp.Context.compositor(
        data=bounded.lazy(),
        privacy_unit=dp.unit_of(contributions=cfg.max_cohorts_per_user),
        privacy_loss=dp.loss_of(epsilon=cfg.epsilon),
        split_evenly_over=1,
        margins=[dp.polars.Margin(by=list(DIMENSIONS), max_length=MAX_ROWS_BOUND)],
    )
    aggs = [dp.len(signed=True).alias("active_users"),
            *(pl.col(f"events_{c}").dp.sum((0, cfg.max_events_per_category))  # type: ignore[attr-defined]
              for c in cfg.categories),
            pl.col("session_mean").dp.sum((lo, hi)).alias("session_sum")]  # type: ignore[attr-defined]
    # Built right before release: a query takes its budget slot when it is built.
    query = context.query().group_by(list(DIMENSIONS)).agg(*aggs).with_keys(keys)
    accuracy = cast(pl.DataFrame, query.summarize(alpha=0.05))
    noisy = query.release().collect()
    error95 = dict(zip(accuracy["column"].to_list(), accuracy["accuracy"].to_list(), strict=True))
    scale = dict(zip(accuracy["column"].to_list(), accuracy["scale"].to_list(), strict=True))
    ts = datetime.combine(datetime.fromisoformat(release_date).date(), time(23, 59, 59),
                          tzinfo=UTC)
    counts = ["active_users", *(f"events_{c}" for c in cfg.categories)]
    table = (keys.join(noisy, on=list(DIMENSIONS), how="left", maintain_order="left")
             .with_columns(pl.col(c).cast(pl.Int64).clip(0, None) for c in counts)
             .with_columns(
                 mean_session_seconds=pl.when(pl.col("active_users") > 0)
                 .then((pl.col("session_sum") / pl.col("active_users")).clip(lo, hi))
                 .otherwise(None),
                 **{f"{c}_error95": pl.lit(error95[c]) for c in counts},
                 **{f"{c}_noise_scale": pl.lit(scale[c]) for c in counts},
                 active_users_unreliable=pl.col("active_users") < error95["active_users"])
             .drop("session_sum")
             .with_columns(cohort_id=pl.concat_str(*DIMENSIONS, separator="|"),
                           feature_date=pl.lit(ts.date()),
                           event_timestamp=pl.lit(ts).dt.cast_time_unit("us"))
             .select("cohort_id", *DIMENSIONS, "feature_date", "event_timestamp",
                     *counts, "mean_session_seconds",
                     *(f"{c}_error95" for c in counts), *(f"{c}_noise_scale" for c in counts),
                     "active_users_unreliable")
             .sort("cohort_id"))
    release = FeatureRelease(table=table, epsilon=cfg.epsilon, delta=0.0,
                             mechanism="OpenDP Polars: integer Laplace, pure DP, user-level",
                             library=f"opendp {dp.__version__}")
    stats = StageStats("features", rows_in=events.height, rows_out=table.height, details={
        "feature_set": cfg.feature_set, "epsilon": cfg.epsilon, "delta": 0.0,
        "privacy_unit": f"user ({user_col}), up to {cfg.max_cohorts_per_user} cohort(s) each",
        "cohorts_released": table.height,
        "users_in_public_cohorts": bounded.select(pl.col(user_col).n_unique()).item(),
        "error95_active_users": error95["active_users"]})
    return release, stats
