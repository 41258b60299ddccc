"""Erasure under key rotation, and a corrupt partition in the way."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.core.errors import ConsentLogIntegrityError, KeyUnavailableError
from pipeline.core.keys import parse_key
from pipeline.run import run_all, run_stage
from pipeline.transforms.erasure import REQUESTS, pseudonyms_of, published_pseudonyms
from tests.conftest import TEST_KEY_TEXT, generated_day, records_of, write_config
from tests.core.test_key_rotation import NEW_KEY_TEXT

DAY = "2026-11-01"
ROTATED = {"readable_days": 30, "retired": {"test-key-1": "2026-11-02"}}


def _shown(account: str, key_text: str, config: Path) -> str:
    """The account's pseudonym under this key in DAY's published table."""
    key = parse_key(key_text, source="test")
    (stable,) = pseudonyms_of([account], [key], "personalization")
    (shown,) = published_pseudonyms([stable], [key], load_config(config).purpose_spec,
                                    [date.fromisoformat(DAY)])
    return shown


def _published_user(data: Path, config: Path) -> tuple[str, str]:
    """(account id, pseudonym under the first key) of someone in the published table."""
    table = pl.read_parquet(data / "published" / "personalization" / f"date={DAY}" /
                            "part.parquet")
    accounts = set()
    for line in (data / "raw" / "events" / f"date={DAY}" / "events.jsonl").read_text() \
            .splitlines():
        try:
            accounts.add(json.loads(line)["account_id"])
        except (ValueError, KeyError, TypeError):
            continue  # the generator plants malformed lines
    for account in sorted(accounts):
        pseudonym = _shown(account, TEST_KEY_TEXT, config)
        if pseudonym in set(table["user_pseudonym"]):
            return account, pseudonym
    raise AssertionError("nobody published")


@pytest.mark.slow
def test_when_a_retired_key_left_the_ring_then_erasure_stops_instead_of_missing_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=300, seed=5)
    assert run_all(DAY, config)[1]
    account, pseudonym = _published_user(data, config)
    (data / REQUESTS).parent.mkdir(parents=True, exist_ok=True)
    (data / REQUESTS).write_text(json.dumps({"account_id": account}) + "\n")

    # Staging is kept 7 days, published 90: later, only published rows are under the old key.
    import shutil

    for area in ("staging", "pending"):
        shutil.rmtree(data / area)
    # Rotation done wrong: the old key dropped from the ring before its dates were re-keyed.
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", NEW_KEY_TEXT)
    # (the consent log, sealed under the old key, is the first to say so)
    with pytest.raises((KeyUnavailableError, ConsentLogIntegrityError),
                       match="test-key-1.*(no longer holds|does not hold)"):
        run_stage("erase", DAY, write_config(tmp_path))
    # Done right: the old key stays in the ring, retired, while anything published under it is
    # kept (it only recomputes pseudonyms to find the user).
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", f"{NEW_KEY_TEXT}\n{TEST_KEY_TEXT}")
    run_stage("erase", DAY, write_config(tmp_path, keys__rotation=ROTATED))
    table = pl.read_parquet(data / "published" / "personalization" / f"date={DAY}" /
                            "part.parquet")
    assert _shown(account, NEW_KEY_TEXT, config) not in set(table["user_pseudonym"])
    assert pseudonym not in set(table["user_pseudonym"])


@pytest.mark.slow
def test_when_a_published_partition_is_truncated_then_later_runs_go_on_and_a_rerun_rebuilds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=200, seed=6, days=2)
    assert run_all(DAY, config)[1]
    part = data / "published" / "personalization" / f"date={DAY}" / "part.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    (data / REQUESTS).parent.mkdir(parents=True, exist_ok=True)
    (data / REQUESTS).write_text(json.dumps({"account_id": "acct-nobody"}) + "\n")

    _, published = run_all("2026-11-02", config)  # erase reads every partition
    erasure = json.loads((records_of(data, "2026-11-02") / "erasure.json").read_text())
    assert published and erasure["set_aside"] == [
        f"quarantine/corrupt/published/personalization/date={DAY}/part.parquet"]
    assert not part.exists()
    run_all(DAY, config)
    assert pl.read_parquet(part).height > 0  # rebuilt by rerunning its date


@pytest.mark.slow
def test_when_staging_does_not_decrypt_during_erasure_then_it_stops_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    config, data = generated_day(tmp_path, monkeypatch, users=200, seed=6)
    assert run_all(DAY, config)[1]
    account = json.loads((data / "raw" / "events" / f"date={DAY}" / "events.jsonl")
                         .read_text().splitlines()[0])["account_id"]
    (data / "keys" / "fingerprints.json").unlink()  # the guard against a reused id is gone
    other = base64.b64encode(b"TEST-ONLY-another-secret-0000002").decode()
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", f"test-key-1:{other}")  # same id
    (data / REQUESTS).parent.mkdir(parents=True, exist_ok=True)
    (data / REQUESTS).write_text(json.dumps({"account_id": account}) + "\n")
    staging = sorted(p.relative_to(data) for p in (data / "staging").rglob("*") if p.is_file())
    # (the consent log, sealed under the real key, is the first to say so)
    with pytest.raises((KeyUnavailableError, ConsentLogIntegrityError),
                       match="test-key-1.*(moved nothing|names another key)"):
        run_stage("erase", DAY, config)
    assert not (data / "quarantine" / "corrupt").exists()
    assert sorted(p.relative_to(data) for p in (data / "staging").rglob("*")
                  if p.is_file()) == staging
