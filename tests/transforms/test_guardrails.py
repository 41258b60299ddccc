"""Input guardrails: each check on its own, the history it compares with, and the override."""

from __future__ import annotations

import pytest

from pipeline.config import GuardrailsConfig
from pipeline.transforms.guardrails import DayInput, check_guardrails

CFG = GuardrailsConfig()  # the shipped defaults
NORMAL = DayInput(rows_in=3000, rows_valid=2970, rows_quarantined=30, users_after_consent=220)
HISTORY = [(f"2026-11-0{i}", n) for i, n in enumerate((3010, 2950, 3100, 2890), start=1)]


def _breached(day: DayInput, **kw: object) -> list[str]:
    return [c.name for c in check_guardrails(day, CFG, **{"history": HISTORY, **kw}).breached]


def test_when_the_day_is_normal_then_every_guardrail_holds() -> None:
    record = check_guardrails(NORMAL, CFG, history=HISTORY)
    assert record.passed and not record.breached
    assert record.baseline_median == pytest.approx(2980) and len(record.baseline_dates) == 4


@pytest.mark.parametrize(("day", "breached"), [
    # every line quarantined (an upstream rename of event_id): 0 valid rows, 0 users
    (DayInput(51, 0, 51, 0), ["min_rows_in", "min_users_after_consent",
                              "max_quarantine_share", "volume_vs_recent"]),
    (DayInput(0, 0, 0, 0), ["min_rows_in", "min_users_after_consent", "volume_vs_recent"]),
    (DayInput(3000, 2100, 900, 200), ["max_quarantine_share"]),  # 30% quarantined
    (DayInput(800, 790, 10, 60), ["volume_vs_recent"]),  # a quarter of a normal day
    (DayInput(12000, 11900, 100, 900), ["volume_vs_recent"]),  # a day sent four times
    (DayInput(3000, 2990, 10, 12), ["min_users_after_consent"]),  # consent feed gone stale
])
def test_when_a_day_is_abnormal_then_the_guardrail_it_breaks_is_named(
        day: DayInput, breached: list[str]) -> None:
    assert _breached(day) == breached


def test_when_history_is_short_then_the_volume_check_says_not_applicable() -> None:
    record = check_guardrails(DayInput(800, 790, 10, 60), CFG, history=HISTORY[:2])
    volume = next(c for c in record.checks if c.name == "volume_vs_recent")
    assert record.passed and volume.measured is None and "not applicable" in volume.note


def test_when_the_operator_accepts_low_volume_then_volume_breaches_pass_but_a_broken_feed_not(
        ) -> None:
    small = check_guardrails(DayInput(80, 79, 1, 30), CFG, history=HISTORY,
                             accept_low_volume=True)
    assert small.passed and {c.name for c in small.accepted} == {
        "min_rows_in", "min_users_after_consent", "volume_vs_recent"}
    broken = check_guardrails(DayInput(51, 0, 51, 0), CFG, history=HISTORY,
                              accept_low_volume=True)
    assert not broken.passed and [c.name for c in broken.breached] == ["max_quarantine_share"]


def test_when_a_check_is_described_then_it_names_the_measure_and_limit() -> None:
    record = check_guardrails(DayInput(51, 0, 51, 0), CFG, history=HISTORY)
    text = "; ".join(c.describe() for c in record.breached)
    assert "max_quarantine_share: 100.0% (limit <= 20%) BREACHED" in text
    assert "min_rows_in: 51 (limit >= 100) BREACHED" in text


def test_when_volume_config_is_inconsistent_then_it_fails_at_load() -> None:
    with pytest.raises(ValueError, match="min_history"):
        GuardrailsConfig.model_validate({"volume": {"baseline_days": 2, "min_history": 3}})
