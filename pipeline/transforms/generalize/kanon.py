"""k-anonymity and ℓ-diversity over quasi-identifiers: measured, and enforced by generalizing
only the groups that fall short.

k is counted in distinct users, not rows: a group of 40 rows from 2 users is 2-anonymous.
ℓ is distinct ℓ-diversity: the number of distinct non-null values of the sensitive attribute
in a group.

Enforcement walks the hierarchies one step at a time, in the configured order (all steps of the
first, then the next). At each step, rows whose group holds k users (and l values) settle there;
the rest move one step coarser, where they are counted together with any settled rows that
now share their values. Rows still short at the top are suppressed. Groups that hold k users
are never coarsened further, and every row in a group is at the same step, so a published
value means one thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import polars as pl

_PENDING = "_pending"


@dataclass(frozen=True)
class Hierarchy:
    """How one quasi-identifier coarsens: `value(level)` is the column's expression at a level,
    0 being the generalizer's first output and `levels` the coarsest it may go."""

    column: str
    levels: int
    value: Callable[[int], pl.Expr]
    sources: tuple[str, ...] = ()  # the columns `value` reads: together they decide the value

    @property
    def level_column(self) -> str:
        return f"_level_{self.column}"


def at_levels(df: pl.DataFrame, hierarchies: Sequence[Hierarchy],
              levels: dict[str, int] | None = None) -> pl.DataFrame:
    """Each hierarchy's column at its level (default 0), with the level kept in `_level_*`."""
    levels = levels or {}
    return df.with_columns(
        expr for h in hierarchies for expr in (
            h.value(levels.get(h.column, 0)).alias(h.column),
            pl.lit(levels.get(h.column, 0), pl.Int8).alias(h.level_column)))


def steps(hierarchies: Sequence[Hierarchy]) -> Iterator[dict[str, int]]:
    """The level of every hierarchy at each step: all 0, then the first one up to its top, ..."""
    levels = {h.column: 0 for h in hierarchies}
    yield dict(levels)
    for h in hierarchies:
        for level in range(1, h.levels + 1):
            levels[h.column] = level
            yield dict(levels)


def group_sizes(df: pl.DataFrame, qis: Sequence[str], user_col: str) -> pl.DataFrame:
    """Distinct users per quasi-identifier combination (null is a value of its own)."""
    return df.group_by(list(qis)).agg(pl.col(user_col).n_unique().alias("users"))


def k_achieved(df: pl.DataFrame, qis: Sequence[str], user_col: str) -> int | None:
    """The smallest group's user count; None for an empty table, which has no group to fall
    short (an empty day publishes an empty table, not a blocked one)."""
    if df.is_empty():
        return None
    return int(group_sizes(df, qis, user_col)["users"].min())  # type: ignore[arg-type]


def l_achieved(df: pl.DataFrame, qis: Sequence[str], sensitive: str) -> int | None:
    """The fewest distinct sensitive values in any group; None for an empty table."""
    if df.is_empty():
        return None
    per_group = df.group_by(list(qis)).agg(pl.col(sensitive).drop_nulls().n_unique().alias("l"))
    return int(per_group["l"].min())  # type: ignore[arg-type]


def short_of(qis: Sequence[str], user_col: str, k: int, *, l: int | None = None,  # noqa: E741
             sensitive: str | None = None) -> pl.Expr:
    """True on rows whose group holds fewer than k users (or fewer than l sensitive values)."""
    short = pl.col(user_col).n_unique().over(list(qis)) < k
    if l is not None and sensitive is not None:
        short = short | (pl.col(sensitive).drop_nulls().n_unique().over(list(qis)) < l)
    return short


@dataclass(frozen=True)
class Suppression:
    """What `enforce` could not publish, and the groups it kept."""

    rows_suppressed: int
    users_suppressed: int
    groups_suppressed: int
    groups_kept: int


def enforce(df: pl.DataFrame, qis: Sequence[str], user_col: str, k: int, *,
            hierarchies: Sequence[Hierarchy] = (), l: int | None = None,  # noqa: E741
            sensitive: str | None = None) -> tuple[pl.DataFrame, Suppression]:
    """Generalize short groups along `hierarchies` (in order), then suppress what is still short.

    `df` holds what each hierarchy's `value` reads. Returns the kept rows, with their `_level_*`
    columns for the caller's information-loss figures, and what was suppressed.
    """
    short = short_of(qis, user_col, k, l=l, sensitive=sensitive)
    settled: list[pl.DataFrame] = []
    pending = df
    for levels in steps(hierarchies):
        pending = at_levels(pending, hierarchies, levels)
        # Settled rows with the same values are in the same published group: count them too.
        keys = pending.select(qis).unique()
        peers = [s.join(keys, on=list(qis), how="semi", nulls_equal=True) for s in settled]
        counted = pl.concat([pending.with_columns(pl.lit(True).alias(_PENDING)),
                             *(p.with_columns(pl.lit(False).alias(_PENDING)) for p in peers)])
        now = counted.with_columns(short.alias("_short")).filter(_PENDING).drop(_PENDING)
        settled.append(now.filter(~pl.col("_short")).drop("_short"))
        pending = now.filter(pl.col("_short")).drop("_short")
        if pending.is_empty():
            break
    kept = pl.concat(settled)
    return kept, Suppression(
        rows_suppressed=pending.height,
        users_suppressed=pending.select(pl.col(user_col).n_unique()).item(),
        groups_suppressed=pending.select(list(qis)).unique().height,
        groups_kept=kept.select(list(qis)).unique().height)
