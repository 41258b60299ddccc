"""The engine: run the stages of `pipeline.stages.STAGES` for one date, one at a time (what an
Airflow task calls) or all in order (the CLI), then `gate` the run on how every stage ended.

A table stage's function in `pipeline.steps` says what to do to each shard of its input
(`ShardWork`); the shards run one after another in this process (`scale.engine: embedded`) or
as tasks on a Dask cluster (`dask`, see `pipeline.distributed`), each written to the output
zone as the same shard, with the row accounting over all; a task stage does its own I/O. Only
paths cross stage boundaries. Rerunning a stage for a date overwrites its partition; the DP
stage returns the ledger's stored release instead of drawing new noise.

Every stage's outcome is recorded under the run's id (`running` first, so a killed stage shows)
and an unexpected exception leaves only its type and frames: library messages can quote data.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import cast

from pipeline import steps
from pipeline.config import load_config
from pipeline.core import progress
from pipeline.core.context import RunContext, parse_day
from pipeline.core.errors import (
    ConfigError,
    PipelineError,
    RunFailedError,
    safe_error,
)
from pipeline.core.fs import DataPath
from pipeline.core.gates import require_validated
from pipeline.core.records import MonitorRecord, PublishRecord, RekeyRecord, StageOutcome
from pipeline.core.shardwork import ShardJob, ShardWork, first_of, map_seconds, run_embedded
from pipeline.core.storage import Shards
from pipeline.stages import DAILY, KEYED, STAGES, Kind, Stage

log = logging.getLogger("pipeline")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def execute(ctx: RunContext, name: str, day: date) -> str:
    """Run one declared stage for `day` in `ctx` and record how it ended; returns the path
    it wrote. Raises a PipelineError whatever went wrong (see `safe_error`)."""
    records = ctx.records(day)
    outcome = StageOutcome(stage=name, run_id=ctx.run_id, status="running", started_at=_now())
    records.save_outcome(outcome)
    stage = STAGES[name]
    mapped = map_seconds()
    try:
        with progress.step(name), ctx.locks.data_root(exclusive=stage.maintenance):
            staged = ctx.for_stage(stage)  # held to the stage's row (pipeline.core.guard)
            if stage.gated:  # the engine's check, not the stage's
                require_validated(staged, day)
            written = _execute(staged, stage, day)
    except Exception as exc:  # noqa: BLE001 - recorded, then raised as a safe PipelineError
        safe = safe_error(exc)
        records.save_outcome(outcome.model_copy(update={
            "status": "failed", "finished_at": _now(), "error": type(exc).__name__,
            "message": str(safe), "retryable": safe.retryable}))
        if safe is exc:
            raise
        raise safe from None
    records.save_outcome(outcome.model_copy(update={
        "status": "succeeded", "finished_at": _now(),
        "mapped_s": round(map_seconds() - mapped, 3)}))
    return written


def _execute(ctx: RunContext, stage: Stage, day: date) -> str:
    target = getattr(steps, stage.target)
    if stage.kind is Kind.TASK:
        return str(target(ctx, day))
    source = ctx.zone(cast(str, stage.source), "read")
    sink = ctx.zone(cast(str, stage.sink), "write")
    shards = Shards(ctx.storage, source, day)
    work: ShardWork = target(ctx, day, shards)
    n = len(shards)
    progress.expect(n)
    jobs = [ShardJob(source, sink, day, part, i, n) for i, part in enumerate(shards.parts)]
    if ctx.cfg.scale.engine == "dask":
        from pipeline.distributed import run_distributed  # dask: only when configured

        done = run_distributed(ctx, work, jobs)
    else:
        done = run_embedded(ctx, work, jobs)
    parts = [s for s, _ in done]
    if work.gather is None:
        stats = work.finish(parts)
        written = ctx.storage.commit_shards(sink, day, n)
    else:
        table, stats = work.gather([t for _, t in done if t is not None], parts)
        written = ctx.storage.write_shards(sink, day, first_of(table, n), n)
    stats.check_balanced()
    ctx.records(day).save_stats(stats)
    log.info("%s %s: rows in %d, out %d, dropped %s, quarantined %s", day, stats.stage,
             stats.rows_in, stats.rows_out, stats.dropped or "{}", stats.quarantined or "{}")
    return str(written)


def _context(day: str | date, config_path: str | Path, run_id: str | None = None, *,
             accept_low_volume: bool = False) -> tuple[RunContext, date]:
    day = parse_day(day) if isinstance(day, str) else day
    ctx = RunContext(load_config(config_path), run_date=day,
                     accept_low_volume=accept_low_volume)
    if run_id is not None:
        ctx.run_id = run_id
    return ctx, day


def run_stage(stage: str, day: str | date, config_path: str | Path,
              run_id: str | None = None, *, accept_low_volume: bool = False) -> str:
    """Run one stage for one date; what a DAG task calls. Returns the path it wrote.
    `accept_low_volume`: the operator accepts a small day (see `GuardrailsConfig`)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    ctx, day = _context(day, config_path, run_id, accept_low_volume=accept_low_volume)
    with _date_lock(ctx, day):
        return execute(ctx, stage, day)


def run_all(day: str | date, config_path: str | Path, *, accept_low_volume: bool = False
            ) -> tuple[RunContext, bool]:
    """Every stage in order, as the DAG runs them: after a failure (a failed validation
    included) only the `always` stages run, so the report still says why. Then the gate.
    Returns (context, published?): published only if the gate passed."""
    ctx, day = _context(day, config_path, accept_low_volume=accept_low_volume)
    _ = ctx.key  # no key: stop before touching any data
    failed = False
    with _date_lock(ctx, day):
        for stage in STAGES.values():
            if failed and not stage.always:
                continue
            try:
                execute(ctx, stage.name, day)
            except PipelineError as exc:
                log.error("%s %s failed: %s", day, stage.name, exc)
                failed = True
        try:
            gate(ctx, day)
        except RunFailedError as exc:
            log.error("%s", exc)
            return ctx, False
    return ctx, True


def _date_lock(ctx: RunContext, day: date):  # noqa: ANN202 - a context manager
    """One run of a purpose's date at a time (see `run_date_lock`)."""
    return ctx.locks.run_date(ctx.cfg.purpose, day, on_wait=lambda: log.warning(
        "%s (%s): another run of this date is in progress; waiting for it", day,
        ctx.cfg.purpose))


def gate(ctx: RunContext, day: date, stages: tuple[str, ...] = tuple(STAGES)) -> None:
    """The run's verdict: every one of `stages` succeeded in this run, or RunFailedError
    naming the stages that failed (with their reasons) and those that never ran."""
    outcomes = {name: o for name, o in ctx.records(day).outcomes().items()
                if o.run_id == ctx.run_id and name in stages}
    failed = [f"{n} ({o.error}: {o.message})" if o.status == "failed" else
              f"{n} (did not finish: killed or timed out)"
              for n, o in outcomes.items() if o.status != "succeeded"]
    missing = [n for n in stages if n not in outcomes]
    if failed or missing:
        raise RunFailedError(
            f"{day} ({ctx.cfg.purpose}): not published. "
            + (f"Failed: {'; '.join(failed)}. " if failed else "")
            + (f"Did not run: {', '.join(missing)}." if missing else ""))


def gate_daily_run(day: str | date, config_path: str | Path, run_id: str) -> None:
    """`gate` for a daily DAG run, whose stages ran as separate tasks (its last task)."""
    ctx, day = _context(day, config_path, run_id)
    gate(ctx, day, DAILY)


def input_marker(day: str | date, config_path: str | Path) -> DataPath:
    """The file whose arrival says the day's raw input is complete."""
    ctx, day = _context(day, config_path)
    return steps.input_marker(ctx, day)


def publish_change(day: str | date, config_path: str | Path
                   ) -> tuple[str, dict[str, str]] | None:
    """(feature set, event extra) if the date's publish changed what consumers read, else
    None: what an Asset event announces, once per change."""
    ctx, day = _context(day, config_path)
    info = ctx.records(day).load(PublishRecord)
    if info is None or not info.materialized or not info.changed:
        return None
    return ctx.cfg.features.feature_set, {"date": str(day), "purpose": ctx.cfg.purpose,
                                          "features_sha256": str(info.features_sha256)}


def authorize(config_path: str | Path, action: str) -> str:
    """The caller (inside Airflow: the scheduler's identity) may do `action` for the
    config's purpose, or AccessDeniedError (logged). Returns the role that allows it."""
    ctx, _ = _context(date.today(), config_path)
    return str(ctx.authorize(action).role)


def alerts_of(day: str | date, config_path: str | Path) -> list[str]:
    """The soft guardrail alerts the date's monitor recorded, each as one line (guardrail,
    subject, measured value and threshold): what the notifiers send."""
    ctx, day = _context(day, config_path)
    record = ctx.records(day).load(MonitorRecord)
    return [a.describe() for a in record.alerts] if record else []


def rekey(day: str | date, config_path: str | Path) -> RekeyRecord:
    """After a rotation: re-encrypt a date's staging partitions under the active key and redo
    the keyed stages, so nothing for that date depends on a retired key any more."""
    ctx, day = _context(day, config_path)
    reencrypted = {}
    for zone in ctx.staging():
        old = ctx.storage.written_key_id(zone, day)
        if old is not None and old != ctx.key.key_id:  # shard by shard, in place
            shards = Shards(ctx.storage, zone, day)
            ctx.storage.write_shards(zone, day, iter(shards), len(shards))
            reencrypted[zone.path] = old
    for name in KEYED:
        execute(ctx, name, day)
    info = RekeyRecord(date=str(day), active_key_id=ctx.key.key_id, reencrypted=reencrypted,
                       stages_rerun=list(KEYED))
    ctx.records(day).save(info)
    ctx.audit("rekey", detail={"date": str(day), "active_key_id": ctx.key.key_id,
                               "zones_reencrypted": len(reencrypted),
                               "from_key_ids": sorted(set(reencrypted.values()))})
    return info


def output_paths(ctx: RunContext, day: date) -> dict[str, DataPath | Path]:
    """Where a run's outputs for `day` land (for the CLI and README)."""
    reports = ctx.partition_dir("reports", day)
    return {"report": reports / "report.html", "manifest": reports / "manifest.json",
            "features": ctx.storage.partition(ctx.zone("features"), day),
            "published": ctx.storage.partition(ctx.zone("published"), day),
            "feature_repo": ctx.local_area("feature_store")}
