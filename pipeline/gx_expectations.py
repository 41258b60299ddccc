"""Custom Great Expectations expectation: k-anonymity in distinct users.

Import this module before a suite that uses it is loaded: GX 1.24 silently drops expectations
whose class is not registered yet. `pipeline.validate` imports it at module level.
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from pipeline.kanon import k_achieved


class TableKAnonymity(TableMetricProvider):
    """Smallest number of distinct users sharing one quasi-identifier combination."""

    metric_name = "table.k_anonymity"
    value_keys = ("quasi_identifiers", "user_column")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict) -> int:
        df, _, _ = execution_engine.get_compute_domain(
            metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        qis = list(metric_value_kwargs["quasi_identifiers"])
        user = metric_value_kwargs["user_column"]
        return k_achieved(pl.from_pandas(df[[*qis, user]]), qis, user)


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
        k = metrics["table.k_anonymity"]
        return {"success": k >= self.min_k, "result": {"observed_value": k}}
