"""Maintenance (erasure, retention) and daily stages never run inside each other: the data
root's lock is shared by daily stages and exclusive for maintenance, across processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.locks import data_root_lock

HOLD = ("import sys, time; from pathlib import Path; from pipeline.core.locks import "
        "data_root_lock\nwith data_root_lock(Path(sys.argv[1]), exclusive=sys.argv[2] == 'x'):"
        "\n    print('held', flush=True); time.sleep(float(sys.argv[3]))")


def _hold(root: Path, mode: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), mode, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_when_a_daily_stage_holds_the_root_then_maintenance_waits_for_it(tmp_path: Path) -> None:
    daily = _hold(tmp_path, "s", 1.5)  # another process's stage, mid-way
    with data_root_lock(tmp_path, exclusive=False):  # other daily stages go on meanwhile
        pass
    start = time.monotonic()
    with data_root_lock(tmp_path, exclusive=True):  # erasure waits for the stage to finish
        assert time.monotonic() - start > 1.0
    daily.wait()


def test_when_maintenance_holds_the_root_then_daily_stages_wait(tmp_path: Path) -> None:
    maintenance = _hold(tmp_path, "x", 1.5)
    start = time.monotonic()
    with data_root_lock(tmp_path, exclusive=False):
        assert time.monotonic() - start > 1.0
    maintenance.wait()
