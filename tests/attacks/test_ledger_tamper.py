"""The privacy ledger cannot be reset, truncated or rewritten without the next release
noticing; one release cannot be made arbitrarily expensive."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.core.context import RunContext
from pipeline.core.errors import ConfigError, LedgerIntegrityError
from pipeline.steps import features
from tests.conftest import PG, TEST_KEY_TEXT, mark_validated, postgres_up, write_config

DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]


def _ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> RunContext:
    """Three validated days, the first two released (config `overrides` as for write_config)."""
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    ctx = RunContext(load_config(write_config(tmp_path, **overrides)), run_date=DAYS[-1])
    for day in DAYS:  # a validated published partition a day
        ctx.storage.write(ctx.zone("generalized"), day, pl.DataFrame({
            "user_pseudonym": [f"u{i}" for i in range(50)], "region": ["Texas"] * 50,
            "age_band": ["25-34"] * 50, "device_type": ["mobile"] * 50,
            "content_category": ["news"] * 50, "event_type": ["view"] * 50,
            "session_seconds": [60] * 50}))
        mark_validated(ctx, day)
    for day in DAYS[:2]:
        features(ctx, day)
    return ctx


def _sql(ctx: RunContext, statement: str) -> None:
    with sqlite3.connect(ctx.root / "ledger" / "privacy_ledger.sqlite") as con:
        con.execute(statement)


@pytest.mark.parametrize("tamper", [
    "UPDATE privacy_releases SET epsilon = 0.001 WHERE release_date = '2026-11-01'",
    "DELETE FROM privacy_releases WHERE release_date = '2026-11-02'",
    "DELETE FROM privacy_releases",
    "delete the file",
    # a forged table with a digest to match (a client with no key can compute SHA-256)
    "UPDATE privacy_releases SET payload = X'00', payload_sha256 = "
    "'6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d' "
    "WHERE release_date = '2026-11-02'",
    # every row under a key id the ring does not hold, with its ε lowered
    "UPDATE privacy_releases SET mac_key_id = 'unknown-key', epsilon = 0.001",
    # a forged, unsealed release for the next day, charged nothing
    "INSERT INTO privacy_releases (purpose, feature_set, release_date, period_start, "
    "period_end, epsilon, rho, delta, mechanism, library, created_at, payload_sha256, "
    "payload, seq, prev_mac, mac, mac_key_id) SELECT purpose, feature_set, '2026-11-03', "
    "'2026-11-03', '2026-11-03', 0, 0, 0, mechanism, library, created_at, payload_sha256, "
    "payload, NULL, NULL, NULL, NULL FROM privacy_releases WHERE release_date = '2026-11-01'",
    # the last release gone with its head file and partition (as restoring a copy of the
    # ledger taken before it, then deleting the partition, leaves it): the run records remember
    "delete the last release, its head and its partition",
])
def test_when_the_ledger_is_tampered_with_then_no_release_is_made(
        tamper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path, monkeypatch)
    before = ctx.storage.partition(ctx.zone("features"), DAYS[1]).read_bytes()
    partition = ctx.storage.partition(ctx.zone("features"), DAYS[1])
    if tamper == "delete the file":
        for p in (ctx.root / "ledger").glob("privacy_ledger.sqlite*"):
            p.unlink()
    elif tamper.startswith("delete the last"):
        _sql(ctx, "DELETE FROM privacy_releases WHERE release_date = '2026-11-02'")
        shutil.rmtree(partition.parent)
    else:
        _sql(ctx, tamper)
    for day in (DAYS[1], DAYS[2]):  # neither a rerun (fresh noise) nor a new release
        with pytest.raises(LedgerIntegrityError, match="reset, truncated or edited"):
            features(ctx, day)
    if partition.exists():
        assert partition.read_bytes() == before
    assert not ctx.storage.partition(ctx.zone("features"), DAYS[2]).exists()


def test_when_the_ledger_is_intact_then_reruns_return_the_stored_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path, monkeypatch)
    first = ctx.storage.partition(ctx.zone("features"), DAYS[1]).read_bytes()
    assert Path(features(ctx, DAYS[1])).read_bytes() == first
    features(ctx, DAYS[2])


def test_when_one_release_would_cost_a_billion_epsilon_then_config_refuses_it(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_epsilon_per_release"):
        load_config(write_config(tmp_path, features__epsilon=1e9,
                                 budget__epsilon_per_window=1e12))


def _rewind_everything(ctx: RunContext) -> None:
    """What restoring a backup of the data root taken before day 2's release leaves: no ledger
    row, head file, partition or run record of it."""
    _sql(ctx, "DELETE FROM privacy_releases WHERE release_date = '2026-11-02'")
    shutil.rmtree(ctx.storage.partition(ctx.zone("features"), DAYS[1]).parent)
    (ctx.records(DAYS[1]).dir / "ledger.json").unlink()


@pytest.mark.skipif(not postgres_up(), reason="PostgreSQL is not running on 127.0.0.1:5432")
def test_when_ledger_and_run_records_are_rewound_then_the_external_witness_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    schema = f"witness_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    try:
        dsn = f"{PG}?options=-csearch_path%3D{schema}"
        monkeypatch.setenv("TEST_WITNESS_DSN", dsn)
        ctx = _ctx(tmp_path, monkeypatch, budget__witness_dsn_env="TEST_WITNESS_DSN")
        features(ctx, DAYS[1])  # a rerun: the same release, witnessed once
        with psycopg.connect(dsn, autocommit=True) as con:
            assert con.execute("SELECT release_date FROM privacy_release_witness ORDER BY 1"
                               ).fetchall() == [("2026-11-01",), ("2026-11-02",)]
            for change in ("UPDATE privacy_release_witness SET payload_sha256 = 'x'",
                           "DELETE FROM privacy_release_witness",
                           "TRUNCATE privacy_release_witness"):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    con.execute(change)

        _rewind_everything(ctx)
        for day in (DAYS[1], DAYS[2]):  # neither a fresh draw of day 2 nor a new release
            with pytest.raises(LedgerIntegrityError, match="release witness"):
                features(ctx, day)
        assert not ctx.storage.partition(ctx.zone("features"), DAYS[1]).exists()
    finally:
        with psycopg.connect(PG, autocommit=True) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


def test_when_all_is_rewound_and_no_witness_is_set_then_the_day_is_drawn_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the external witness exists: the data root alone cannot tell a restored backup."""
    ctx = _ctx(tmp_path, monkeypatch)
    before = ctx.storage.partition(ctx.zone("features"), DAYS[1]).read_bytes()
    _rewind_everything(ctx)
    assert Path(features(ctx, DAYS[1])).read_bytes() != before
