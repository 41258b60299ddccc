"""The README's first command runs `privacy-pipeline demo`: it must work as typed. Here on a
small day, in a temporary data root with its own development key file, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_config

pytestmark = pytest.mark.slow


def test_when_the_demo_command_runs_then_it_publishes_and_monitors_both_days(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["keys"] = {"airflow_conn_id": None, "env_var": "DEMO_TEST_UNSET_KEY",
                   "file_env_var": "DEMO_TEST_UNSET_KEY_FILE", "file": str(tmp_path / "dev.key")}
    config.write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--config", str(config),
                           "demo", "--users", "400"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # quiet: one line per step, then the summary as the last screen; library logs in a file
    lines = done.stdout.splitlines()
    assert len(lines) <= 40, done.stdout
    assert "Loaded recognizer" not in done.stdout + done.stderr
    assert done.stderr.count("\n") <= 2, done.stderr[-3000:]
    steps = [n for n, line in enumerate(lines) if line.startswith("2026-11-0")]
    summary = lines.index("== 2026-11-02 (personalization): published")
    assert len(steps) == 2 and steps[-1] < summary
    assert lines[-1].strip().startswith("online: ")
    assert (tmp_path / "data" / "logs" / "date=2026-11-02" / "run.log").stat().st_size > 0
    runs = tmp_path / "data" / "runs" / "personalization"
    for day in ("2026-11-01", "2026-11-02"):
        assert (tmp_path / "data" / "reports" / "personalization" / f"date={day}" /
                "report.html").is_file()
    monitor = json.loads((runs / "date=2026-11-02" / "monitor.json").read_text())
    assert monitor["features"]["previous_date"] == "2026-11-01"
    assert monitor["columns_against"] == "2026-11-01"
