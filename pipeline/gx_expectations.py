"""Custom Great Expectations expectations: k-anonymity in distinct users, ℓ-diversity.

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

from pipeline.kanon import k_achieved, l_achieved


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
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict) -> int:
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
        k = metrics["table.k_anonymity"]
        return {"success": k >= self.min_k, "result": {"observed_value": k}}


class TableLDiversity(TableMetricProvider):
    """Fewest distinct sensitive values in one quasi-identifier combination."""

    metric_name = "table.l_diversity"
    value_keys = ("quasi_identifiers", "sensitive_column")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                metric_value_kwargs: dict, metrics: dict, runtime_configuration: dict) -> int:
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
        return {"success": ell >= self.min_l, "result": {"observed_value": ell}}
