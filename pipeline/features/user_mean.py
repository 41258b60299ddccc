"""What the per-user average features share (`purchase_rate`, `mean_session_seconds`,
`distinct_categories_per_user`): each user's own value over their events in a cohort, clipped to
public bounds [lo, hi], then averaged over the cohort's users.

A user's value is released as `2·value − (lo + hi)` (`centred`): around the middle of its bounds,
doubled to stay an integer. Its sum moves by at most hi − lo per user, half what a sum of raw
values in [0, hi] would, so the average's noise is halved (the sum-around-the-midpoint of
PipelineDP's MEAN). The average is (sum / users + lo + hi) / 2, divided by the noisy user count
(post-processing), with a first-order error bound, and is also published shrunk toward its
parent cohorts.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import polars as pl

from pipeline.features.active_users import NAME as USERS
from pipeline.features.base import (
    AVERAGE,
    Accuracy,
    Column,
    DPFeature,
    Grid,
    Noise,
    Released,
    Statistic,
    accuracy_columns,
)
from pipeline.ledger.budget import PrivacyBudget


def centred(value: pl.Expr, lo: int, hi: int) -> pl.Expr:
    """2 * value - (lo + hi), an integer (see the module docstring)."""
    return (value * 2 - (lo + hi)).cast(pl.Int64)


class UserMeanFeature(DPFeature):
    """An average over a cohort's users of each user's own value in [lo, hi]."""

    group = AVERAGE

    @abstractmethod
    def user_value(self, spec: Any, grid: Grid) -> pl.Expr:
        """One user's value over their events in a cohort (null: no value, counted as lo)."""

    @abstractmethod
    def bounds(self, spec: Any, grid: Grid) -> tuple[int, int]:
        """The public bounds each user's value is clipped to."""

    def per_user(self, spec: Any, grid: Grid) -> list[pl.Expr]:
        lo, hi = self.bounds(spec, grid)
        # as a float first: a count (unsigned) would wrap below zero in `centred`
        value = self.user_value(spec, grid).cast(pl.Float64).clip(lo, hi).fill_null(lo)
        return [centred(value, lo, hi).alias(f"{self.name}_centred")]

    def statistics(self, spec: Any, grid: Grid, parts: list[PrivacyBudget]
                   ) -> list[Statistic]:
        lo, hi = self.bounds(spec, grid)
        column = f"{self.name}_centred"

        def query(s: float) -> pl.Expr:
            return pl.col(column).dp.sum((lo - hi, hi - lo), scale=s)  # type: ignore[attr-defined]

        return [Statistic(f"{self.name}_sum", query, grid.scale(parts[0], bound=hi - lo))]

    def released(self, spec: Any, grid: Grid, noise: Noise) -> Released:
        lo, hi = self.bounds(spec, grid)
        r, users = self.name, pl.col(USERS)
        n = users.clip(1, None)
        total = pl.col(f"{r}_sum")
        value = pl.when(users > 0).then(((total / users + lo + hi) / 2).clip(lo, hi))
        # First order: the sum's error, plus how far the value sits from the middle times the
        # user count's error, over twice the users (see `centred`).
        err = pl.when(users > 0).then(
            (noise.error95[f"{r}_sum"] + (2 * value - lo - hi).abs() * noise.error95[USERS])
            / (2 * users))
        # The sum's noise scale in the value's units (it is divided by 2 * users).
        scale = pl.when(users > 0).then(noise.scale[f"{r}_sum"] / (2 * users))
        noise_var = noise.mechanism.variance(noise.scale[f"{r}_sum"])
        var_users = noise.mechanism.variance(noise.scale[USERS])

        def variance(q: pl.Expr) -> pl.Expr:
            # The noisy sum's and user count's variance, first order (see `centred`).
            return (noise_var + (2 * q - lo - hi) ** 2 * var_users) / (4 * n**2)

        flag = (pl.col(f"{r}_shrunk").is_null()
                | (1.96 * pl.col(f"{r}_se") > pl.col(f"{r}_shrunk").abs()))
        return Released([value.alias(r), scale.alias(f"{r}_noise_scale"),
                         err.alias(f"{r}_error95")],
                        shrink={r: (users, variance)}, flags=[flag.alias(f"{r}_unreliable")])

    def columns(self, spec: Any, grid: Grid) -> list[Column]:
        return accuracy_columns(self.name, self.summary, shrunk=True)

    def values(self, spec: Any, grid: Grid) -> list[str]:
        return [self.name]

    def your_bound(self, spec: Any, grid: Grid) -> str:
        lo, hi = self.bounds(spec, grid)
        return f"your own value counts once, held between {lo} and {hi}"

    def expected_error(self, spec: Any, grid: Grid, parts: list[PrivacyBudget], users: float,
                       accuracy: Accuracy) -> tuple[float, float]:
        lo, hi = self.bounds(spec, grid)
        e = accuracy(grid.scale(parts[0], bound=hi - lo), 0.05) / (2 * max(users, 1.0))
        return e, e / ((lo + hi) / 2 or 1)
