"""A sharded day's validation outcome from its shards' (each shard's suite ran where the shard
was): no Great Expectations here, so the stage's own process never pays its import (7-14 s)
to merge what the workers found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.records import CheckResult, ValidationRecord
from pipeline.transforms.generalize.kanon import l_achieved


@dataclass(frozen=True)
class ShardValidation:
    """One shard's suite (without k and ℓ) and what k and ℓ need of it: distinct users per
    quasi-identifier group, and its distinct (group, sensitive value) pairs. Small: one row
    per group, never a user."""

    record: ValidationRecord
    users: pl.DataFrame | None
    pairs: pl.DataFrame | None


def merged_validation(parts: Sequence[ShardValidation], spec: PurposeSpec, *, k: int,
                      l: int | None = None, data_docs_index: str | None = None  # noqa: E741
                      ) -> ValidationRecord:
    """A day's outcome from its shards': every check but k and ℓ ran per shard in Great
    Expectations, and a check's results are merged (it passes if it passed everywhere;
    counts add up). k and ℓ are measured on the merge of every shard's groups: distinct users
    per group add up (shards hold disjoint users), distinct sensitive values per group are
    counted over all shards."""
    qis, sensitive = list(spec.quasi_identifiers), spec.sensitive_attribute
    records = [p.record for p in parts]
    checks = [CheckResult(
        expectation=same[0].expectation, column=same[0].column,
        success=all(c.success for c in same),
        observed=_added_up([c.observed for c in same]),
        unexpected_count=(None if all(c.unexpected_count is None for c in same)
                          else sum(c.unexpected_count or 0 for c in same)))
        for same in zip(*(r.checks for r in records), strict=True)]
    if not spec.aggregate:
        sizes = pl.concat([p.users for p in parts if p.users is not None]).group_by(qis).agg(
            pl.col("users").sum())
        k_seen = None if sizes.is_empty() else int(sizes["users"].min())  # type: ignore[arg-type]
        checks.append(CheckResult(expectation="expect_table_to_be_k_anonymous", column=None,
                                  success=k_seen is None or k_seen >= k,
                                  observed="no rows" if k_seen is None else k_seen))
        if l is not None and sensitive:
            l_seen = l_achieved(pl.concat([p.pairs for p in parts if p.pairs is not None])
                                .unique(), qis, sensitive)
            checks.append(CheckResult(expectation="expect_table_to_be_l_diverse", column=None,
                                      success=l_seen is None or l_seen >= l,
                                      observed="no rows" if l_seen is None else l_seen))
    return ValidationRecord(
        success=all(c.success for c in checks), checks=checks,
        data_docs_index=data_docs_index or (records[-1].data_docs_index if records else None))


def _added_up(values: Sequence[Any]) -> Any:
    """Shards' observed values as one: numbers summed, dicts merged key by key the same way,
    anything else (a ratio, a list of sample columns) the first shard's."""
    first = values[0]
    if isinstance(first, int | float) and not isinstance(first, bool):
        return sum(v for v in values if isinstance(v, int | float))
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
        return {k: _added_up([v[k] for v in values if isinstance(v, dict) and k in v])
                for k in keys}
    return first
