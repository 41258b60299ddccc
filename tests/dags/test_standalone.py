"""The README's local-Airflow steps, run as written: `python3 tasks.py airflow` starts
`airflow standalone` (every component healthy within its start-up time), then the next lines
unpause the daily DAG and trigger the demo's first day, which reaches `success` and publishes.

Only the settings a second checkout needs differ (its own AIRFLOW_HOME, port, data root and test
key): `tasks.py` lets what the caller exports win.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_KEY_TEXT, reports_of, write_config
from tests.dags.test_dag_integrity import write_deployment
from tests.dags.test_scheduler import _free_port

DAG_ID = "privacy_personalization_daily"
STARTUP_S = 240
RUN_S = 600


def readme_airflow_steps() -> list[str]:
    """The shell lines of the README block marked `<!-- airflow-steps -->`, comments off."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- airflow-steps -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README lost its airflow-steps block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health",
                                    timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return {}


def _healthy(h: dict) -> bool:
    return bool(h) and all(h.get(c, {}).get("status") == "healthy"
                           for c in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def _query(db: Path, sql: str, *args: str) -> list[tuple]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=10) as con:
            return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # the schema is still being made
        return []


@pytest.mark.slow
def test_when_the_readme_airflow_steps_run_then_standalone_is_healthy_and_a_run_succeeds(
        tmp_path: Path) -> None:
    from pipeline.demo.generate import generate

    steps = readme_airflow_steps()
    assert steps[0] == "python3 tasks.py airflow"
    config = write_config(tmp_path)
    generate(tmp_path / "data", start=date(2026, 11, 1), days=1, users=150, seed=5)
    home, port = tmp_path / "airflow_home", _free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__CORE__PARALLELISM": "4",
           "PRIVACY_PIPELINE_TEST_KEY": TEST_KEY_TEXT,
           "PRIVACY_PIPELINE_DEPLOYMENT": str(write_deployment(
               tmp_path, {"personalization": config}))}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)  # as a new user's shell: tasks.py sets it
    log = (tmp_path / "standalone.log").open("w")
    standalone = subprocess.Popen(["bash", "-c", steps[0]], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    db = home / "airflow.db"
    try:
        started = time.monotonic()
        while not _healthy(health := _health(port)):
            assert standalone.poll() is None, (tmp_path / "standalone.log").read_text()[-3000:]
            assert time.monotonic() - started < STARTUP_S, f"not healthy: {health}"
            time.sleep(3)
        up_s = time.monotonic() - started
        while not _query(db, "SELECT 1 FROM dag WHERE dag_id = ?", DAG_ID):
            assert time.monotonic() - started < STARTUP_S, "the DAG was never parsed"
            time.sleep(2)
        for line in steps[1:]:
            done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        state = None
        while time.monotonic() - started < STARTUP_S + RUN_S:
            rows = _query(db, "SELECT state FROM dag_run WHERE dag_id = ? AND run_type = "
                          "'manual'", DAG_ID)
            if rows and (state := rows[0][0]) in ("success", "failed"):
                break
            time.sleep(5)
    finally:
        os.killpg(standalone.pid, signal.SIGINT)
        try:
            standalone.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(standalone.pid, signal.SIGKILL)
    print(f"\nairflow standalone healthy in {up_s:.0f} s; the triggered run ended {state} "
          f"after {time.monotonic() - started:.0f} s in all")
    assert state == "success"
    rendered = _query(db, "SELECT rendered_fields FROM rendered_task_instance_fields WHERE "
                      "dag_id = ? AND task_id = 'ingest'", DAG_ID)
    assert rendered and "2026-11-01" in rendered[0][0]  # the processed day, shown in the UI
    manifest = json.loads((reports_of(tmp_path / "data", "2026-11-01") / "manifest.json"
                           ).read_text())
    assert manifest["published"]
