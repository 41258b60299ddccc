"""The engine: run the stages of `pipeline.stages.STAGES` for one date, one at a time (what an
Airflow task calls) or all in order (the CLI).

A table stage's partition is read from its zone, passed to its function in `pipeline.steps`,
and the result written to its output zone with its row accounting; a task stage does its own
I/O. Only paths cross stage boundaries. Rerunning a stage for a date overwrites its partition;
the DP stage returns the ledger's stored release instead of drawing new noise.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

from pipeline import steps
from pipeline.config import load_config
from pipeline.core.context import RunContext, parse_day
from pipeline.core.errors import ConfigError, ValidationFailedError
from pipeline.core.records import RekeyRecord
from pipeline.stages import KEYED, STAGES, Kind

log = logging.getLogger("pipeline")


def execute(ctx: RunContext, name: str, day: date) -> str:
    """Run one declared stage for `day` in `ctx`; returns the path it wrote."""
    stage = STAGES[name]
    target = getattr(steps, stage.target)
    if stage.kind is Kind.TASK:
        return str(target(ctx, day))
    source, sink = stage.reads[0], stage.writes[0]  # a table stage: one zone in, one out
    table, stats = target(ctx, day, ctx.storage.read(ctx.zone(source), day))
    ctx.records(day).save_stats(stats)
    log.info("%s %s: rows in %d, out %d, dropped %s, quarantined %s", day, stats.stage,
             stats.rows_in, stats.rows_out, stats.dropped or "{}", stats.quarantined or "{}")
    return str(ctx.storage.write(ctx.zone(sink), day, table))


def _context(day: str | date, config_path: str | Path) -> tuple[RunContext, date]:
    day = parse_day(day) if isinstance(day, str) else day
    return RunContext(load_config(config_path), run_date=day), day


def run_stage(stage: str, day: str | date, config_path: str | Path) -> str:
    """Run one stage for one date; what a DAG task calls. Returns the path it wrote."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    ctx, day = _context(day, config_path)
    return execute(ctx, stage, day)


def run_all(day: str | date, config_path: str | Path) -> tuple[RunContext, bool]:
    """Every stage in order. A failed validation skips the gated stages (features, publish);
    the report is written either way. Returns (context, published?)."""
    ctx, day = _context(day, config_path)
    _ = ctx.key  # no key: stop before touching any data
    published = True
    for stage in STAGES.values():
        if stage.gated and not published:
            continue
        try:
            execute(ctx, stage.name, day)
        except ValidationFailedError as exc:
            log.error("%s", exc)
            published = False
    return ctx, published


def rekey(day: str | date, config_path: str | Path) -> RekeyRecord:
    """After a rotation: re-encrypt a date's staging partitions under the active key and redo
    the keyed stages, so nothing for that date depends on a retired key any more."""
    ctx, day = _context(day, config_path)
    reencrypted = {}
    for zone in ctx.staging():
        old = ctx.storage.written_key_id(zone, day)
        if old is not None and old != ctx.key.key_id:
            ctx.storage.write(zone, day, ctx.storage.read(zone, day))
            reencrypted[zone.path] = old
    for name in KEYED:
        execute(ctx, name, day)
    info = RekeyRecord(date=str(day), active_key_id=ctx.key.key_id, reencrypted=reencrypted,
                       stages_rerun=list(KEYED))
    ctx.records(day).save(info)
    return info


def output_paths(ctx: RunContext, day: date) -> dict[str, Path]:
    """Where a run's outputs for `day` land (for the CLI and README)."""
    reports = ctx.root / ctx.zone("reports").path / f"date={day}"
    return {"report": reports / "report.html", "manifest": reports / "manifest.json",
            "features": ctx.storage.partition(ctx.zone("features"), day),
            "published": ctx.storage.partition(ctx.zone("published"), day),
            "feature_repo": ctx.root / ctx.zone("feature_store").path}
