"""`scale.lock: postgres`: the run locks are advisory locks in the ledger's database, so two
runs of one data root started on two machines take turns. Two processes stand in for the
machines; no `fcntl` lock is taken, so only Postgres can make one wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.core.locks import PostgresLocks
from tests.conftest import PG, ROOT, generated_day, postgres_up

DAY = "2026-11-01"
pytestmark = pytest.mark.skipif(not postgres_up(),
                                reason="no PostgreSQL on 127.0.0.1:5432 (the lock's database)")


@pytest.fixture
def dsn() -> str:
    import psycopg

    schema = f"locks_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    return f"{PG}?options=-csearch_path%3D{schema}"


def test_when_one_holds_a_root_lock_then_another_session_waits_and_other_roots_do_not(
        dsn: str) -> None:
    a, b = PostgresLocks(dsn, "s3://bucket/a"), PostgresLocks(dsn, "s3://bucket/b")
    waited: list[str] = []
    hold = ("import sys, time\nfrom pipeline.core.locks import PostgresLocks\n"
            "with PostgresLocks(sys.argv[1], 's3://bucket/a').run_date('p', 'd', "
            "on_wait=lambda: None):\n    print('held', flush=True); time.sleep(2)")
    proc = subprocess.Popen([sys.executable, "-c", hold, dsn], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    with b.run_date("p", "d", on_wait=lambda: waited.append("b")):  # another root: no wait
        pass
    with a.data_root(exclusive=False), a.data_root(exclusive=False):  # shared: both at once
        pass
    start = time.monotonic()
    with a.run_date("p", "d", on_wait=lambda: waited.append("a")):
        assert time.monotonic() - start > 1.0
    assert waited == ["a"] and proc.wait() == 0


@pytest.mark.slow
def test_when_two_runs_of_one_root_start_together_then_one_waits_for_the_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=120, seed=5,
                                 scale__lock="postgres",
                                 budget__ledger_dsn_env="TEST_LOCK_LEDGER_DSN")
    env = {**os.environ, "TEST_LOCK_LEDGER_DSN": dsn}
    cmd = [sys.executable, "-m", "pipeline.cli", "--config", str(config), "run", "--date", DAY]
    runs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for _, e in outs]
    waited = [e for _, e in outs if "another run of this date is in progress" in e]
    assert len(waited) == 1
    assert not (data / ".locks").exists()  # no local lock file was taken
