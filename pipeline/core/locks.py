"""The data root's lock: daily stages share it, maintenance stages (erasure, retention) take
it alone, so a purge or an erasure never rewrites a partition a running stage is reading or
writing, whichever DAG or process started them.

An `fcntl` lock on a file under the data root: it holds across processes on one host or on a
shared POSIX filesystem (NFS with lockd), which is what the LocalExecutor and the CLI need. It
is released by the kernel when its holder dies, so a killed task never leaves it held.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
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
