"""The table stages on a Dask cluster (`scale.engine: dask`): one task per shard.

Why Dask: the stages are Polars functions over one shard each, and Dask runs Python functions
as tasks with nothing to translate (Spark would need the shards as its own DataFrames, or
Python UDFs through Arrow; Ray's data layer is built for ML ingest). `distributed` is
maintained with Dask by its core team, runs as a few processes on one machine
(`LocalCluster`) or on Kubernetes, YARN, SLURM or cloud VMs unchanged, and is a pure-Python
install.

What runs where: every per-shard or per-range piece of work runs as a task (the table stages'
shards, ingest's byte ranges, each shard's validation suite, the DP release's bounding); the
stage's own process (the Airflow task, or the CLI) plans, merges what the tasks return (small:
counts, bounded aggregates) and does what needs the whole day at once: the k-anonymity plan,
the DP measurement, the ledger. Every task reads its input from the data root and writes its
output there itself, so the workers share nothing but storage (the local disk on one
machine). A task rebuilds its context from the config and loads the key from its own secret
store: no key is sent over the wire, and a worker holding another key (or none) stops the
stage rather than write what the rest of the day cannot read.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from pipeline.config import PipelineConfig
from pipeline.core import progress
from pipeline.core.context import RunContext
from pipeline.core.errors import KeyUnavailableError, safe_error
from pipeline.core.records import StageStats
from pipeline.core.shardwork import ShardJob, ShardWork, run_map, shard_task
from pipeline.stages import STAGES

T = TypeVar("T")
R = TypeVar("R")

if TYPE_CHECKING:
    from distributed import Client

_clients: dict[str, Client] = {}
_contexts: dict[tuple[str, date | None], RunContext] = {}


def client_for(ctx: RunContext) -> Client:
    """A client of `scale.dask_scheduler`, or of a cluster of `scale.dask_workers` local
    processes, kept for the life of this process. A local cluster is started anew when the
    active key or the environment changes: its workers keep the environment they started
    with (the key's variable, the object store's credentials)."""
    from distributed import Client, LocalCluster

    scale = ctx.cfg.scale
    env = hashlib.sha256(repr(sorted(os.environ.items())).encode()).hexdigest()
    where = scale.dask_scheduler or (f"local:{scale.dask_workers}:{ctx.key.key_id}:"
                                     f"{ctx.key.fingerprint()}:{env}")
    client = _clients.get(where)
    if client is not None and client.status == "running":
        return client
    if scale.dask_scheduler:
        client = Client(scale.dask_scheduler)
    else:
        for old in [k for k in _clients if k.startswith("local:")]:  # one at a time
            _close(_clients.pop(old))
        cluster = LocalCluster(n_workers=scale.dask_workers, threads_per_worker=1,
                               processes=True, dashboard_address=":0")
        client = Client(cluster)
    _clients[where] = client
    return client


def _close(client: Client) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


@atexit.register
def close_clients() -> None:
    """Close every client (and local cluster) this process started."""
    while _clients:
        _close(_clients.popitem()[1])


def run_distributed(ctx: RunContext, work: ShardWork, jobs: list[ShardJob]
                    ) -> list[tuple[StageStats, pl.DataFrame | None]]:
    """Every shard as a task on the cluster; results (stats, and a gathering stage's small
    tables) in shard order."""
    return run_map(ctx, partial(shard_task, work), jobs, rows=lambda r: r[0].rows_in)


def map_distributed(ctx: RunContext, fn: Callable[[RunContext, T], R], items: Sequence[T], *,
                    rows: Callable[[R], int] | None = None) -> list[R]:
    """`fn(worker's context, item)` as one task per item on the cluster; results in item
    order (see `pipeline.core.shardwork.run_map`)."""
    from distributed import as_completed

    if not items:
        return []
    client = client_for(ctx)
    [shared] = client.scatter([fn], broadcast=True, hash=False)
    futures = client.map(_task, list(items), fn=shared, cfg=ctx.cfg, run_date=ctx.run_date,
                         run_key=(ctx.key.key_id, ctx.key.fingerprint()),
                         stage=ctx.stage.name if ctx.stage else None, pure=False)
    for _, result in as_completed(futures, with_results=True):
        progress.advance(rows=rows(result) if rows else 0)  # for the driver's bar
    return list(client.gather(futures))


def _task(item: Any, *, fn: Callable[[RunContext, Any], Any], cfg: PipelineConfig,
          run_date: date | None, run_key: tuple[str, str], stage: str | None) -> Any:
    """One item, on a worker, held to its stage's row like the stage's own process. Errors
    come back as the pipeline's safe ones: a library's message can quote data, and Dask logs
    what a task raised."""
    try:
        ctx = _context(cfg, run_date)
        if stage is not None:
            ctx = ctx.for_stage(STAGES[stage])
        if (ctx.key.key_id, ctx.key.fingerprint()) != run_key:
            raise KeyUnavailableError(
                f"this Dask worker's active key ({ctx.key.key_id}) is not the run's "
                f"({run_key[0]}): every worker must load the same key from its secret store")
        return fn(ctx, item)
    except Exception as exc:  # noqa: BLE001 - re-raised as a safe PipelineError
        raise safe_error(exc) from None


def _context(cfg: PipelineConfig, run_date: date | None) -> RunContext:
    """This worker's context for a run date, built once: config from the driver, the key from
    this machine's secret store."""
    where = (hashlib.sha256(cfg.model_dump_json().encode()).hexdigest(), run_date)
    if where not in _contexts:
        _contexts[where] = RunContext(cfg, run_date=run_date, own_workers=False)
    return _contexts[where]

