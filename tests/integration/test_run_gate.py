"""A run's verdict is its outcome: a stage that failed, crashed, was killed or never ran fails
the run, names itself in the report, and nothing of that day is published."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline import steps
from pipeline.core.errors import RunFailedError
from pipeline.core.records import StageOutcome
from pipeline.run import gate, run_all
from tests.conftest import generated_day

DAY = date(2026, 11, 1)
SECRET = "crash.secret@example.com"


def _report(data: Path) -> tuple[dict, str]:
    out = data / "reports" / "personalization" / f"date={DAY}"
    return json.loads((out / "manifest.json").read_text()), (out / "report.html").read_text()


@pytest.mark.slow
def test_when_a_stage_crashes_then_the_run_fails_naming_it_without_the_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=60, seed=4)

    def crash(ctx, day, table):  # noqa: ANN001, ANN202 - a library error quoting a value
        raise pl.exceptions.ColumnNotFoundError(f"unable to find column {SECRET!r}")

    monkeypatch.setattr(steps, "generalize", crash)
    ctx, published = run_all(DAY, config)
    assert not published
    outcomes = ctx.records(DAY).outcomes()
    assert outcomes["generalize"].status == "failed"
    assert outcomes["generalize"].error == "ColumnNotFoundError"
    assert "features" not in outcomes and outcomes["report"].status == "succeeded"
    manifest, html = _report(data)
    assert not manifest["published"] and manifest["funnel"]["last_stage"] == "pseudonymize"
    assert "Stage generalize failed: ColumnNotFoundError" in html
    assert "Stage minimize did not run" in html
    assert not (data / "published" / "personalization" / f"date={DAY}").exists()
    assert SECRET not in json.dumps(manifest) and SECRET not in html
    assert not [p for p in data.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    with pytest.raises(RunFailedError, match=r"generalize \(ColumnNotFoundError.*Did not run: "
                                             r"minimize, reidentify, validate, features, publish"):
        gate(ctx, DAY)
    assert "message is withheld" in outcomes["generalize"].message


@pytest.mark.slow
def test_when_a_stage_was_killed_or_an_earlier_run_succeeded_then_the_gate_still_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = generated_day(tmp_path, monkeypatch, users=60, seed=4)
    ctx, published = run_all(DAY, config)
    assert published
    gate(ctx, DAY)
    records = ctx.records(DAY)
    # A task killed mid-way (SIGKILL, timeout) leaves its outcome `running`.
    killed = records.outcomes()["features"].model_copy(update={"status": "running"})
    records.save_outcome(killed)
    with pytest.raises(RunFailedError, match="features .did not finish"):
        gate(ctx, DAY)
    # Another run of the date is judged on its own stages, not on what the first one left.
    ctx.run_id = "scheduled__2026-11-02"
    records.save_outcome(StageOutcome(stage="ingest", run_id=ctx.run_id, status="succeeded",
                                      started_at="2026-11-02T00:00:00+00:00"))
    with pytest.raises(RunFailedError, match="Did not run: check_input, erase, retention, "
                                             "consent"):
        gate(ctx, DAY)


@pytest.mark.slow
def test_when_a_published_closed_column_holds_emails_then_the_run_still_publishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer bug puts e-mails in `content_category`: the column scan flags it but keeps
    it (the purpose publishes it, as each user's interests, from a fixed list), and minimize
    replaces those values."""
    config, data = generated_day(tmp_path, monkeypatch, users=80, seed=6)
    raw = data / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    lines = raw.read_text().splitlines()
    for i in range(0, len(lines), 3):
        try:
            event = json.loads(lines[i])
        except json.JSONDecodeError:
            continue  # the generator's deliberately malformed lines
        event["content_category"] = f"user{i}@example.org"
        lines[i] = json.dumps(event)
    raw.write_text("\n".join(lines) + "\n")
    ctx, published = run_all(DAY, config)
    assert published
    [finding] = ctx.records(DAY).stats()["detect_pii"].details.column_scan.flagged
    assert finding.column == "content_category" and finding.action.startswith("kept")
    table = pl.read_parquet(data / "published" / "personalization" / f"date={DAY}")
    for column in ("top_category", "second_category"):
        assert not table[column].str.contains("@").any()
    minimize = ctx.records(DAY).stats()["minimize"].details
    assert sum(minimize.out_of_domain.values()) > 0  # became `other`, counted
