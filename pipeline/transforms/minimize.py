"""Keep exactly the columns a purpose's allowlist names, in its order, each within its declared
domain.

A value outside its column's domain (a category nobody declared, a name typed into the wrong
field) becomes the domain's `other` value, or null, and is counted per column; the row stays,
so the funnel is unchanged. A string column without a domain is refused: a free-form column must
never reach consumers by default. The validation suite checks every domain again.

An aggregate purpose publishes counts instead (`aggregate`): users and events per group,
groups of fewer than k users left out (their events counted as dropped, so the funnel holds).
"""

from __future__ import annotations

import polars as pl

from pipeline.config import Domain, PurposeSpec
from pipeline.core.details import GroupCounts, MinimizeDetails, StrictTextCounts
from pipeline.core.errors import PipelineError
from pipeline.core.records import StageStats
from pipeline.transforms.pii.strict import strict_text


def outside(column: str, domain: Domain) -> pl.Expr:
    """True where a non-null value lies outside `domain`."""
    col = pl.col(column)
    if domain.values is not None:
        bad = ~col.cast(pl.String).is_in(list(domain.values))
    elif domain.pattern is not None:
        bad = ~col.cast(pl.String).str.contains(f"^(?:{domain.pattern})$")
    else:
        bad = pl.lit(False)
        if domain.min is not None:
            bad = bad | (col < domain.min)
        if domain.max is not None:
            bad = bad | (col > domain.max)
    return col.is_not_null() & bad


def allowlisted(table: pl.DataFrame, spec: PurposeSpec, *, k: int
                ) -> tuple[pl.DataFrame, StageStats]:
    """The purpose's columns (for counts: the grouping columns and the user), each value
    within its domain; exact on a shard of a day, except strict text (`strict_text` counts
    the users of the table it is given)."""
    wanted = [*spec.aggregate.by, spec.user_col] if spec.aggregate else list(spec.columns)
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise PipelineError(f"purpose {spec.purpose!r}: allowlisted columns missing from the "
                            f"generalized table: {missing}")
    removed = [c for c in table.columns if c not in spec.columns]
    out = table.select(wanted)
    free = [c for c, t in out.schema.items() if t == pl.String and c not in spec.domains
            and c not in spec.pseudonym_columns and c != spec.user_col]
    if free:
        raise PipelineError(f"purpose {spec.purpose!r}: string columns {free} have no declared "
                            "domain (schemas/purposes/*.yaml `domains`); refusing to publish "
                            "free-form values")
    strict: dict[str, StrictTextCounts] = {}
    for c in [c for c, d in spec.domains.items() if d.strict_text and c in out.columns]:
        out, strict[c] = strict_text(out.with_columns(table[spec.user_col]), c, spec.user_col,
                                     k)
        out = out.select(wanted)
    domains = {c: d for c, d in spec.domains.items() if c in out.columns and not d.strict_text}
    counts = out.select(outside(c, d).sum().alias(c) for c, d in domains.items()).row(
        0, named=True) if domains else {}
    out = out.with_columns(
        pl.when(outside(c, d)).then(pl.lit(d.other, dtype=out.schema[c])).otherwise(pl.col(c))
        .alias(c) for c, d in domains.items() if counts[c])
    details = MinimizeDetails(purpose=spec.purpose, columns_kept=list(spec.columns),
                              columns_removed=removed,
                              out_of_domain={c: n for c, n in counts.items() if n},
                              strict_text=strict or None)
    return out, StageStats(stage="minimize", rows_in=table.height, rows_out=out.height,
                           details=details).check_balanced()


def apply_allowlist(table: pl.DataFrame, spec: PurposeSpec, *, k: int
                    ) -> tuple[pl.DataFrame, StageStats]:
    """The purpose's columns (or its counts), each value within its domain."""
    out, stats = allowlisted(table, spec, k=k)
    if spec.aggregate:
        return aggregate([(group_counts(out, spec), stats)], spec, k=k)
    return out, stats


def group_counts(table: pl.DataFrame, spec: PurposeSpec) -> pl.DataFrame:
    """Distinct users and events per group of `spec.aggregate.by`: what a shard contributes
    (shards hold disjoint users, so the counts of a group add up across them)."""
    agg = spec.aggregate
    assert agg is not None
    return (table.group_by(list(agg.by))
            .agg(pl.col(spec.user_col).n_unique().cast(pl.Int64).alias(agg.users),
                 pl.len().cast(pl.Int64).alias(agg.events)))


def aggregate(parts: list[tuple[pl.DataFrame, StageStats]], spec: PurposeSpec, *, k: int
              ) -> tuple[pl.DataFrame, StageStats]:
    """The published counts from every shard's (`group_counts`, stats), in a stable order;
    groups of fewer than `k` users are left out, their events counted as dropped."""
    agg = spec.aggregate
    assert agg is not None
    counts = (pl.concat([c for c, _ in parts]).group_by(list(agg.by))
              .agg(pl.col(agg.users).sum(), pl.col(agg.events).sum())
              .sort(list(agg.by), nulls_last=True))
    kept = counts.filter(pl.col(agg.users) >= k).select(spec.columns)
    stats = StageStats.merged([s for _, s in parts])
    stats.details = stats.details_of(MinimizeDetails).model_copy(update={"groups": GroupCounts(
        published=kept.height, suppressed=counts.height - kept.height)})
    stats.rows_out = int(kept[agg.events].sum() or 0)
    if stats.rows_in > stats.rows_out:
        stats.dropped = {"group_under_k": stats.rows_in - stats.rows_out}
    return kept, stats.check_balanced()
