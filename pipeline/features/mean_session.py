"""`mean_session_seconds`: the average over a cohort's users of each user's own mean session
length, clipped to `bounds`."""

from __future__ import annotations

import polars as pl
from pydantic import model_validator

from pipeline.features.base import FeatureShare, Grid
from pipeline.features.user_mean import UserMeanFeature


class MeanFeature(FeatureShare):
    """A per-user mean (computed per user first, clipped to `bounds`), then averaged."""

    bounds: tuple[int, int] = (0, 3600)

    @model_validator(mode="after")
    def _check(self) -> MeanFeature:
        lo, hi = self.bounds
        if not 0 <= lo < hi:
            raise ValueError("bounds must be (low, high) with 0 <= low < high")
        return self


class MeanSessionSeconds(UserMeanFeature):
    name = "mean_session_seconds"
    label = "mean_session_seconds"
    config = MeanFeature
    summary = "average over the cohort's users of each user's mean session length (seconds)"

    def user_value(self, spec: MeanFeature, grid: Grid) -> pl.Expr:
        return pl.col("session_seconds").mean().round(0)

    def bounds(self, spec: MeanFeature, grid: Grid) -> tuple[int, int]:
        return spec.bounds
