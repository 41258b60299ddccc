"""What a table stage does to the shards of its input, as a value an engine can run anywhere:
in this process one shard after another (`run_shard` in a loop, the default), or one task per
shard on a Dask cluster (`pipeline.distributed`). Same code either way, so both give the same
rows. Task stages hand their own per-piece work to the same engines with `run_map` (ingest's
byte ranges, validation's shards, the DP release's bounding).

Time spent in maps is counted (`map_seconds`): on a cluster it is the workers' share of a
stage, and what is left is the stage's own process (the scheduler's side).

A `ShardWork` holds no key and no open resource: `open(ctx)` builds the per-shard function
where it runs, from that process's own context (its key from its own secret store, its own
spaCy model), so what is shipped to a worker is config and plan, never a secret.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from pipeline.core import progress
from pipeline.core.fs import DataPath
from pipeline.core.records import StageStats
from pipeline.stages import Zone

if TYPE_CHECKING:
    from pipeline.core.context import RunContext

ShardFn = Callable[[pl.DataFrame], tuple[pl.DataFrame, StageStats]]
T = TypeVar("T")
R = TypeVar("R")
_mapped = [0.0]  # seconds this process has spent waiting on or running maps


def _ready(fn: ShardFn, _ctx: RunContext) -> AbstractContextManager[ShardFn]:
    return nullcontext(fn)


@dataclass(frozen=True)
class ShardWork:
    """`open(ctx)` gives the function each shard goes through, where the shards run (once
    for all of them in the embedded engine, once per task on a cluster); `finish` makes the
    stage's stats of the shards'.
    Without `gather`, each shard's output is written as the same shard of the output zone;
    with it, the outputs come back (they must be small: counts) and `gather` makes the one
    table published as the first shard, the others empty."""

    open: Callable[[RunContext], AbstractContextManager[ShardFn]]
    finish: Callable[[list[StageStats]], StageStats] = StageStats.merged
    gather: Callable[[list[pl.DataFrame], list[StageStats]],
                     tuple[pl.DataFrame, StageStats]] | None = None

    @classmethod
    def each(cls, fn: ShardFn, **kwargs: object) -> ShardWork:
        """Work that needs nothing from the context: `fn` itself on every shard."""
        return cls(open=partial(_ready, fn), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ShardJob:
    """Where a stage's shard `index` of `n` comes from and goes to (picklable)."""

    source: Zone
    sink: Zone
    day: date
    part: DataPath
    index: int
    n: int


def run_shard(ctx: RunContext, fn: ShardFn, job: ShardJob, *, keep: bool
              ) -> tuple[StageStats, pl.DataFrame | None]:
    """Read one shard, put it through `fn`, and write the result as the same shard of the
    sink (or return it, when `keep`: a gathering stage's small output)."""
    out, stats = fn(ctx.storage.read_part(job.source, job.day, job.part))
    progress.advance(rows=stats.rows_in)
    if keep:
        return stats, out
    ctx.storage.write_file(job.sink, job.day,
                           ctx.storage.shard_file(job.sink, job.day, job.index, job.n), out)
    return stats, None


def run_embedded(ctx: RunContext, work: ShardWork, jobs: list[ShardJob]
                 ) -> list[tuple[StageStats, pl.DataFrame | None]]:
    """Every shard in this process, one after another: one shard in memory at a time."""
    started = time.perf_counter()
    try:
        with work.open(ctx) as fn:
            return [run_shard(ctx, fn, job, keep=work.gather is not None) for job in jobs]
    finally:
        _mapped[0] += time.perf_counter() - started


def first_of(table: pl.DataFrame, n: int) -> Iterator[pl.DataFrame]:
    """`table` as the first of `n` shards, the rest empty."""
    yield table
    for _ in range(n - 1):
        yield table.clear()


def map_seconds() -> float:
    """Seconds this process has spent in `run_map` (and table stages' shard maps) so far."""
    return _mapped[0]


def run_map(ctx: RunContext, fn: Callable[[RunContext, T], R], items: Sequence[T], *,
            rows: Callable[[R], int] | None = None) -> list[R]:
    """`fn(ctx, item)` for every item, results in item order: here one after another
    (`scale.engine: embedded`), or one Dask task each, where `ctx` is the worker's own
    context (config from here, key from its own secret store). `fn` and the items must be
    picklable and hold no secret; `rows` says how many rows a result read (progress)."""
    started = time.perf_counter()
    try:
        if ctx.cfg.scale.engine == "dask":  # dask: imported only when configured (the
            # engine module builds on this one, so it is looked up, not imported at the top)
            engine = importlib.import_module("pipeline.distributed")
            return engine.map_distributed(ctx, fn, items, rows=rows)  # type: ignore[no-any-return]
        out = []
        for item in items:
            out.append(fn(ctx, item))
            progress.advance(rows=rows(out[-1]) if rows else 0)
        return out
    finally:
        _mapped[0] += time.perf_counter() - started


def shard_task(work: ShardWork, ctx: RunContext, job: ShardJob
               ) -> tuple[StageStats, pl.DataFrame | None]:
    """One shard of a table stage, where it runs (a Dask task)."""
    with work.open(ctx) as fn:
        return run_shard(ctx, fn, job, keep=work.gather is not None)


def timed_map(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, with its time counted in `map_seconds` (an engine's own shard loop)."""
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _mapped[0] += time.perf_counter() - started
    return timed
