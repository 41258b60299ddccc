"""What privacy costs each group: how much worse a DP release's cohort features are for a small
region, an older age band or a rarer device (Pujol et al., FAT* 2020: the same noise is larger
relative to a small cohort's values). Post-processing of the release only: its `_unreliable`
flags and 95% error bounds, grouped by each cohort dimension and compared with the whole
release as a ratio.

fairlearn's `MetricFrame` is the standard tool for per-group metrics, but it scores
predictions against ground truth (`y_true`, `y_pred`); a release has no ground truth here, only
the bounds the release publishes, so this is a Polars group-by. `bench/utility` compares
releases with exact cohorts, and uses `MetricFrame` there.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipeline.features.base import DIMENSIONS
from pipeline.monitor.model import Disparity, GroupCost


def _long(release: pl.DataFrame, values: Sequence[str]) -> pl.DataFrame:
    """One row per (cohort, value): the cohort's dimensions, its users, the value's flag and
    relative error (null where the value is zero)."""
    parts = [release.select(
        *DIMENSIONS, pl.col("active_users").clip(0, None).alias("users"),
        pl.col(f"{v}_unreliable").cast(pl.Boolean).alias("unreliable"),
        pl.when(pl.col(v).abs() > 0).then(pl.col(f"{v}_error95") / pl.col(v).abs())
        .alias("relative_error"), pl.lit(v).alias("value"))
        for v in values if f"{v}_unreliable" in release.columns]
    return pl.concat(parts) if parts else pl.DataFrame()


def _costs(long: pl.DataFrame, by: str | None) -> list[GroupCost]:
    keys = [by] if by else []
    agg = (long.group_by(keys) if keys else long.group_by(pl.lit("all").alias("_all"))).agg(
        pl.col("unreliable").mean().alias("unreliable_share"),
        pl.col("relative_error").median().alias("median_relative_error"),
        pl.len().alias("_rows"), pl.col("value").n_unique().alias("_values"),
        pl.col("users").sum().alias("_users"))
    out = []
    for row in agg.iter_rows(named=True):
        values = max(1, row["_values"])
        out.append(GroupCost(
            dimension=by or "all", group=str(row[by]) if by else "all",
            cohorts=row["_rows"] // values, users=int(row["_users"] // values),
            unreliable_share=round(row["unreliable_share"] or 0.0, 4),
            median_relative_error=None if row["median_relative_error"] is None
            else round(row["median_relative_error"], 4)))
    return sorted(out, key=lambda g: g.group)


def release_disparity(release: pl.DataFrame, values: Sequence[str]) -> Disparity | None:
    """Per region, age band and device type, and overall (see the module docstring)."""
    long = _long(release, values)
    if long.height == 0:
        return None
    (overall,) = _costs(long, None)
    groups = [g for dim in DIMENSIONS for g in _costs(long, dim)]
    worst_flag = max(groups, key=lambda g: g.unreliable_share)
    errors = [g for g in groups if g.median_relative_error is not None]
    worst_err = max(errors, key=lambda g: g.median_relative_error or 0.0) if errors else None
    return Disparity(
        groups=[overall, *groups],
        worst_unreliable_ratio=round(worst_flag.unreliable_share / overall.unreliable_share, 3)
        if overall.unreliable_share else None,
        worst_unreliable_group=f"{worst_flag.dimension}={worst_flag.group}",
        worst_error_ratio=round((worst_err.median_relative_error or 0.0)
                                / overall.median_relative_error, 3)
        if worst_err and overall.median_relative_error else None,
        worst_error_group=f"{worst_err.dimension}={worst_err.group}" if worst_err else "")
