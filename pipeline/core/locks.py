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

With `scale.lock: object_store` (a data root in an object store and no database) they are lease
objects under `<root>/.locks/`, created with a conditional write (S3's `If-None-Match: *`: of two
machines creating the same lease, one fails) and renewed while held; a lease its holder stopped
renewing (a killed machine) expires after `LEASE_TTL_S` and may then be taken over.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


LEASE_TTL_S = 60.0  # a lease not renewed for this long is a dead holder's
log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class ObjectStoreLocks:
    """Lease objects under `root/.locks/` (see the module docstring). An exclusive lock is one
    lease (`exclusive.lease`); a shared lock is one lease per holder (`shared-<id>.lease`),
    taken only while no exclusive lease is live, and an exclusive holder waits for the live
    shared leases to end, so maintenance and daily stages never overlap."""

    root: Any  # the data root (a UPath of an object store)
    ttl_s: float = LEASE_TTL_S
    poll_s: float = 1.0

    def _dir(self, name: str) -> str:
        return f"{self.root.path.rstrip('/')}/.locks/{name}"

    def _body(self, holder: str) -> bytes:
        return json.dumps({"holder": holder, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires": time.time() + self.ttl_s}).encode()

    def _live(self, path: str) -> bool:
        """Does a lease exist at `path` that has not expired?"""
        try:
            lease = json.loads(self.root.fs.cat_file(path))
        except FileNotFoundError:
            return False
        except ValueError:  # not a lease we wrote: live for a TTL from when it was written
            try:
                written = self.root.fs.info(path).get("LastModified")
            except FileNotFoundError:
                return False
            return written is None or written.timestamp() + self.ttl_s > time.time()
        return float(lease.get("expires", 0)) > time.time()

    def _create(self, path: str, holder: str) -> bool:
        """Create the lease if no one holds it (a conditional write); take over one that
        expired."""
        fs = self.root.fs
        try:
            fs.pipe_file(path, self._body(holder), mode="create")
            return True
        except FileExistsError:
            if self._live(path):
                return False
            fs.rm(path)  # a dead holder's: then the same race as a fresh lease
            try:
                fs.pipe_file(path, self._body(holder), mode="create")
                return True
            except FileExistsError:
                return False

    @contextmanager
    def _renewed(self, path: str, holder: str) -> Iterator[None]:
        """Renew the lease every third of its TTL until the block ends, then remove it."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    if json.loads(self.root.fs.cat_file(path)).get("holder") != holder:
                        log.error("lock lease %s was taken over: this holder stopped "
                                  "renewing it for longer than %.0f s", path, self.ttl_s)
                        return
                    self.root.fs.pipe_file(path, self._body(holder))
                except Exception as exc:  # noqa: BLE001 - logged; the next try may work
                    log.warning("could not renew lock lease %s: %s", path, type(exc).__name__)

        thread = threading.Thread(target=renew, daemon=True, name="lease-renewal")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with suppress(FileNotFoundError):
                self.root.fs.rm(path)

    def _shared_live(self, name: str) -> bool:
        try:
            paths = self.root.fs.glob(f"{self._dir(name)}/shared-*.lease")
        except FileNotFoundError:
            return False
        return any(self._live(p) for p in paths)

    @contextmanager
    def _exclusive(self, name: str, on_wait: Callable[[], None] | None) -> Iterator[None]:
        holder, path = uuid.uuid4().hex, f"{self._dir(name)}/exclusive.lease"
        waited = False
        while not self._create(path, holder):
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            time.sleep(self.poll_s)
        with self._renewed(path, holder):
            while self._shared_live(name):  # daily stages already in: let them finish
                time.sleep(self.poll_s)
            yield

    @contextmanager
    def _shared(self, name: str) -> Iterator[None]:
        holder = uuid.uuid4().hex
        path, exclusive = (f"{self._dir(name)}/shared-{holder}.lease",
                           f"{self._dir(name)}/exclusive.lease")
        while True:
            while self._live(exclusive):
                time.sleep(self.poll_s)
            self.root.fs.pipe_file(path, self._body(holder))
            if not self._live(exclusive):
                break
            self.root.fs.rm(path)  # maintenance came first: step back and wait
        with self._renewed(path, holder):
            yield

    def data_root(self, *, exclusive: bool) -> AbstractContextManager[None]:
        return self._exclusive("data_root", None) if exclusive else self._shared("data_root")

    def run_date(self, purpose: str, day: object, *, on_wait: Callable[[], None]
                 ) -> AbstractContextManager[None]:
        return self._exclusive(f"run-{purpose}-{day}", on_wait)
