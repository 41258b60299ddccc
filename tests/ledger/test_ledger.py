"""The privacy ledger, on SQLite and on the real Postgres at 127.0.0.1:5432 (database `test`)."""

import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest

from pipeline.core.errors import BudgetExceededError, ConfigError
from pipeline.ledger.accounting import ZCDP
from pipeline.ledger.store import PrivacyLedger, Release, WindowBudget
from tests.conftest import PG, postgres_up


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivacyLedger]:
    if request.param == "sqlite":
        yield PrivacyLedger(tmp_path / "ledger.sqlite")
        return
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg

    schema = f"ledger_{uuid.uuid4().hex[:12]}"  # each test its own schema, dropped after
    with psycopg.connect(PG, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PrivacyLedger(dsn=f"{PG}?options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(PG, autocommit=True) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


def _release(day: str, eps: float | None = 1.0, *, rho: float | None = None, delta: float = 0.0,
             start: str | None = None, payload: bytes = b"noisy table") -> Release:
    return Release(purpose="personalization", feature_set="cohort_daily", release_date=day,
                   period_start=start or day, epsilon=eps,
                   rho=rho if rho is not None else (eps or 0) ** 2 / 2, delta=delta,
                   mechanism="test", library="test", payload=payload)


def test_when_release_recorded_twice_then_stored_one_wins_and_is_charged_once(
        ledger: PrivacyLedger) -> None:
    budget = WindowBudget(days=30, limit=10)
    first = ledger.record(_release("2026-11-01", payload=b"first draw"), budget)
    again = ledger.record(_release("2026-11-01", payload=b"second draw"), budget)
    assert again.payload == first.payload == b"first draw"
    assert ledger.get("personalization", "cohort_daily", "2026-11-01") == first
    assert ledger.window_spend("personalization", date(2026, 11, 1), budget).spent == 1.0


def test_when_release_once_is_asked_again_then_nothing_is_drawn_or_charged(
        ledger: PrivacyLedger) -> None:
    budget, draws = WindowBudget(days=30, limit=1.5), []

    def draw() -> Release:
        draws.append(1)
        return _release("2026-11-01", payload=f"draw {len(draws)}".encode())

    plan = _release("2026-11-01", payload=b"")
    first, reused = ledger.release_once(plan, budget, draw)
    assert (first.payload, reused) == (b"draw 1", False)
    again, reused = ledger.release_once(plan, budget, draw)
    assert (again.payload, reused, len(draws)) == (b"draw 1", True, 1)
    with pytest.raises(BudgetExceededError):  # refused before drawing
        ledger.release_once(_release("2026-11-02"), budget, draw)
    assert len(draws) == 1 and len(ledger.history("personalization")) == 1


def test_when_window_budget_would_be_exceeded_then_release_is_refused(
        ledger: PrivacyLedger) -> None:
    budget = WindowBudget(days=3, limit=2.5)
    ledger.record(_release("2026-11-01"), budget)
    ledger.record(_release("2026-11-02"), budget)
    with pytest.raises(BudgetExceededError, match="3-day window"):
        ledger.record(_release("2026-11-03"), budget)
    assert ledger.get("personalization", "cohort_daily", "2026-11-03") is None
    ledger.record(_release("2026-11-04"), budget)  # 11-01 has left the window


def test_when_backfilling_then_later_windows_are_protected_too(ledger: PrivacyLedger) -> None:
    budget = WindowBudget(days=3, limit=2.5)
    ledger.record(_release("2026-11-05"), budget)
    ledger.record(_release("2026-11-06"), budget)
    with pytest.raises(BudgetExceededError):
        ledger.record(_release("2026-11-04"), budget)  # window 11-04..11-06 would hold 3


def test_when_a_release_covers_a_week_then_every_window_touching_its_data_is_charged(
        ledger: PrivacyLedger) -> None:
    budget = WindowBudget(days=3, limit=1.5)
    ledger.record(_release("2026-11-08", start="2026-11-02"), budget)  # data 11-02..11-08
    with pytest.raises(BudgetExceededError):  # window 10-31..11-02 overlaps the week's data
        ledger.record(_release("2026-10-31"), budget)
    ledger.record(_release("2026-10-30"), budget)  # window 10-30..11-01 does not


def test_when_accounting_is_zcdp_then_pure_releases_cost_half_epsilon_squared(
        ledger: PrivacyLedger) -> None:
    """Ten ε=1 releases: ε adds to 10, ρ only to 5 (each ε-DP release is ε²/2-zCDP)."""
    pure, zcdp = WindowBudget(days=30, limit=9.5), WindowBudget(days=30, limit=5,
                                                               accountant=ZCDP)
    for day in range(1, 11):
        ledger.record(_release(f"2026-11-{day:02d}"), zcdp)
    assert ledger.window_spend("personalization", date(2026, 11, 10), zcdp).spent == 5
    with pytest.raises(BudgetExceededError):
        ledger.check_budget(_release("2026-11-11", 0.1), pure)
    with pytest.raises(BudgetExceededError, match="ρ=5.005"):
        ledger.record(_release("2026-11-11", 0.1), zcdp)
    # A Gaussian release has no ε of its own: pure accounting cannot add it up.
    ledger.record(_release("2026-12-20", None, rho=0.5), zcdp)
    with pytest.raises(ConfigError, match="accounting: zcdp"):
        ledger.window_spend("personalization", date(2026, 12, 20), pure)
    assert zcdp.as_epsilon(0.5) == pytest.approx(0.5 + 2 * (0.5 * 13.8155) ** 0.5, rel=1e-4)


def test_when_delta_would_exceed_its_window_budget_then_release_is_refused(
        ledger: PrivacyLedger) -> None:
    budget = WindowBudget(days=30, limit=100, delta=1e-6)
    ledger.record(_release("2026-11-01", delta=6e-7), budget)
    with pytest.raises(BudgetExceededError, match="δ=1.2e-06"):
        ledger.record(_release("2026-11-02", delta=6e-7), budget)


def test_when_runs_charge_at_once_then_the_window_never_overspends(
        ledger: PrivacyLedger) -> None:
    """Twelve runs for twelve dates race for a budget of five releases: the charge and the check
    are one locked transaction, so exactly five land."""
    budget = WindowBudget(days=30, limit=5)

    def charge(day: int) -> bool:
        try:
            ledger.record(_release(f"2026-11-{day:02d}"), budget)
            return True
        except BudgetExceededError:
            return False

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(charge, range(1, 13))) == 5
    assert len(ledger.history("personalization")) == 5


def test_when_ledger_payload_is_tampered_then_reading_it_fails(tmp_path: Path) -> None:
    from pipeline.core.errors import LedgerIntegrityError

    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    ledger.record(_release("2026-11-01"), WindowBudget(days=30, limit=10))
    with sqlite3.connect(tmp_path / "ledger.sqlite") as con:
        con.execute("UPDATE privacy_releases SET payload = ?", (b"fresh noise",))
    with pytest.raises(LedgerIntegrityError, match="checksum"):
        ledger.get("personalization", "cohort_daily", "2026-11-01")


def test_when_ledger_predates_zcdp_accounting_then_its_releases_carry_over(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE releases (purpose TEXT, feature_set TEXT, release_date TEXT, "
                    "epsilon REAL, delta REAL, mechanism TEXT, library TEXT, created_at TEXT, "
                    "payload_sha256 TEXT, payload BLOB)")
        old = _release("2026-11-01", 2.0)
        con.execute("INSERT INTO releases VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (old.purpose, old.feature_set, old.release_date, 2.0, 0.0, "m", "l",
                     "2026-11-01T00:00:00+00:00", old.payload_sha256, old.payload))
    ledger = PrivacyLedger(path)
    stored = ledger.get("personalization", "cohort_daily", "2026-11-01")
    assert stored is not None and stored.payload == old.payload
    assert (stored.epsilon, stored.rho, stored.period_start) == (2.0, 2.0, "2026-11-01")


def test_when_postgres_dsn_env_is_unset_then_the_run_stops(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from pipeline.config import BudgetConfig

    monkeypatch.delenv("LEDGER_DSN_FOR_TEST", raising=False)
    from pipeline.core.keys import KeyRing, parse_key
    from tests.conftest import TEST_KEY_TEXT

    ring = KeyRing(active=parse_key(TEST_KEY_TEXT, source="test"))
    with pytest.raises(ConfigError, match="LEDGER_DSN_FOR_TEST is not set"):
        PrivacyLedger.from_config(BudgetConfig(ledger_dsn_env="LEDGER_DSN_FOR_TEST"), tmp_path,
                                  ring)


def test_when_a_retired_key_is_removed_then_its_kept_mac_key_still_checks_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a rotation the old master key may leave the ring (it derives pseudonyms and the
    staging key); its ledger MAC key, kept apart, still checks the rows it sealed."""
    import base64

    from pipeline.config import BudgetConfig
    from pipeline.core.errors import LedgerIntegrityError
    from pipeline.core.keys import KeyRing, parse_key
    from pipeline.ledger.store import mac_key_lines

    old = parse_key("old-1:" + base64.b64encode(b"o" * 32).decode(), source="test")
    new = parse_key("new-2:" + base64.b64encode(b"n" * 32).decode(), source="test")
    cfg, budget = BudgetConfig(), WindowBudget(days=30, limit=10)
    monkeypatch.delenv(cfg.retired_mac_keys_env, raising=False)
    PrivacyLedger.from_config(cfg, tmp_path, KeyRing(active=old)).record(
        _release("2026-11-01"), budget)
    rotated = KeyRing(active=new, retired=(old,))
    PrivacyLedger.from_config(cfg, tmp_path, rotated).record(_release("2026-11-02"), budget)
    exported = mac_key_lines(rotated)

    without_old = KeyRing(active=new)
    with pytest.raises(LedgerIntegrityError, match="old-1"):
        PrivacyLedger.from_config(cfg, tmp_path, without_old).verify("personalization")
    monkeypatch.setenv(cfg.retired_mac_keys_env, "\n".join(exported))
    ledger = PrivacyLedger.from_config(cfg, tmp_path, without_old)
    assert ledger.verify("personalization") == 2
    ledger.record(_release("2026-11-03"), budget)  # new rows: under the active key
    with sqlite3.connect(tmp_path / cfg.ledger_path) as con:
        assert con.execute("SELECT mac_key_id FROM privacy_releases ORDER BY seq").fetchall() \
            == [("old-1",), ("new-2",), ("new-2",)]
        con.execute("UPDATE privacy_releases SET epsilon = 0.001 WHERE release_date = "
                    "'2026-11-01'")  # an old row's ε, edited
    with pytest.raises(LedgerIntegrityError, match="2026-11-01 was altered"):
        PrivacyLedger.from_config(cfg, tmp_path, without_old).verify("personalization")
    monkeypatch.setenv(cfg.retired_mac_keys_env, "old-1:not-base64")
    with pytest.raises(ConfigError, match="entry 1 is not") as err:
        PrivacyLedger.from_config(cfg, tmp_path, without_old)
    assert "not-base64" not in str(err.value)
