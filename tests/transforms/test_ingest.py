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


def test_when_a_file_is_decoded_in_byte_ranges_then_rows_and_quarantine_are_the_whole_files(
        tmp_path: Path, cfg: PipelineConfig) -> None:
    """Ranges split the file at arbitrary bytes; each line belongs to the range its first
    byte lies in, so ranges (and pieces of them, decoded by other processes) give back every
    line once, numbered as in the file: BOM, blank, over-long, erased and broken lines too."""
    from pipeline.config import IngestConfig
    from pipeline.transforms.ingest import (
        ERASED_LINE,
        byte_ranges,
        decoded_range,
        read_records,
    )

    limits = IngestConfig(max_line_bytes=2048, day_field=None)
    lines = [json.dumps({**GOOD, "event_id": f"e{i}", "text": "é" * (i % 7)}) for i in range(60)]
    lines[0] = "\ufeff" + lines[0]
    lines[5], lines[9], lines[17] = "", "x" * 5000, ERASED_LINE.decode()
    lines[23] = json.dumps(GOOD)[:30]
    path = _write(tmp_path, lines)
    whole = read_records(path, cfg.event_schema, source_name="f", limits=limits)
    assert whole.table.height == 56 and whole.quarantine.height == 2
    for n in (1, 2, 3, 7, 40):
        for piece_bytes in (97, 1 << 20):
            tables, bad, total, offset = [], [], 0, 0
            for r in byte_ranges(path, n, limits):
                for b in decoded_range(path, cfg.event_schema, r, source_name="f",
                                       limits=limits, day=None, piece_bytes=piece_bytes):
                    tables.append(b.table.with_columns(pl.col("_line") + offset))
                    bad.extend({**q, "line_number": q["line_number"] + offset}
                               for q in b.quarantine)
                    total += b.lines
                offset = total
            assert total == len(lines), (n, piece_bytes)
            assert pl.concat(tables).drop("_line").equals(whole.table), (n, piece_bytes)
            assert sorted(q["line_number"] for q in bad) == \
                whole.quarantine["line_number"].to_list()


def test_when_decoded_by_two_processes_then_the_table_is_the_same(
        tmp_path: Path, cfg: PipelineConfig) -> None:
    lines = [json.dumps({**GOOD, "event_id": f"e{i}"}) for i in range(3000)]
    path = _write(tmp_path, lines)
    one = ingest_events(path, cfg.event_schema, source_name="f")
    from pipeline.transforms import ingest

    two = ingest.records_of(ingest.decoded_range(
        path, cfg.event_schema, ingest.ByteRange(0, 0, None), source_name="f",
        limits=cfg.ingest, day=None, processes=2, piece_bytes=20_000), cfg.event_schema)
    assert one.table.equals(two.table) and one.stats == two.stats


def test_when_lines_are_counted_by_newlines_then_they_are_the_lines_ingest_reads(
        tmp_path: Path) -> None:
    from pipeline.config import IngestConfig
    from pipeline.transforms.ingest import count_lines, iter_lines

    limits = IngestConfig(max_line_bytes=1024)
    for text in ("", "a", "a\n", "a\n\nb", "x" * 5000 + "\ny\n", "\n\n", "é\r\nz"):
        path = tmp_path / "f.jsonl"
        path.write_text(text)
        assert count_lines(path, limits) == sum(1 for _ in iter_lines(path, limits)), text
