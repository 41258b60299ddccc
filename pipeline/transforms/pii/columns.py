"""Find PII in string columns the schema does not tag as PII, by name and by content.

Schemas drift: a producer adds `referrer_email`, or a `keep` column starts carrying phone numbers.
Every string column that is not tagged (`handling: keep`, or absent from the schema) is checked:
its name against common PII names, and a sample of its distinct values with the project's
detector. A flagged column is handled by policy (`pii.undeclared_columns`): `fail` stops the run,
`drop` removes the column, `pseudonymize` replaces it by a keyed HMAC under the purpose key. The
finding (column, reason, entity types, share of sampled values) goes to the report; the values
never do.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection

import polars as pl

from pipeline.config import PiiConfig, RecordSchema
from pipeline.core.details import ColumnFinding
from pipeline.core.errors import PiiPolicyError
from pipeline.transforms.pii.detect import FastAnalyzer
from pipeline.transforms.pseudonymize import hmac_expr

# Column names that announce PII (matched on the lowercased name split at `_`, `-`, `.`).
PII_NAME_PATTERN = re.compile(
    r"(^|[_.-])(e?mail|email_?address|phone|mobile|msisdn|tel|fax|ssn|social_security|"
    r"(first|last|full|given|family|sur|user)_?name|name|address|street|zip|zipcode|postcode|"
    r"postal_?code|ip|ip_?addr(ess)?|dob|birth_?date|date_of_birth|iban|card_?number|cc|"
    r"passport|licen[cs]e|national_?id|tax_?id)($|[_.-])")


def columns_to_check(table: pl.DataFrame, schema: RecordSchema) -> list[str]:
    """String columns not tagged as PII: `keep` ones without a fixed value list, and any column
    the schema does not declare."""
    out = []
    for name, dtype in table.schema.items():
        if dtype != pl.String:
            continue
        spec = schema.fields.get(name)
        if spec is None or (spec.handling == "keep" and spec.values is None):
            out.append(name)
    return out


# The action for a flagged column the purpose publishes under a closed list of values: it is
# kept (later stages need it) and `minimize` replaces every value outside the list.
CLOSED_DOMAIN = "kept: closed domain"


def scan_columns(table: pl.DataFrame, schema: RecordSchema, analyzer: FastAnalyzer,
                 cfg: PiiConfig, closed: Collection[str] = ()) -> list[ColumnFinding]:
    """Flag columns whose name says PII, or where at least `column_scan_min_share` of a sample
    of distinct values holds PII. Sampling is seeded, so a rerun flags the same columns.
    `closed` columns are published only as values of a fixed list: dropping one would break
    the stages that need it, and none of its free values can reach the output anyway."""
    findings = []
    for column in columns_to_check(table, schema):
        values = table.get_column(column).drop_nulls().unique(maintain_order=True)
        if values.len() > cfg.column_scan_sample:
            values = values.sample(cfg.column_scan_sample, seed=0)
        sample = values.to_list()
        per_value = analyzer.analyze(sample) if sample else []
        entities: Counter[str] = Counter()
        for spans in per_value:
            entities.update({s.entity_type for s in spans})
        share = sum(1 for spans in per_value if spans) / len(sample) if sample else 0.0
        reasons = [r for r, hit in (
            ("name", bool(PII_NAME_PATTERN.search(column.lower()))),
            ("content", share >= cfg.column_scan_min_share)) if hit]
        if reasons:
            findings.append(ColumnFinding(
                column=column, reasons=reasons, entities=dict(sorted(entities.items())),
                sampled=len(sample), share_with_pii=round(share, 4),
                action=CLOSED_DOMAIN if column in closed else cfg.undeclared_columns))
    return findings


def apply_policy(table: pl.DataFrame, findings: list[ColumnFinding], *,
                 pseudonym_key: bytes) -> pl.DataFrame:
    """Drop or pseudonymize flagged columns; with policy `fail`, stop naming the columns."""
    if not findings:
        return table
    if any(f.action == "fail" for f in findings):
        raise PiiPolicyError(
            "columns not tagged as PII look like PII: " + "; ".join(
                f"{f.column} ({', '.join(f.reasons)}; {', '.join(f.entities) or 'by name'})"
                for f in findings)
            + ". Tag them in the event schema (handling: drop, scan or pseudonymize), or set "
            "pii.undeclared_columns to drop or pseudonymize.")
    drop = [f.column for f in findings if f.action == "drop"]
    hashed = [f.column for f in findings if f.action == "pseudonymize"]
    return table.with_columns(hmac_expr(c, pseudonym_key) for c in hashed).drop(drop)
