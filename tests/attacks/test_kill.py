"""kill -9 at points spread over a whole run (erase and retention first, features near the end),
then a rerun: the same published bytes as an uninterrupted run, exactly one DP release, and the
released features equal to the ledger's stored payload."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from pipeline.demo.generate import generate
from tests.conftest import ROOT, TEST_KEY_TEXT, write_config

DAY = "2026-11-01"
PUBLISHED = Path("published/personalization") / f"date={DAY}" / "part.parquet"


def _run(config: Path, env: dict[str, str], kill_after: float | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--config", str(config),
                             "run", "--date", DAY], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is not None:
        time.sleep(kill_after)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - started


@pytest.mark.slow
def test_when_a_run_is_killed_anywhere_then_a_rerun_gives_the_same_outputs(
        tmp_path: Path) -> None:
    env = {**os.environ, "PRIVACY_PIPELINE_TEST_KEY": TEST_KEY_TEXT}
    clean = tmp_path / "clean"
    generate(clean / "data", start=date.fromisoformat(DAY), users=150, seed=9)
    wall = _run(write_config(clean), env)
    expected = (clean / "data" / PUBLISHED).read_bytes()
    for i, share in enumerate((0.2, 0.45, 0.7, 0.9)):
        root = tmp_path / f"kill{i}"
        generate(root / "data", start=date.fromisoformat(DAY), users=150, seed=9)
        config = write_config(root)
        _run(config, env, kill_after=wall * share)
        _run(config, env)
        data = root / "data"
        assert (data / PUBLISHED).read_bytes() == expected, share
        with sqlite3.connect(data / "ledger" / "privacy_ledger.sqlite") as con:
            rows = con.execute("SELECT payload FROM privacy_releases").fetchall()
        assert len(rows) == 1, share
        features = data / "features" / "cohort_daily" / f"date={DAY}" / "part.parquet"
        assert features.read_bytes() == bytes(rows[0][0]), share
        assert not list(data.rglob(".purging-*"))
