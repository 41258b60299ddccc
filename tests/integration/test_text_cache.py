"""The cross-day text cache (`pii.text_cache`) over real runs: a day reuses what the days
before it scrubbed, the cache holds no text in the clear, and an erasure clears it whole."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from pipeline.core.records import ErasureRecord
from pipeline.run import execute, run_all
from tests.conftest import generated_day

pytestmark = pytest.mark.slow
DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)


def test_when_texts_recur_on_the_next_day_then_they_are_not_analysed_again_until_an_erasure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=40, seed=11, days=2,
                                 pii__text_cache=True)
    run_all(str(DAY1), config)
    ctx, published = run_all(str(DAY2), config)
    assert published
    first, second = (ctx.records(d).stats()["detect_pii"].details for d in (DAY1, DAY2))
    assert first.texts_from_earlier_days == 0 and first.texts_analysed > 0
    # the generator's search terms recur from day to day; names, e-mails and cards do not
    assert second.texts_from_earlier_days > 0 and second.texts_analysed > 0

    cache = data / "cache" / "personalization" / "pii_texts"
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    assert {p.parent.name for p in files} == {f"date={DAY1}", f"date={DAY2}"}
    raw = [e for line in (data / "raw" / "events" / f"date={DAY1}" / "events.jsonl"
                          ).read_text().splitlines() if isinstance(e := _loads(line), dict)]
    texts = {e.get("text") for e in raw}
    assert not any(t.encode() in p.read_bytes() for t in texts if t and len(t) > 8
                   for p in files)  # encrypted: not even a search term shows

    account = next(e["account_id"] for e in raw if "account_id" in e)
    requests = data / "raw" / "erasure" / "requests.jsonl"
    requests.parent.mkdir(parents=True, exist_ok=True)
    requests.write_text(json.dumps({"account_id": account}) + "\n")
    execute(ctx, "erase", DAY2)
    erased = ctx.records(DAY2).load(ErasureRecord)
    assert erased is not None and erased.removed["text cache"] == len(files)
    assert not cache.exists()


def _loads(line: str) -> object:
    try:  # the generator writes some malformed lines, as landing files have
        return json.loads(line)
    except ValueError:
        return None
