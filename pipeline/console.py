"""What the command line shows while it works: a progress bar on a terminal, quiet otherwise.

Quiet by default: library logs (Presidio's recognizers and the rest; only warnings from Great
Expectations and Feast, whose INFO lines are per-batch chatter) go to the run's log file, and
standard error gets only the pipeline's warnings and errors; with `--verbose` it gets every
INFO line as well. On a terminal, each stage shows as a transient
bar (stage, shard i of n, rows per second, elapsed) drawn by rich; in a pipe or a CI log
nothing is drawn, so a run's output is its summary.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from pipeline.core import progress

# kept at WARNING even in the log file (their INFO lines are per-batch chatter), unless
# --verbose; every other library's INFO lines go to the file
NOISY = ("great_expectations", "feast", "urllib3", "numexpr")


def setup_logging(log_file: Path | None = None, *, verbose: bool = False) -> None:
    """INFO and up to `log_file` (when given); standard error gets warnings and errors from
    the pipeline (everything at INFO with `verbose`), never a library's chatter."""
    logging.captureWarnings(True)  # a library's warning goes to the file, not the screen
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        err.addFilter(lambda r: r.name.startswith("pipeline") or r.levelno >= logging.ERROR)
    handlers: list[logging.Handler] = [err]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


class ProgressBar:
    """A `pipeline.core.progress.Listener` drawing one transient bar per piece of work."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None
        self.rows = 0

    def started(self, what: str, total: int | None) -> None:
        self.rows = 0
        self.task = self.bar.add_task(what, total=total, rate="")

    def expect(self, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, total=total)

    def advanced(self, steps: int = 1, rows: int = 0) -> None:
        if self.task is None:
            return
        self.rows += rows
        self.bar.advance(self.task, steps)
        elapsed = self.bar.tasks[self._index()].elapsed or 0.0
        if self.rows and elapsed > 0:
            self.bar.update(self.task, rate=f"{self.rows:,} rows, {self.rows / elapsed:,.0f}/s")

    def finished(self, what: str, ok: bool) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None

    def _index(self) -> int:
        return next(i for i, t in enumerate(self.bar.tasks) if t.id == self.task)


@contextmanager
def progress_shown(console: Console | None = None) -> Iterator[None]:
    """Show the progress of what runs inside the block (only on a terminal)."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description:<14}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), console=console, transient=True)
    with bar, progress.listening(ProgressBar(bar)):
        yield
