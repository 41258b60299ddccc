"""`distinct_categories_per_user`: how widely a cohort's users browse, as the average over its
users of each user's number of distinct content categories (of the grid's), clipped to the
number of categories. A wide-browsing cohort wants more exploratory recommendations than a
narrow one with the same category mix."""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.features.base import Grid
from pipeline.features.user_mean import UserMeanFeature


class DistinctCategoriesPerUser(UserMeanFeature):
    name = "distinct_categories_per_user"
    label = "distinct categories per user"
    summary = "average over the cohort's users of each user's number of distinct categories"

    def user_value(self, spec: Any, grid: Grid) -> pl.Expr:
        category = pl.col("content_category")
        return category.filter(category.is_in(grid.categories)).n_unique()

    def bounds(self, spec: Any, grid: Grid) -> tuple[int, int]:
        return 0, len(grid.categories)
