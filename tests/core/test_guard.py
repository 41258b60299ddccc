"""The engine holds every stage to its row of the stage table: touching an undeclared zone or
record stops the stage, and on a real run each stage touches what it declares."""

from dataclasses import replace
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import PipelineConfig
from pipeline.core.context import RunContext
from pipeline.core.errors import UndeclaredAccessError
from pipeline.core.records import InputRecord, ValidationRecord
from pipeline.stages import STAGES

DAY = date(2026, 11, 1)


def test_when_a_stage_touches_a_zone_it_did_not_declare_then_it_is_stopped(
        cfg: PipelineConfig) -> None:
    ctx = RunContext(cfg, run_date=DAY).for_stage(STAGES["pseudonymize"])
    with pytest.raises(UndeclaredAccessError, match="pseudonymize touched zone 'published'"):
        ctx.zone("published")
    # declared as read, written: stopped before the write
    table = pl.DataFrame({"x": [1]})
    with pytest.raises(UndeclaredAccessError, match="write zone 'scrubbed'"):
        ctx.storage.write(ctx.cfg.zone("scrubbed"), DAY, table)
    assert not (ctx.root / "staging").exists()
    with pytest.raises(UndeclaredAccessError, match="run record 'validation'"):
        ctx.records(DAY).save(ValidationRecord(success=True))
    with pytest.raises(UndeclaredAccessError, match="run record 'input'"):
        ctx.records(DAY).load(InputRecord)
    with pytest.raises(UndeclaredAccessError, match="ledger"):
        ctx.ledger()


def test_when_the_engine_runs_a_stage_that_oversteps_then_the_run_records_why(
        cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage whose row omits a zone it uses fails with UndeclaredAccessError, recorded."""
    from pipeline import run, stages
    from pipeline.run import execute

    narrowed = replace(STAGES["check_input"], reads=())
    monkeypatch.setitem(stages.STAGES, "check_input", narrowed)
    monkeypatch.setitem(run.STAGES, "check_input", narrowed)
    ctx = RunContext(cfg, run_date=DAY)
    with pytest.raises(UndeclaredAccessError):
        execute(ctx, "check_input", DAY)
    outcome = ctx.records(DAY).outcomes()["check_input"]
    assert outcome.status == "failed" and outcome.error == "UndeclaredAccessError"


# Declared, but touched only in some runs (the reason is why it is declared).
CONDITIONAL = {
    **{(s, "runs/outcomes"): "the gate reads outcomes for a day validated before the "
       "guardrails existed" for s in ("validate", "features", "publish", "monitor")},
    ("features", "runs/features"): "written only when a release is drawn, not reused",
    ("features", "generalized"): "read only when a release is drawn, not reused",
    ("detect_pii", "text_cache"): "only with pii.text_cache on",
}


@pytest.mark.slow
def test_when_a_day_runs_then_every_stage_touches_exactly_what_its_row_declares(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pipeline.run import run_all
    from tests.conftest import generated_day

    config, data = generated_day(tmp_path, monkeypatch, users=120, seed=3, days=2)
    run_all(DAY, config)  # day 1 published: day 2 has someone to erase everywhere
    event = next(json.loads(line) for line in
                 (data / "raw" / "events" / "date=2026-11-02" / "events.jsonl").open()
                 if line.startswith("{") and "account_id" in line)
    requests = data / "raw" / "erasure" / "requests.jsonl"
    requests.parent.mkdir(parents=True, exist_ok=True)
    requests.write_text(json.dumps({"account_id": event["account_id"]}) + "\n")
    ctx, published = run_all(date(2026, 11, 2), config)
    assert published
    for name, stage in STAGES.items():
        touched = {t for t, _ in ctx.touched[name]}
        declared = {*stage.reads, *stage.writes,
                    *(f"runs/{r}" for r in (*stage.records_read, *stage.records_written))}
        unused = {d for d in declared - touched if (name, d) not in CONDITIONAL}
        assert not unused, f"{name} declares {sorted(unused)} but did not touch them"
        written = {t for t, mode in ctx.touched[name] if mode == "write"}
        assert written <= {*stage.writes, *(f"runs/{r}" for r in stage.records_written)}
