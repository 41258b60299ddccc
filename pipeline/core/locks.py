"""The data root's lock, and one per run date.

The data root's lock: daily stages share it, maintenance stages (erasure, retention) take
it alone, so a purge or an erasure never rewrites a partition a running stage is reading or
writing, whichever DAG or process started them.

By default (`scale.lock: local`) an `fcntl` lock on a file under the data root: it holds across
processes on one host or on a shared POSIX filesystem (NFS with lockd), which is what the
LocalExecutor and the CLI need. It is released by the kernel when its holder dies, so a killed
task never leaves it held.

With `scale.lock: postgres` the same locks are Postgres advisory locks on the ledger's database
(`budget.ledger_dsn_env`), named by the data root: they hold across machines (an `s3://` root
worked on by tasks on several hosts), and Postgres releases a lock when its holder's session
ends, so a killed task never leaves it held either.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


class Locks(Protocol):
    """The data root's lock and the run dates' locks, on one backend."""

    def data_root(self, *, exclusive: bool) -> AbstractContextManager[None]: ...

    def run_date(self, purpose: str, day: object, *, on_wait: Callable[[], None]
                 ) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class LocalLocks:
    """`fcntl` locks under `root` (one host, or a shared POSIX filesystem)."""

    root: Path

    def data_root(self, *, exclusive: bool) -> AbstractContextManager[None]:
        return data_root_lock(self.root, exclusive=exclusive)

    def run_date(self, purpose: str, day: object, *, on_wait: Callable[[], None]
                 ) -> AbstractContextManager[None]:
        return run_date_lock(self.root, purpose, day, on_wait=on_wait)


@dataclass(frozen=True)
class PostgresLocks:
    """Advisory locks in the Postgres database at `dsn`, named by `namespace` (the data
    root's URL): every machine that works on the root takes the same locks."""

    dsn: str
    namespace: str

    def _key(self, name: str) -> int:
        digest = hashlib.sha256(f"privacy-pipeline:{self.namespace}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def _held(self, name: str, *, shared: bool, on_wait: Callable[[], None] | None
              ) -> Iterator[None]:
        import psycopg

        kind = "_shared" if shared else ""
        key = self._key(name)
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            got = conn.execute(f"SELECT pg_try_advisory_lock{kind}(%s)", (key,)).fetchone()
            if not (got and got[0]):
                if on_wait is not None:
                    on_wait()
                conn.execute(f"SELECT pg_advisory_lock{kind}(%s)", (key,))
            try:
                yield
            finally:  # also released when the session ends (a killed holder)
                conn.execute(f"SELECT pg_advisory_unlock{kind}(%s)", (key,))

    def data_root(self, *, exclusive: bool) -> AbstractContextManager[None]:
        return self._held("data_root", shared=not exclusive, on_wait=None)

    def run_date(self, purpose: str, day: object, *, on_wait: Callable[[], None]
                 ) -> AbstractContextManager[None]:
        return self._held(f"run-{purpose}-{day}", shared=False, on_wait=on_wait)
