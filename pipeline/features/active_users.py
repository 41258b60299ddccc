"""`active_users`: a cohort's users (each user counts once in each of their at most
`max_cohorts_per_user` cohorts). Required: rates and means divide by it."""

from __future__ import annotations

from typing import Any

from pipeline.features.base import (
    COUNT,
    Accuracy,
    Column,
    DPFeature,
    Grid,
    Noise,
    Released,
    Statistic,
    accuracy_columns,
)
from pipeline.features.counts import released_counts
from pipeline.ledger.budget import PrivacyBudget

NAME = "active_users"


class ActiveUsers(DPFeature):
    name = NAME
    label = NAME
    group = COUNT
    required = True  # rates and means divide by it
    summary = "users active in the cohort that day (noisy count)"

    def statistics(self, spec: Any, grid: Grid, parts: list[PrivacyBudget]
                   ) -> list[Statistic]:
        from opendp.extras.polars import dp_len

        scale = grid.scale(parts[0], bound=1)  # a user is one row of each of their cohorts
        return [Statistic(NAME, lambda s: dp_len(signed=True, scale=s), scale)]

    def released(self, spec: Any, grid: Grid, noise: Noise) -> Released:
        return released_counts([NAME], noise)

    def columns(self, spec: Any, grid: Grid) -> list[Column]:
        return accuracy_columns(NAME, self.summary, shrunk=False)

    def values(self, spec: Any, grid: Grid) -> list[str]:
        return [NAME]

    def your_bound(self, spec: Any, grid: Grid) -> str:
        return "you count as one user, however many events you had"

    def expected_error(self, spec: Any, grid: Grid, parts: list[PrivacyBudget], users: float,
                       accuracy: Accuracy) -> tuple[float, float]:
        e = accuracy(grid.scale(parts[0], bound=1), 0.05)
        return e, e / max(users, 1.0)
