"""`events_per_category`: a cohort's events in each content category, each user's count per
category clipped to `max_per_user`. Its budget share is split evenly over the categories (one
statistic each), so `category_votes` is usually the better buy."""

from __future__ import annotations

from typing import Annotated, Any

import polars as pl
from pydantic import Field

from pipeline.features.accountant import BudgetRequest, ReleaseAccountant
from pipeline.features.base import (
    COUNT,
    Accuracy,
    Column,
    DPFeature,
    FeatureShare,
    Grid,
    Noise,
    Released,
    Statistic,
    accuracy_columns,
)
from pipeline.features.counts import released_counts
from pipeline.ledger.budget import PrivacyBudget


class EventCountsFeature(FeatureShare):
    """Events per content category, each user's count per category clipped to `max_per_user`."""

    max_per_user: Annotated[int, Field(gt=0)] = 20


class EventsPerCategory(DPFeature):
    name = "events_per_category"
    label = "events (each category)"
    config = EventCountsFeature
    group = COUNT
    summary = "events in the category (noisy sum, each user's count clipped)"

    def per_user(self, spec: EventCountsFeature, grid: Grid) -> list[pl.Expr]:
        return [pl.col("content_category").eq(cat).sum().clip(0, spec.max_per_user)
                .cast(pl.Int64).alias(f"events_{cat}") for cat in grid.categories]

    def request(self, spec: EventCountsFeature, grid: Grid, acc: ReleaseAccountant
                ) -> list[BudgetRequest]:
        with acc.scope(weight=spec.budget_share):  # one statistic per category
            return [acc.request_budget() for _ in grid.categories]

    def statistics(self, spec: EventCountsFeature, grid: Grid, parts: list[PrivacyBudget]
                   ) -> list[Statistic]:
        hi = spec.max_per_user

        def query(cat: str) -> Any:
            return lambda s: pl.col(f"events_{cat}").dp.sum(  # type: ignore[attr-defined]
                (0, hi), scale=s)

        return [Statistic(f"events_{c}", query(c), grid.scale(part, bound=hi))
                for c, part in zip(grid.categories, parts, strict=True)]

    def released(self, spec: EventCountsFeature, grid: Grid, noise: Noise) -> Released:
        return released_counts(self.values(spec, grid), noise)

    def columns(self, spec: EventCountsFeature, grid: Grid) -> list[Column]:
        return [c for cat in grid.categories
                for c in accuracy_columns(f"events_{cat}", f"{cat} {self.summary}",
                                          shrunk=False)]

    def values(self, spec: EventCountsFeature, grid: Grid) -> list[str]:
        return [f"events_{c}" for c in grid.categories]

    def your_bound(self, spec: EventCountsFeature, grid: Grid) -> str:
        return f"at most {spec.max_per_user} of your events count in each category"

    def expected_error(self, spec: EventCountsFeature, grid: Grid, parts: list[PrivacyBudget],
                       users: float, accuracy: Accuracy) -> tuple[float, float]:
        e = accuracy(grid.scale(parts[0], bound=spec.max_per_user), 0.05)
        return e, e / max(users, 1.0)
