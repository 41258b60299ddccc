"""Progress of long work (a run's stages and shards, generating data), told to one listener.

The engine says what it is doing; whoever started the work decides how to show it: the CLI
draws a progress bar on a terminal (`pipeline.console`), Airflow tasks and tests install
nothing and pay one `None` check per shard. Counts only: a listener never sees a data value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Listener(Protocol):
    def started(self, what: str, total: int | None) -> None:
        """Work `what` begins: `total` steps (shards, users), or None when unknown."""

    def expect(self, total: int) -> None:
        """The current work turns out to have `total` steps."""

    def advanced(self, steps: int = 1, rows: int = 0) -> None:
        """`steps` more of the current work are done, having read `rows` rows."""

    def finished(self, what: str, ok: bool) -> None:
        """Work `what` ended (`ok`: without an error)."""


_listener: Listener | None = None


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Tell `listener` of everything started inside the block."""
    global _listener
    before, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = before


@contextmanager
def step(what: str, total: int | None = None) -> Iterator[None]:
    """One piece of work, from start to end (an error ends it not ok, and goes on up)."""
    if _listener is not None:
        _listener.started(what, total)
    ok = False
    try:
        yield
        ok = True
    finally:
        if _listener is not None:
            _listener.finished(what, ok)


def expect(total: int) -> None:
    """The current work has `total` steps (known once it has begun: a day's shards)."""
    if _listener is not None:
        _listener.expect(total)


def advance(steps: int = 1, rows: int = 0) -> None:
    """`steps` of the current work done (a shard, a batch of users)."""
    if _listener is not None:
        _listener.advanced(steps, rows)
