"""What an ML team reads from a cohort feature release: a score per cohort and category.

A release (a partition of Feast's offline source, or what `get_historical_features` returns)
carries, per category, the noisy share as released (`share_<cat>`), its shrunk estimate
(`share_<cat>_shrunk`, empirical Bayes toward the parent cohort) and that estimate's standard
error. The shrunk estimate is the one to rank by: on MovieLens it keeps far more of the
exact-cohort lift than the raw shares (`bench/utility`). Pure post-processing: reading costs no
privacy budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import polars as pl


def category_scores(release: pl.DataFrame, categories: Sequence[str], *,
                    estimate: Literal["shrunk", "raw"] = "shrunk") -> pl.DataFrame:
    """Long rows (cohort_id, category, score, se): the share of each category in each cohort.
    `se` is the shrunk estimate's standard error (null for raw shares)."""
    suffix = "_shrunk" if estimate == "shrunk" else ""
    parts = [release.select(
        "cohort_id", pl.lit(c).alias("category"),
        pl.col(f"share_{c}{suffix}").alias("score"),
        (pl.col(f"share_{c}_se") if estimate == "shrunk" else pl.lit(None, pl.Float64))
        .alias("se")) for c in categories]
    return pl.concat(parts).sort("cohort_id", "category")
