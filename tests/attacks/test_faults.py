"""Bad luck and bad input: a far-future date, a crash inside retention, exposed keys."""

from __future__ import annotations

import gzip
import json
import os
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError, KeyUnavailableError, MissingInputError
from pipeline.core.keys import FileProvider
from pipeline.core.storage import Storage
from pipeline.run import run_all
from tests.conftest import (
    TEST_KEY_TEXT,
    TEST_SECRET,
    generated_day,
    records_of,
    reports_of,
    write_config,
)

DAY = "2026-11-01"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("day", [str(date.today() + timedelta(days=1)), "2099-01-01",
                                 "2026-10-30"])
def test_when_a_run_date_is_in_the_future_or_has_no_input_then_nothing_is_deleted(
        day: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=30, seed=2, days=2,
                                 retention__raw_days=1)  # everything else would be purged
    before = _files(data)
    ctx, published = run_all(day, config)
    assert not published
    assert before.items() <= _files(data).items()  # every file still there, unchanged
    outcome = ctx.records(date.fromisoformat(day)).outcomes()["check_input"]
    assert outcome.status == "failed" and "nothing was run or deleted" in outcome.message
    assert outcome.error in (ConfigError.__name__, MissingInputError.__name__)


def test_when_a_purge_was_interrupted_then_the_next_run_finishes_and_reports_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import RetentionConfig
    from pipeline.transforms.retention import finish_interrupted

    aside = tmp_path / "raw" / "events" / ".purging-date=2026-09-01"
    aside.mkdir(parents=True)
    (aside / "events.jsonl").write_text('{"email": "someone@example.com"}\n')
    stale = tmp_path / "published" / "p" / "date=2026-11-01" / ".part.parquet.x1.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a parquet")
    fresh = stale.with_name(".part.parquet.x2.tmp")  # another run may be writing it now
    fresh.write_bytes(b"in progress")
    os.utime(stale, (0, 0))
    assert finish_interrupted(tmp_path, RetentionConfig()) == [
        "raw/events/.purging-date=2026-09-01",
        "published/p/date=2026-11-01/.part.parquet.x1.tmp"]
    assert not aside.exists() and not stale.exists() and fresh.exists()


def test_when_a_key_file_is_readable_by_others_then_it_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "pipeline.key"
    key.write_text(TEST_KEY_TEXT)
    os.chmod(key, 0o644)
    with pytest.raises(KeyUnavailableError, match="must be 0600"):
        FileProvider(key).load()
    os.chmod(key, 0o600)
    assert FileProvider(key).load() == TEST_KEY_TEXT


def test_when_storage_is_printed_then_no_key_shows() -> None:
    text = repr(Storage(Path("/data"), encryption_key=TEST_SECRET, key_id="k1"))
    assert "TEST-ONLY" not in text and TEST_SECRET.hex() not in text and "k1" in text


GOOD = {"event_id": "e1", "account_id": "acct-1", "age": 30, "device_id": "d1", "os": "iOS",
        "event_type": "view", "event_time": "2026-11-01T10:00:00Z",
        "content_category": "news", "session_seconds": 10}
SECRET = "mallory.secret@example.com"
FUZZ = {  # one bad line each, followed by a good one
    "invalid utf-8": (json.dumps({**GOOD, "email": SECRET}).encode().replace(
        b'"news"', b'"n\xff\xfews"'), "invalid_utf8"),
    "10,000 levels of nesting": (json.dumps({**GOOD, "email": SECRET, "x": None}).encode()
                                 .replace(b"null", b"[" * 10_000 + b"]" * 10_000),
                                 "nested_too_deep"),
    "integer above int64": (json.dumps({**GOOD, "email": SECRET, "session_seconds": 10**30})
                            .encode(), "out_of_range"),
    "not JSON": (f'{{"email": "{SECRET}", '.encode(), "malformed_json"),
    # a second account_id would be kept silently (last wins) and smuggle in another user
    "duplicate key": (json.dumps({**GOOD, "email": SECRET}).encode()[:-1]
                      + b', "account_id": "acct-2"}', "duplicate_key"),
    "duplicate key, escaped": (json.dumps({**GOOD, "email": SECRET}).encode()[:-1]
                               + b', "acc\\u006funt_id": "acct-2"}', "duplicate_key"),
    "1 MB free text": (json.dumps({**GOOD, "text": f"{SECRET} " + "x" * 1_000_000}).encode(),
                       "field_too_long"),
    "5 MB line": (json.dumps({**GOOD, "text": f"{SECRET} " + "x" * 5_000_000}).encode(),
                  "line_too_long"),
}


@pytest.mark.parametrize("kind", list(FUZZ))
def test_when_a_line_is_malformed_then_it_is_quarantined_by_reason_and_no_value_is_kept(
        kind: str, tmp_path: Path, cfg) -> None:  # noqa: ANN001
    from pipeline.transforms.ingest import ingest_events

    line, reason = FUZZ[kind]
    path = tmp_path / "events.jsonl"
    path.write_bytes(line + b"\n" + json.dumps({**GOOD, "event_id": "e2"}).encode() + b"\n")
    result = ingest_events(path, cfg.event_schema, source_name="events.jsonl")
    assert result.table.height == 1 and result.stats.quarantined == {reason: 1}
    assert SECRET not in result.quarantine.write_csv()


def test_when_events_fall_outside_the_day_then_they_are_quarantined(tmp_path: Path,
                                                                    cfg) -> None:  # noqa: ANN001
    from datetime import date

    from pipeline.transforms.ingest import ingest_events

    times = {"e1": "2026-11-01T00:00:00Z", "e2": "2026-11-01T23:59:59.999Z",
             "e3": "9999-12-31T00:00:00Z", "e4": "2026-10-31T23:59:59Z",
             "e5": "2026-11-02T00:00:00Z"}
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({**GOOD, "event_id": e, "event_time": t}) + "\n"
                            for e, t in times.items()))
    result = ingest_events(path, cfg.event_schema, source_name="events.jsonl",
                           limits=cfg.ingest, day=date(2026, 11, 1))
    assert result.table["event_id"].to_list() == ["e1", "e2"]
    assert result.stats.quarantined == {"outside_day": 3}
    assert set(result.quarantine["field"]) == {"event_time"}


def test_when_a_file_has_blank_lines_then_they_are_counted_and_the_funnel_balances(
        tmp_path: Path, cfg) -> None:  # noqa: ANN001
    from pipeline.transforms.ingest import ingest_events

    path = tmp_path / "events.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n\n   \n{json.dumps({**GOOD, 'event_id': 'e2'})}\n\n")
    stats = ingest_events(path, cfg.event_schema, source_name="events.jsonl").stats
    assert (stats.rows_in, stats.rows_out, stats.dropped) == (5, 2, {"blank_line": 3})


def test_when_a_gzip_holds_one_huge_line_then_memory_stays_bounded(tmp_path: Path,
                                                                  cfg) -> None:  # noqa: ANN001
    import tracemalloc

    from pipeline.transforms.ingest import InputTooLargeError, ingest_events

    path = tmp_path / "events.jsonl"
    with gzip.open(path, "wb") as fh:  # 200 MB of one line, 200 KB on disk
        fh.write(json.dumps(GOOD).encode() + b"\n" + b'{"text": "')
        for _ in range(200):
            fh.write(b"x" * (1 << 20))
        fh.write(b'"}\n' + json.dumps({**GOOD, "event_id": "e2"}).encode() + b"\n")
    tracemalloc.start()
    result = ingest_events(path, cfg.event_schema, source_name="events.jsonl",
                           limits=cfg.ingest)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.table.height == 2 and result.stats.quarantined == {"line_too_long": 1}
    assert peak < 40 * (1 << 20), f"peak {peak / (1 << 20):.0f} MB"
    small = cfg.ingest.model_copy(update={"max_decompressed_bytes": 50 << 20})
    with pytest.raises(InputTooLargeError, match="max_decompressed_bytes"):
        ingest_events(path, cfg.event_schema, source_name="events.jsonl", limits=small)


def test_when_a_file_starts_with_a_bom_or_is_gzipped_then_its_events_are_read(
        tmp_path: Path, cfg) -> None:  # noqa: ANN001
    from pipeline.transforms.ingest import ingest_events

    lines = (json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "event_id": "e2"}) + "\n").encode()
    for name, data in (("bom", b"\xef\xbb\xbf" + lines), ("gzip", gzip.compress(lines)),
                       ("empty", b"")):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(data)
        result = ingest_events(path, cfg.event_schema, source_name=path.name)
        assert result.table.height == (0 if name == "empty" else 2), name
        assert result.stats.quarantined == {}, name


@pytest.mark.slow
@pytest.mark.parametrize("case", ["empty day", "nobody consented", "empty day, accepted",
                                  "stray date=latest folders"])
def test_when_a_day_is_empty_or_odd_then_guardrails_stop_it_unless_accepted(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=50, seed=2)
    if case.startswith("empty day"):
        (data / "raw" / "events" / f"date={DAY}" / "events.jsonl").write_text("")
    elif case == "nobody consented":
        (data / "raw" / "consent" / "consent.jsonl").write_text("")
    else:
        for area in ("raw/events", "published/personalization", "staging/personalization/ingested"):
            (data / area / "date=latest").mkdir(parents=True)
    ctx, published = run_all(DAY, config, accept_low_volume=case.endswith("accepted"))
    manifest = json.loads((reports_of(data, DAY) / "manifest.json").read_text())
    assert manifest["funnel"]["balanced"]
    if case in ("empty day", "nobody consented"):  # lost input: nothing charged or published
        assert not published and manifest["outcomes"]["guardrails"]["status"] == "failed"
        assert manifest["differential_privacy"] is None
        assert not (data / "features" / "cohort_daily" / f"date={DAY}").exists()
    else:  # an operator's known-small day, or a normal one beside stray folders
        assert published and manifest["differential_privacy"]["release_due"]


def test_when_a_key_id_comes_back_with_another_secret_then_the_run_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.core.keys import parse_key
    from tests.conftest import files_holding, key_material

    config = write_config(tmp_path)
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    assert RunContext(load_config(config)).keys.active.key_id == "test-key-1"
    other = base64.b64encode(b"TEST-ONLY-another-secret-0000002").decode()
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", f"test-key-1:{other}")
    with pytest.raises(KeyUnavailableError, match="different secret"):
        _ = RunContext(load_config(config)).keys
    forms = key_material(parse_key(TEST_KEY_TEXT, source="test"))
    assert files_holding([tmp_path / "data" / "keys"], forms) == []


@pytest.mark.slow
def test_when_a_day_arrives_gzipped_then_its_lines_are_counted_and_it_is_sharded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.run import run_stage

    config, data = generated_day(tmp_path, monkeypatch, users=200, seed=3,
                                 scale__events_per_shard=800)
    raw = data / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    plain = raw.read_bytes()
    raw.write_bytes(gzip.compress(plain))  # same name: the landing side compressed it
    run_stage("check_input", DAY, config)
    seen = json.loads((records_of(data, DAY) / "input.json").read_text())
    assert seen["lines"] == plain.count(b"\n") > 1600
    run_stage("ingest", DAY, config)
    parts = list((data / "staging" / "personalization" / "ingested" / f"date={DAY}").iterdir())
    assert len(parts) == -(-seen["lines"] // 800)
