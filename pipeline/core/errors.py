"""The pipeline's exceptions.

Every message names a file, row, field or rule, never a value from the data: these messages end
up in logs, Airflow task output and reports, which must not carry personal data.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: anything the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A config or schema file is missing, malformed or inconsistent."""


class KeyUnavailableError(PipelineError):
    """No pseudonymization key could be loaded; the run must stop rather than go on unkeyed."""


class PiiPolicyError(PipelineError):
    """A column not tagged as PII holds PII and the policy says to stop (`undeclared_columns`)."""


class MissingInputError(PipelineError):
    """A stage's input partition does not exist (run the earlier stage first)."""


class ValidationFailedError(PipelineError):
    """The minimization suite failed: publishing is blocked for this partition."""


class BudgetExceededError(PipelineError):
    """A DP release would overspend the privacy budget of its window; nothing is released."""


class LedgerIntegrityError(PipelineError):
    """The privacy ledger and the stored release disagree; refuse rather than redraw noise."""
