from pathlib import Path

import pytest

from pipeline.budget import PrivacyLedger, Release, WindowBudget
from pipeline.errors import BudgetExceededError


def _release(day: str, eps: float = 1.0, payload: bytes = b"noisy table") -> Release:
    return Release(purpose="personalization", feature_set="cohort_daily", release_date=day,
                   epsilon=eps, delta=0.0, mechanism="test", library="test", payload=payload)


def test_when_release_recorded_twice_then_stored_one_wins_and_is_charged_once(
        tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    budget = WindowBudget(days=30, epsilon=10)
    first = ledger.record(_release("2026-11-01", payload=b"first draw"), budget)
    again = ledger.record(_release("2026-11-01", payload=b"second draw"), budget)
    assert again.payload == first.payload == b"first draw"
    assert ledger.spent("personalization", *_window("2026-10-03", "2026-11-01")) == 1.0


def _window(a: str, b: str):  # noqa: ANN202
    from datetime import date

    return date.fromisoformat(a), date.fromisoformat(b)


def test_when_window_budget_would_be_exceeded_then_release_is_refused(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    budget = WindowBudget(days=3, epsilon=2.5)
    ledger.record(_release("2026-11-01"), budget)
    ledger.record(_release("2026-11-02"), budget)
    with pytest.raises(BudgetExceededError, match="3-day window"):
        ledger.record(_release("2026-11-03"), budget)
    assert ledger.get("personalization", "cohort_daily", "2026-11-03") is None
    ledger.record(_release("2026-11-04"), budget)  # 11-01 has left the window


def test_when_backfilling_then_later_windows_are_protected_too(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    budget = WindowBudget(days=3, epsilon=2.5)
    ledger.record(_release("2026-11-05"), budget)
    ledger.record(_release("2026-11-06"), budget)
    with pytest.raises(BudgetExceededError):
        ledger.record(_release("2026-11-04"), budget)  # window 11-04..11-06 would hold 3
