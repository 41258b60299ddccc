"""Custom Great Expectations expectations: k-anonymity in distinct users, ℓ-diversity, no
PII found by the project's own detector (Presidio recognizers plus ours,
`pipeline.transforms.pii.scrub`), and the pattern checks (residual PII shapes, pseudonym
and domain formats) computed over each column's distinct values with vectorized regexes.

Why the pattern checks are our own: GX's pandas regex expectations run Python's `re` once per
value (`astype(str).str.contains`), 11 of the 20 s a 620k-row shard took to validate. Here
each distinct value is matched once, by Polars' Rust regex engine where the pattern is in its
dialect, else by Python's `re` (lookarounds, back-references), and the counts are weighted by
how often each value occurs: the same counts, a fraction of the time. GX stays the gate, the
result store and the Data Docs.

Import this module before a suite that uses it is loaded: GX 1.24 silently drops expectations
whose class is not registered yet. `pipeline.transforms.validate.suite` imports it at module level.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from pipeline.transforms.generalize.kanon import k_achieved, l_achieved

if TYPE_CHECKING:
    from pipeline.transforms.pii.detect import FastAnalyzer

# The detector the residual-PII expectation runs. A GX expectation is plain config, so the loaded
# model is handed over here for the length of a validation run (`pii_detector`).
_detector: FastAnalyzer | None = None


@contextmanager
def pii_detector(analyzer: FastAnalyzer) -> Iterator[None]:
    global _detector
    _detector = analyzer
    try:
        yield
    finally:
        _detector = None


def _columns(engine: PandasExecutionEngine, domain_kwargs: dict, columns: list[str]
             ) -> pl.DataFrame:
    df, _, _ = engine.get_compute_domain(domain_kwargs, domain_type=MetricDomainTypes.TABLE)
    return pl.from_pandas(df[columns])


class TableKAnonymity(TableMetricProvider):
    """Smallest number of distinct users sharing one quasi-identifier combination."""

    metric_name = "table.k_anonymity"
    value_keys = ("quasi_identifiers", "user_column")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict
                ) -> int | None:
        qis, user = metric_value_kwargs["quasi_identifiers"], metric_value_kwargs["user_column"]
        return k_achieved(_columns(execution_engine, metric_domain_kwargs, [*qis, user]), qis, user)


class ExpectTableToBeKAnonymous(BatchExpectation):
    """Every combination of the quasi-identifiers holds at least `min_k` distinct users.

    The result carries only the number achieved, never a group's values.
    """

    quasi_identifiers: list[str]
    user_column: str
    min_k: int

    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.k_anonymity",)
    success_keys: ClassVar[tuple[str, ...]] = ("quasi_identifiers", "user_column", "min_k")

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict:
        k = metrics["table.k_anonymity"]  # None: no rows, so no group falls short
        return {"success": k is None or k >= self.min_k,
                "result": {"observed_value": "no rows" if k is None else k}}


class TableLDiversity(TableMetricProvider):
    """Fewest distinct sensitive values in one quasi-identifier combination."""

    metric_name = "table.l_diversity"
    value_keys = ("quasi_identifiers", "sensitive_column")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict
                ) -> int | None:
        qis, sensitive = (metric_value_kwargs["quasi_identifiers"],
                          metric_value_kwargs["sensitive_column"])
        return l_achieved(_columns(execution_engine, metric_domain_kwargs, [*qis, sensitive]),
                          qis, sensitive)


class ExpectTableToBeLDiverse(BatchExpectation):
    """Every combination of the quasi-identifiers shows at least `min_l` distinct values of the
    sensitive column, so membership in a group does not reveal the value.

    The result carries only the number achieved, never a group's values.
    """

    quasi_identifiers: list[str]
    sensitive_column: str
    min_l: int

    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.l_diversity",)
    success_keys: ClassVar[tuple[str, ...]] = ("quasi_identifiers", "sensitive_column", "min_l")

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict:
        ell = metrics["table.l_diversity"]
        return {"success": ell is None or ell >= self.min_l,
                "result": {"observed_value": "no rows" if ell is None else ell}}


class ColumnDetectedPii(TableMetricProvider):
    """Rows of a column in which the PII detector finds something, per entity type. Each
    distinct value is analyzed once. Only counts come out, never a value."""

    metric_name = "table.column_detected_pii"
    value_keys = ("scanned_column",)

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict
                ) -> dict[str, Any]:
        if _detector is None:
            raise RuntimeError("no PII detector loaded: run the suite inside pii_detector()")
        column = metric_value_kwargs["scanned_column"]
        counts = (_columns(execution_engine, metric_domain_kwargs, [column])[column]
                  .drop_nulls().cast(str).value_counts())
        values, rows = counts[column].to_list(), counts["count"].to_list()
        per_entity: Counter[str] = Counter()
        hit_rows = 0
        for spans, n in zip(_detector.analyze(values), rows, strict=True):
            if spans:
                hit_rows += n
                per_entity.update({e: n for e in {s.entity_type for s in spans}})
        return {"rows_with_pii": hit_rows, "entities": dict(sorted(per_entity.items()))}


class ExpectColumnToHaveNoDetectedPii(BatchExpectation):
    """No value of `scanned_column` holds PII the project's detector can find (names, e-mails,
    phones, IPs, card numbers, IBANs, SSNs, street addresses: `pii.entities` in config).

    The result carries row counts per entity type, never a value.
    """

    scanned_column: str

    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.column_detected_pii",)
    success_keys: ClassVar[tuple[str, ...]] = ("scanned_column",)

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict:
        found = metrics["table.column_detected_pii"]
        return {"success": found["rows_with_pii"] == 0, "result": {"observed_value": found}}


def matching_rows(values: pl.Series, pattern: str) -> int:
    """Non-null rows of `values` (as text) in which `pattern` matches somewhere (`re.search`
    semantics, as GX's regex expectations), each distinct value matched once."""
    return pattern_counts(values, {"pattern": pattern})["matching"]["pattern"]


def pattern_counts(values: pl.Series, patterns: dict[str, str]) -> dict[str, Any]:
    """Non-null rows of `values`, the rows each named pattern matches, and the rows any of
    them matches (a row with two shapes counts once), each distinct value matched once."""
    counts = values.drop_nulls().cast(pl.String).value_counts(name="_n")
    texts, rows = counts.get_column(values.name), counts.get_column("_n")
    hits = {name: _contains(texts, p) for name, p in patterns.items()}
    any_hit = pl.Series([False] * texts.len(), dtype=pl.Boolean)
    for hit in hits.values():
        any_hit = any_hit | hit
    return {"non_null": int(rows.sum()),
            "matching": {name: int(rows.filter(hit).sum()) for name, hit in hits.items()},
            "any": int(rows.filter(any_hit).sum())}


def _contains(texts: pl.Series, pattern: str) -> pl.Series:
    """Does `pattern` match somewhere in each text: vectorized in Polars when the pattern is
    in Rust's regex dialect, else Python's `re` (the dialect config patterns are written in)."""
    try:
        return texts.str.contains(pattern)
    except pl.exceptions.ComputeError:  # lookaround or back-reference: Python's re
        search = re.compile(pattern).search
        return pl.Series([search(t) is not None for t in texts], dtype=pl.Boolean)


def _column_pattern_counts(execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                           column: str, patterns: dict[str, str]) -> dict[str, Any]:
    values = _columns(execution_engine, metric_domain_kwargs, [column]).get_column(column)
    return pattern_counts(values, patterns)


class ColumnPatternMatches(TableMetricProvider):
    """`pattern_counts` of a column for named patterns (counts only, never a value)."""

    metric_name = "table.column_pattern_matches"
    value_keys = ("column_name", "patterns")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict
                ) -> dict[str, Any]:
        return _column_pattern_counts(execution_engine, metric_domain_kwargs,
                                      metric_value_kwargs["column_name"],
                                      metric_value_kwargs["patterns"])


class ColumnPatternMatch(TableMetricProvider):
    """`pattern_counts` of a column for one pattern (GX names a metric's values by the
    expectation's fields: `pattern` here, `patterns` above)."""

    metric_name = "table.column_pattern_match"
    value_keys = ("column_name", "pattern")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict
                ) -> dict[str, Any]:
        return _column_pattern_counts(execution_engine, metric_domain_kwargs,
                                      metric_value_kwargs["column_name"],
                                      {"pattern": metric_value_kwargs["pattern"]})


class ExpectColumnValuesToHoldNoPiiShape(BatchExpectation):
    """No value of `column_name` contains anything shaped like a direct identifier (`patterns`:
    e-mail address, phone number, IPv4 or IPv6 address).

    The result carries row counts per shape, never a value.
    """

    column_name: str
    patterns: dict[str, str]

    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.column_pattern_matches",)
    success_keys: ClassVar[tuple[str, ...]] = ("column_name", "patterns")

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict:
        found = metrics["table.column_pattern_matches"]
        rows = found["any"]  # rows with any shape: a row with two counts once
        return {"success": rows == 0,
                "result": {"observed_value": {"rows_with_shape": rows, "shapes": {
                    k: v for k, v in found["matching"].items() if v}},
                           "unexpected_count": rows}}


class ExpectColumnValuesToFullyMatchPattern(BatchExpectation):
    """Every non-null value of `column_name` matches `pattern` (anchor it for a full match).

    The result carries the count of values that do not, never a value.
    """

    column_name: str
    pattern: str

    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.column_pattern_match",)
    success_keys: ClassVar[tuple[str, ...]] = ("column_name", "pattern")

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict:
        found = metrics["table.column_pattern_match"]
        unexpected = found["non_null"] - found["matching"]["pattern"]
        return {"success": unexpected == 0,
                "result": {"observed_value": {"values_not_matching": unexpected},
                           "unexpected_count": unexpected}}
