"""The gates a day must pass: its input the guardrails, its minimized table validation.

The engine checks `require_validated` before every `gated` stage of the stage table (the DP
release and publishing), so no stage has to remember to; `validate` checks `require_guarded`
itself (it is the gate), and a weekly release checks every earlier day of its week.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pipeline.core.errors import GuardrailError, ValidationFailedError
from pipeline.core.records import GuardrailRecord, ValidationRecord

if TYPE_CHECKING:
    from pipeline.core.context import RunContext


def require_guarded(ctx: RunContext, day: date, *, validated_before: bool = False) -> None:
    """The day's input passed the guardrails. `validated_before`: the day already passed
    validation, and one the guardrails never ran on (validated before they existed) counts;
    one they ran on must have passed them."""
    records = ctx.records(day)
    guard = records.load(GuardrailRecord)
    if guard is None and validated_before and "guardrails" not in records.outcomes():
        return
    if guard is None or not guard.passed:
        raise GuardrailError(f"{day}: the day's input has not passed the guardrails; "
                             "refusing to validate, release or publish it")


def require_validated(ctx: RunContext, day: date) -> None:
    """The day passed validation and its input the guardrails (a re-run that breached one
    leaves an earlier run's passing validation behind: that does not count)."""
    outcome = ctx.records(day).load(ValidationRecord)
    if outcome is None or not outcome.success:
        raise ValidationFailedError(f"{day}: no passing validation for this partition; "
                                    "refusing to release or publish")
    require_guarded(ctx, day, validated_before=True)
