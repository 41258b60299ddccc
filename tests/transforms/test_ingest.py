import json
from pathlib import Path

import polars as pl

from pipeline.config import PipelineConfig
from pipeline.transforms.ingest import ingest_events

GOOD = {"event_id": "e1", "account_id": "acct-1", "name": "Zelda Quarantino",
        "email": "zelda.q@example.org", "age": 30, "latitude": 40.7, "longitude": -74.0,
        "device_id": "d1", "os": "iOS", "event_type": "view", "session_seconds": 12,
        "event_time": "2026-11-01T10:00:00Z"}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_when_lines_do_not_fit_then_each_is_quarantined_with_reason_and_field(
        tmp_path: Path, cfg: PipelineConfig) -> None:
    lines = [
        json.dumps(GOOD),
        json.dumps(GOOD)[:40],                                         # broken JSON
        json.dumps({**GOOD, "event_id": "e3", "age": "thirty"}),       # wrong type
        json.dumps({k: v for k, v in GOOD.items() if k != "account_id"} | {"event_id": "e4"}),
        json.dumps({**GOOD, "event_id": "e5", "latitude": 999}),       # out of range
        json.dumps({**GOOD, "event_id": "e6", "event_type": "scroll"}),  # not allowed
        json.dumps({**GOOD, "event_id": "e7", "event_time": "yesterday"}),
        json.dumps(GOOD),                                              # re-delivered
    ]
    result = ingest_events(_write(tmp_path, lines), cfg.event_schema, source_name="f.jsonl")

    got = result.quarantine.select("line_number", "reason", "field").rows()
    assert got == [(2, "malformed_json", None), (3, "wrong_type", "age"),
                   (4, "missing_field", "account_id"), (5, "out_of_range", "latitude"),
                   (6, "invalid_value", "event_type"), (7, "wrong_type", "event_time")]
    assert result.table["event_id"].to_list() == ["e1"]
    assert result.stats.dropped == {"duplicate_event": 1}
    assert result.stats.rows_in == 8 == result.stats.rows_out + 1 + 6


def test_when_quarantined_then_no_raw_value_is_kept(tmp_path: Path,
                                                    cfg: PipelineConfig) -> None:
    bad = json.dumps({**GOOD, "age": "zelda.q@example.org"})
    result = ingest_events(_write(tmp_path, [bad]), cfg.event_schema, source_name="f.jsonl")
    assert result.quarantine.height == 1
    assert "zelda" not in str(result.quarantine.rows()) + str(result.stats)


def test_when_valid_then_types_follow_the_schema(tmp_path: Path, cfg: PipelineConfig) -> None:
    result = ingest_events(_write(tmp_path, [json.dumps(GOOD)]), cfg.event_schema,
                           source_name="f.jsonl")
    schema = result.table.schema
    assert schema["age"] == pl.Int64 and schema["latitude"] == pl.Float64
    assert schema["event_time"] == pl.Datetime("us", "UTC")
