"""`purchase_rate`: the share of a cohort's users with a purchase that day (each user 0 or 1)."""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.features.base import Grid
from pipeline.features.user_mean import UserMeanFeature


class PurchaseRate(UserMeanFeature):
    name = "purchase_rate"
    label = "purchase_rate"
    summary = "share of the cohort's users with a purchase"
    variation = "share"

    def user_value(self, spec: Any, grid: Grid) -> pl.Expr:
        return pl.col("event_type").eq("purchase").any().cast(pl.Int64)

    def bounds(self, spec: Any, grid: Grid) -> tuple[int, int]:
        return 0, 1
