"""The daily DAG under a real Airflow: api-server and scheduler (LocalExecutor) on a Postgres
metadata database (the machine's server; SQLite when it is absent).

One backfill of four dates with Airflow's default backfill concurrency (up to 10 runs side by
side): three good days, and a day whose raw events never arrived whole. The good days end
`success` and publish; the broken day ends `failed` (its gate fails, nothing is retried), and its
report names the stage and reason. (The scheduler's own run for the latest day waits, deferred,
for input that never lands here; it is left out.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_KEY_TEXT, reports_of, write_config
from tests.dags.test_dag_integrity import write_deployment

DAG_ID = "privacy_personalization_daily"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
BACKFILL = ["2026-11-01", "2026-11-02", "2026-11-03"]
BROKEN = "2026-11-04"  # its events file is missing: check_input fails
WAIT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metadata_db() -> Iterator[str]:
    """A fresh Postgres database for Airflow's metadata, dropped afterwards; SQLite if no
    server answers."""
    try:
        import psycopg

        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True,
                                connect_timeout=3)
    except Exception:  # noqa: BLE001 - any failure to connect means: no server here
        yield ""
        return
    name = f"airflow_it_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG.format(db=name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def metadata_db() -> Iterator[str]:
    yield from _metadata_db()


def _airflow(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "airflow", *args], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, f"airflow {' '.join(args)}:\n{out.stderr[-3000:]}"
    return out.stdout


def _runs(db_url: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The backfill's runs: day processed -> (state, {task_id: state:try}), from the DB."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as con:
        runs = con.execute(text("SELECT run_id, state, data_interval_start FROM dag_run "
                                "WHERE dag_id = :d AND run_type = 'backfill'"),
                           {"d": DAG_ID}).all()
        tis = con.execute(text("SELECT run_id, task_id, state, try_number FROM task_instance "
                               "WHERE dag_id = :d"), {"d": DAG_ID}).all()
    engine.dispose()
    return {str(start)[:10]: (s, {t: f"{ts}:{n}" for rid, t, ts, n in tis if rid == r})
            for r, s, start in runs}


@pytest.mark.slow
def test_when_a_real_scheduler_runs_a_backfill_and_a_broken_day_then_states_are_true(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metadata_db: str) -> None:
    from pipeline.demo.generate import generate

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    data = tmp_path / "data"
    generate(data, start=date(2026, 11, 1), days=4, users=120, seed=11)
    (data / "raw" / "events" / f"date={BROKEN}" / "events.jsonl").unlink()
    deployment = write_deployment(tmp_path, {"personalization": config},
                                  retry_delay_minutes=0.05, max_retry_delay_minutes=0.2)
    home = tmp_path / "airflow_home"
    db_url = metadata_db or f"sqlite:///{home / 'airflow.db'}"
    port = _free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
           # psycopg 3 serves Airflow's async engine too (its default asks for asyncpg)
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": db_url.replace(
               "sqlite://", "sqlite+aiosqlite://"),
           "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4",
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-jwt-secret-0123456789abcdef",
           "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
           "PRIVACY_PIPELINE_DEPLOYMENT": str(deployment)}
    started = time.monotonic()
    _airflow(env, "db", "migrate")
    _airflow(env, "pools", "set", "privacy_pipeline_heavy", "2", "heavy stages")
    _airflow(env, "dags", "reserialize")
    _airflow(env, "dags", "unpause", DAG_ID)
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("api", "scheduler")}
    procs = [subprocess.Popen([sys.executable, "-m", "airflow", *cmd], env=env, cwd=ROOT,
                              stdout=logs[name], stderr=subprocess.STDOUT,
                              start_new_session=True)
             for name, cmd in (("api", ["api-server", "--port", str(port)]),
                               ("scheduler", ["scheduler"]))]
    try:
        _airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL[0],
                 "--to-date", BROKEN)  # Airflow's default: up to 10 runs at once
        while time.monotonic() - started < WAIT_S:
            runs = _runs(db_url)
            if len(runs) == 4 and all(s in ("success", "failed") for s, _ in runs.values()):
                break
            time.sleep(5)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    runs = _runs(db_url)
    print(f"\nreal scheduler ({'Postgres' if metadata_db else 'SQLite'}): backfill of 3 good "
          f"days + 1 broken day in {elapsed:.0f} s: "
          + json.dumps({d: s for d, (s, _) in sorted(runs.items())}))
    assert sorted(runs) == [*BACKFILL, BROKEN]
    broken = runs.pop(BROKEN)
    assert broken[0] == "failed", broken
    assert broken[1]["check_input"] == "failed:1"  # deterministic: not retried
    assert broken[1]["gate"].startswith("failed") and broken[1]["report"].startswith("success")
    assert sorted(s for s, _ in runs.values()) == ["success"] * 3, runs
    for day in BACKFILL:
        assert (data / "published" / "personalization" / f"date={day}" / "part.parquet").is_file()
        assert json.loads((reports_of(data, day) / "manifest.json").read_text())["published"]
    assert not (data / "published" / "personalization" / f"date={BROKEN}").exists()
    html = (reports_of(data, BROKEN) / "report.html").read_text()
    assert "Stage check_input failed: MissingInputError" in html
