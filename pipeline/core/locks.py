"""The data root's lock, and one per run date.

The data root's lock: daily stages share it, maintenance stages (erasure, retention) take
it alone, so a purge or an erasure never rewrites a partition a running stage is reading or
writing, whichever DAG or process started them.

An `fcntl` lock on a file under the data root: it holds across processes on one host or on a
shared POSIX filesystem (NFS with lockd), which is what the LocalExecutor and the CLI need. It
is released by the kernel when its holder dies, so a killed task never leaves it held.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".locks/data_root.lock"


@contextmanager
def data_root_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the data root's lock (shared or exclusive) for the duration of the block."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def run_date_lock(root: Path, purpose: str, day: object, *, on_wait: Callable[[], None]
                  ) -> Iterator[None]:
    """Hold the lock of one purpose's run date: two runs of the same date (a CLI run beside a
    DAG task, a retried trigger) take turns instead of rewriting each other's partitions,
    validation project and records mid-way. `on_wait` is called once if it is held."""
    path = root / ".locks" / f"run-{purpose}-{day}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
