"""Bad luck and bad input: a far-future date, a crash inside retention, exposed keys."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError, KeyUnavailableError, MissingInputError
from pipeline.core.keys import FileProvider
from pipeline.core.storage import Storage
from pipeline.demo.generate import generate
from pipeline.run import run_all
from tests.conftest import TEST_KEY_TEXT, TEST_SECRET, write_config

DAY = "2026-11-01"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("day", [str(date.today() + timedelta(days=1)), "2099-01-01",
                                 "2026-10-30"])
def test_when_a_run_date_is_in_the_future_or_has_no_input_then_nothing_is_deleted(
        day: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path, retention__raw_days=1)  # everything else would be purged
    data = tmp_path / "data"
    generate(data, start=date.fromisoformat(DAY), days=2, users=30, seed=2)
    before = _files(data)
    with pytest.raises((ConfigError, MissingInputError), match="nothing was run or deleted"):
        run_all(day, config)
    after = _files(data)
    assert {k: v for k, v in after.items() if not k.startswith("runs/")} == before


def test_when_a_purge_was_interrupted_then_the_next_run_finishes_and_reports_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import RetentionConfig
    from pipeline.transforms.retention import finish_interrupted

    aside = tmp_path / "raw" / "events" / ".purging-date=2026-09-01"
    aside.mkdir(parents=True)
    (aside / "events.jsonl").write_text('{"email": "someone@example.com"}\n')
    assert finish_interrupted(tmp_path, RetentionConfig()) == [
        "raw/events/.purging-date=2026-09-01"]
    assert not aside.exists()


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
