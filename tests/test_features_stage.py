"""The features stage with its ledger: weekly sets released on Sundays over Monday..Sunday, and
zCDP releases charged once in a Postgres ledger."""

import uuid
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.core.context import RunContext
from pipeline.core.errors import BudgetExceededError, ValidationFailedError
from pipeline.ledger.release import release_days
from pipeline.ledger.store import PrivacyLedger
from pipeline.steps import features
from tests.conftest import PG, TEST_KEY_TEXT, mark_validated, postgres_up, write_config

SUNDAY = date(2026, 11, 8)


def _day(ctx: RunContext, day: date, users: range) -> None:
    """A validated generalized partition for `day`: each user one event in Texas|25-34|mobile."""
    n = len(users)
    ctx.storage.write(ctx.zone("generalized"), day, pl.DataFrame({
        "user_pseudonym": [f"u{i}" for i in users], "region": ["Texas"] * n,
        "age_band": ["25-34"] * n, "device_type": ["mobile"] * n,
        "content_category": ["news"] * n, "event_type": ["view"] * n,
        "session_seconds": [60] * n}))
    mark_validated(ctx, day)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    cfg = load_config(write_config(tmp_path, features__period="week",
                                   features__feature_set="cohort_weekly",
                                   budget__window_days=7, budget__epsilon_per_window=1.5))
    return RunContext(cfg, run_date=SUNDAY)


def test_when_period_is_week_then_sunday_releases_the_whole_week_once(ctx: RunContext) -> None:
    for i in range(7):  # 100 new users a day: the week holds 700
        _day(ctx, SUNDAY - timedelta(days=6 - i), range(100 * i, 100 * (i + 1)))
    assert release_days("week", SUNDAY - timedelta(days=1)) is None
    features(ctx, SUNDAY - timedelta(days=1))  # Saturday: nothing due
    saturday = (ctx.records(SUNDAY - timedelta(days=1)).dir / "ledger.json").read_text()
    assert '"release_due": false' in saturday and str(SUNDAY) in saturday

    table = pl.read_parquet(features(ctx, SUNDAY))
    row = table.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    assert abs(row["active_users"] - 700) < 5 * row["active_users_error95"]
    assert ctx.records(SUNDAY).stats()["features"].rows_in == 700

    ledger = PrivacyLedger.from_config(ctx.cfg.budget, ctx.root, ctx.keys)
    stored = ledger.get(ctx.cfg.purpose, "cohort_weekly", str(SUNDAY))
    assert stored is not None and stored.period_start == str(SUNDAY - timedelta(days=6))
    # The next week's release shares no day with this one but its 7-day windows overlap it:
    # the window ending Monday 11-09 holds both releases' data, 2 > 1.5.
    for i in range(7):
        _day(ctx, SUNDAY + timedelta(days=1 + i), range(100))
    with pytest.raises(BudgetExceededError, match="7-day window"):
        features(ctx, SUNDAY + timedelta(days=7))


def test_when_a_day_of_the_week_is_not_validated_then_nothing_is_released(
        ctx: RunContext) -> None:
    for i in range(7):
        if i != 3:
            _day(ctx, SUNDAY - timedelta(days=6 - i), range(100))
    with pytest.raises(ValidationFailedError, match=str(SUNDAY - timedelta(days=3))):
        features(ctx, SUNDAY)
    assert not ctx.storage.partition(ctx.zone("features"), SUNDAY).exists()


@pytest.mark.skipif(not postgres_up(), reason="PostgreSQL is not running on 127.0.0.1:5432")
def test_when_ledger_is_postgres_then_a_rerun_returns_the_same_bytes_and_charges_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    schema = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    try:
        monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
        monkeypatch.setenv("TEST_LEDGER_DSN", f"{PG}?options=-csearch_path%3D{schema}")
        cfg = load_config(write_config(
            tmp_path, features__privacy="zcdp", features__epsilon=None, features__rho=0.1,
            budget__accounting="zcdp", budget__rho_per_window=1.0,
            budget__ledger_dsn_env="TEST_LEDGER_DSN"))
        ctx = RunContext(cfg, run_date=SUNDAY)
        _day(ctx, SUNDAY, range(300))
        first = Path(features(ctx, SUNDAY)).read_bytes()
        again = Path(features(ctx, SUNDAY)).read_bytes()
        assert first == again
        ledger = PrivacyLedger.from_config(cfg.budget, ctx.root, ctx.keys)
        assert ledger.history(cfg.purpose) == [(str(SUNDAY), "cohort_daily", None, 0.1, 0.0)]
        assert "TEST_LEDGER_DSN" in ledger.where and "postgresql://" not in ledger.where
        info = (ctx.records(SUNDAY).dir / "ledger.json").read_text()
        assert '"reused_stored_release": true' in info and "postgresql://" not in info
    finally:
        with psycopg.connect(PG, autocommit=True) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


def test_when_a_day_was_validated_before_guardrails_existed_then_a_week_still_releases(
        ctx: RunContext) -> None:
    from pipeline.core.errors import GuardrailError
    from pipeline.core.records import GuardrailRecord, StageOutcome, ValidationRecord

    for i in range(7):
        _day(ctx, SUNDAY - timedelta(days=6 - i), range(100))
    monday = SUNDAY - timedelta(days=6)
    legacy = ctx.records(monday)
    (legacy.dir / GuardrailRecord.file).unlink()  # run by a version without the stage
    assert legacy.load(ValidationRecord).success
    wednesday = ctx.records(SUNDAY - timedelta(days=4))  # the guardrails ran and failed
    wednesday.save(wednesday.load(GuardrailRecord).model_copy(update={"passed": False}))
    wednesday.save_outcome(StageOutcome(stage="guardrails", run_id="r", status="failed",
                                        started_at="t"))
    with pytest.raises(GuardrailError, match=str(SUNDAY - timedelta(days=4))):
        features(ctx, SUNDAY)
    wednesday.save(wednesday.load(GuardrailRecord).model_copy(update={"passed": True}))
    assert features(ctx, SUNDAY)


def test_when_a_weeks_days_are_sharded_then_it_is_regrouped_by_user_and_bounded_as_one(
        ctx: RunContext) -> None:
    """A user's events on several days, in different shards each day: the week is regrouped
    by user (scratch pieces under the stage's guard) and bounded as if read whole, and no piece
    is left."""
    from pipeline.stages import STAGES
    from pipeline.transforms.features import bounded_shard

    zone, frames = ctx.zone("generalized"), []
    for i in range(7):  # 60 users every day, in 1 to 3 shards, cohorts changing by day
        d, rows = SUNDAY - timedelta(days=6 - i), [(u, r) for u in range(60) for r in range(3)]
        day = pl.DataFrame({
            "user_pseudonym": [f"u{u}" for u, _ in rows],
            "region": [("Texas", "Ohio")[(u + r + i) % 2] for u, r in rows],
            "age_band": ["25-34"] * len(rows),
            "device_type": [("mobile", "desktop", "tablet")[(u + i) % 3] for u, _ in rows],
            "content_category": [("news", "sports", "music")[r] for _, r in rows],
            "event_type": ["view"] * len(rows), "session_seconds": [30 + i] * len(rows)})
        n = 1 + i % 3
        shards = [day.filter(pl.col("user_pseudonym").hash(seed=i) % n == s) for s in range(n)]
        ctx.storage.write_shards(zone, d, iter(shards), n)
        mark_validated(ctx, d)
        frames.append(day)
    staged = ctx.for_stage(STAGES["features"])
    features(staged, SUNDAY)

    stats = ctx.records(SUNDAY).stats()["features"]
    whole = bounded_shard(pl.concat(frames), ctx.cfg.features,
                          age_bands=ctx.cfg.generalize.age_bands, user_col="user_pseudonym",
                          release_date=str(SUNDAY))
    assert (stats.rows_in, whole.rows_in) == (7 * 180, 7 * 180)
    assert stats.details.users_counted == whole.users == 60
    spill = ctx.storage.spill_dir(zone, SUNDAY)
    assert not spill.exists()
    assert ("generalized", "write") not in staged.touched["features"]
