"""`scale.lock: object_store`: lease objects under an object-store root, created with a
conditional write, so two machines (two processes here, against a real S3 API server) take
turns; a dead holder's lease expires and is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.fs import data_path
from pipeline.core.locks import ObjectStoreLocks
from tests.conftest import ROOT

HOLD = """
import sys, time
from pipeline.core.fs import data_path
from pipeline.core.locks import ObjectStoreLocks
locks = ObjectStoreLocks(data_path("s3://lake/data", {"client_kwargs": {"endpoint_url":
                                   sys.argv[1]}}), poll_s=0.2)
held = (locks.run_date("p", "2026-11-01", on_wait=lambda: None) if sys.argv[2] == "date"
        else locks.data_root(exclusive=sys.argv[2] == "x"))
with held:
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _locks(s3: str, **kw: float) -> ObjectStoreLocks:
    return ObjectStoreLocks(data_path("s3://lake/data", {"client_kwargs": {"endpoint_url": s3}}),
                            poll_s=0.2, **kw)


def _hold(s3: str, what: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, s3, what, str(seconds)], cwd=ROOT,
                            env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_when_another_process_holds_a_run_date_lease_then_this_one_waits(s3: str) -> None:
    other = _hold(s3, "date", 2.0)
    waited: list[bool] = []
    start = time.monotonic()
    with _locks(s3).run_date("p", "2026-11-01", on_wait=lambda: waited.append(True)):
        assert time.monotonic() - start > 1.0
    assert waited == [True] and other.wait() == 0
    with _locks(s3).run_date("p", "2026-11-02", on_wait=lambda: waited.append(True)):
        pass  # another date: no wait
    assert waited == [True]


def test_when_daily_stages_hold_the_root_then_maintenance_waits_and_vice_versa(
        s3: str) -> None:
    daily = _hold(s3, "s", 2.0)
    with _locks(s3).data_root(exclusive=False):  # other daily stages go on meanwhile
        pass
    start = time.monotonic()
    with _locks(s3).data_root(exclusive=True):
        assert time.monotonic() - start > 1.0
    assert daily.wait() == 0
    maintenance = _hold(s3, "x", 2.0)
    start = time.monotonic()
    with _locks(s3).data_root(exclusive=False):
        assert time.monotonic() - start > 1.0
    assert maintenance.wait() == 0


def test_when_a_holder_died_then_its_lease_expires_and_is_taken_over(s3: str,
                                                                      tmp_path: Path) -> None:
    locks = _locks(s3, ttl_s=1.0)
    lease = f"{locks._dir('run-p-d')}/exclusive.lease"
    locks.root.fs.pipe_file(lease, json.dumps({"holder": "dead", "expires": time.time() + 0.5}
                                              ).encode())
    start = time.monotonic()
    with locks.run_date("p", "d", on_wait=lambda: None):
        assert json.loads(locks.root.fs.cat_file(lease))["holder"] != "dead"
    assert time.monotonic() - start < 5
    assert not locks.root.fs.exists(lease)  # released


def test_when_a_lease_is_not_one_we_wrote_then_it_expires_a_ttl_after_it_was_written(
        s3: str) -> None:
    locks = _locks(s3, ttl_s=2.0)  # S3 keeps whole seconds: a TTL of 2 s stays live at once
    lease = f"{locks._dir('run-p-e')}/exclusive.lease"
    locks.root.fs.pipe_file(lease, b"not json")
    assert locks._live(lease)
    time.sleep(3.2)
    assert not locks._live(lease)
    with locks.run_date("p", "e", on_wait=lambda: None):
        pass
