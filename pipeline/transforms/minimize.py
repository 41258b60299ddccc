"""Keep exactly the columns a purpose's allowlist names, in its order, each within its declared
domain.

A value outside its column's domain (a category nobody declared, a name typed into the wrong
field) becomes the domain's `other` value, or null, and is counted per column; the row stays,
so the funnel is unchanged. A string column without a domain is refused: a free-form column must
never reach consumers by default. The validation suite checks every domain again.
"""

from __future__ import annotations

import polars as pl

from pipeline.config import Domain, PurposeSpec
from pipeline.core.errors import PipelineError
from pipeline.core.records import StageStats


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


def apply_allowlist(table: pl.DataFrame, spec: PurposeSpec) -> tuple[pl.DataFrame, StageStats]:
    missing = [c for c in spec.columns if c not in table.columns]
    if missing:
        raise PipelineError(f"purpose {spec.purpose!r}: allowlisted columns missing from the "
                            f"generalized table: {missing}")
    removed = [c for c in table.columns if c not in spec.columns]
    out = table.select(spec.columns)
    free = [c for c, t in out.schema.items() if t == pl.String
            and c not in spec.domains and c not in spec.pseudonym_columns]
    if free:
        raise PipelineError(f"purpose {spec.purpose!r}: string columns {free} have no declared "
                            "domain (schemas/purposes/*.yaml `domains`); refusing to publish "
                            "free-form values")
    counts = out.select(outside(c, d).sum().alias(c) for c, d in spec.domains.items()).row(
        0, named=True)
    out = out.with_columns(
        pl.when(outside(c, d)).then(pl.lit(d.other, dtype=out.schema[c])).otherwise(pl.col(c))
        .alias(c) for c, d in spec.domains.items() if counts[c])
    stats = StageStats(stage="minimize", rows_in=table.height, rows_out=out.height,
                       details={"purpose": spec.purpose, "columns_kept": list(spec.columns),
                                "columns_removed": removed,
                                "out_of_domain": {c: n for c, n in counts.items() if n}})
    return out, stats.check_balanced()
