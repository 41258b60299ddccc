"""k-anonymity over quasi-identifiers, counted in distinct users (not rows).

A user with many events is still one person: a group of 40 rows from 2 users is 2-anonymous.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def group_sizes(df: pl.DataFrame, qis: Sequence[str], user_col: str) -> pl.DataFrame:
    """Distinct users per quasi-identifier combination (null is a value of its own)."""
    return df.group_by(list(qis)).agg(pl.col(user_col).n_unique().alias("users"))


def k_achieved(df: pl.DataFrame, qis: Sequence[str], user_col: str) -> int:
    """The smallest group's user count; 0 for an empty table."""
    if df.is_empty():
        return 0
    return int(group_sizes(df, qis, user_col)["users"].min())  # type: ignore[arg-type]


def suppress_below_k(df: pl.DataFrame, qis: Sequence[str], user_col: str, k: int
                     ) -> tuple[pl.DataFrame, dict[str, int]]:
    """Remove rows whose group holds fewer than k users; report what was removed."""
    users = pl.col(user_col).n_unique().over(list(qis))
    flagged = df.with_columns(_small=users < k)
    kept = flagged.filter(~pl.col("_small")).drop("_small")
    removed = flagged.filter(pl.col("_small"))
    return kept, {
        "rows_suppressed": removed.height,
        "users_suppressed": removed.select(pl.col(user_col).n_unique()).item(),
        "groups_suppressed": removed.select(list(qis)).unique().height,
        "groups_kept": kept.select(list(qis)).unique().height,
    }
