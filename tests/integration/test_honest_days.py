"""Honest days and honest serving, on real runs: three published days, then what goes wrong.

- a day that lost its input (every line quarantined, an empty, BOM-only or NUL file, a link to
  a system file) stops at the guardrails: no ledger charge, nothing published, Feast untouched;
- a known-small day publishes only when the operator accepts it;
- re-running an older date never rolls the online store back;
- a training join gives each event the release before it and keeps every row, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.core.context import RunContext
from pipeline.core.records import GuardrailRecord, Manifest, PublishRecord
from pipeline.demo.generate import generate
from pipeline.ledger.store import PrivacyLedger
from pipeline.outputs.feast import online_features, open_store, training_features
from pipeline.run import run_all
from tests.conftest import ROOT, TEST_KEY_TEXT, records_of, reports_of, write_config

pytestmark = pytest.mark.slow
PUBLISHED = ("2026-11-01", "2026-11-02", "2026-11-03")
COHORTS = ["California|25-34|mobile", "Texas|35-44|desktop", "New York|18-24|mobile"]
SHIPPED_MINIMUMS = {"guardrails__min_rows_in": 100, "guardrails__min_users_after_consent": 50}


@pytest.fixture(autouse=True)
def _cli_logs_to_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` would point the root logger at this test's captured stderr, which pytest closes
    after it; later tests' log lines would then hit a closed stream."""
    monkeypatch.setattr("pipeline.cli._setup_logging", lambda *a, **k: None)


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("honest")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp, **SHIPPED_MINIMUMS)
    data = tmp / "data"
    generate(data, start=date(2026, 11, 1), days=8, users=300, seed=5)
    for day in PUBLISHED:
        assert run_all(day, config)[1], day
    cfg = load_config(config)
    before = online_features(cfg, COHORTS, ["active_users", "share_news_shrunk"])
    ctx, republished = run_all(PUBLISHED[0], config)  # a re-run of the oldest day
    yield {"config": config, "cfg": cfg, "data": data, "before_rerun": before,
           "rerun": republished, "rerun_ctx": ctx}
    mp.undo()


def _release(data: Path, day: str) -> pl.DataFrame:
    return pl.read_parquet(data / "features" / "cohort_daily" / f"date={day}" / "part.parquet")


def _ledger(cfg: object) -> list:
    ctx = RunContext(cfg)
    return PrivacyLedger.from_config(cfg.budget, ctx.local, ctx.keys).history(cfg.purpose)


def _online(cfg: object) -> dict:
    return online_features(cfg, COHORTS, ["active_users", "share_news_shrunk"])


def _raw(data: Path, day: str) -> Path:
    return data / "raw" / "events" / f"date={day}" / "events.jsonl"


def test_when_an_older_date_is_rerun_then_online_serving_keeps_the_latest_day(days: dict
                                                                              ) -> None:
    assert days["rerun"]
    latest = _release(days["data"], PUBLISHED[-1]).filter(pl.col("cohort_id").is_in(COHORTS))
    online = _online(days["cfg"])
    assert online == days["before_rerun"]
    by_cohort = dict(zip(latest["cohort_id"], latest["active_users"], strict=True))
    assert online["active_users"] == [by_cohort[c] for c in COHORTS]
    info = PublishRecord.model_validate_json(
        (records_of(days["data"], PUBLISHED[0]) / "publish.json").read_text())
    assert (info.online_written, info.online_kept_newer) == (
        0, _release(days["data"], PUBLISHED[0]).height)


def test_when_training_rows_are_joined_then_each_gets_the_release_before_it_in_order(
        days: dict) -> None:
    store, cohort = open_store(days["cfg"]), COHORTS[0]
    at = pd.to_datetime(["2026-11-02", "2026-10-30", "2026-11-03", "2026-11-02",
                         "2026-11-02", "2026-11-30"], utc=True)
    entity = pd.DataFrame({"cohort_id": [cohort, cohort, cohort, COHORTS[1], "X|18-34|Y",
                                         cohort],
                           "event_timestamp": at, "label": [1, 2, 3, 4, 5, 6]})
    got = training_features(days["cfg"], entity, ["cohort_daily:active_users"], store=store)
    assert list(got["label"]) == [1, 2, 3, 4, 5, 6]  # every row, in order
    # before the first release, outside the grid, past the TTL: kept, null
    assert [pd.isna(v) for v in got["active_users"]] == [False, True, False, False, True, True]

    def value(day: str, c: str) -> int:
        r = _release(days["data"], day)
        return r.filter(pl.col("cohort_id") == c)["active_users"].item()
    # an event of 11-02 joins the release of 11-01, never its own day's
    assert got["active_users"][0] == value("2026-11-01", cohort)
    assert got["active_users"][2] == value("2026-11-02", cohort)
    assert got["active_users"][3] == value("2026-11-01", COHORTS[1])


def test_when_the_readme_training_example_runs_then_it_trains_on_earlier_releases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On days as large as the demo's: a profile's cohort context survives k = 5 there (on the
    module's 300-user days almost every profile gives it up, and none joins a cohort)."""
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    generate(tmp_path / "data", start=date(2026, 11, 1), days=2, users=3000, seed=5)
    for day in PUBLISHED[:2]:
        assert run_all(day, config)[1], day
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_on_cohort_features.py"),
         "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PRIVACY_PIPELINE_TEST_KEY": TEST_KEY_TEXT}, check=True).stdout
    trained = int(out.split("trained on ")[1].split(" profiles")[0].replace(",", ""))
    without = int(out.split("profiles; ")[1].split(" without")[0].replace(",", ""))
    assert trained > 100 and without > 100 and "p_top_interest_is_news" in out


def _lost(kind: str, raw: Path) -> None:
    """What the landing side may leave for a day that lost its input."""
    if kind == "renamed event_id":
        raw.write_text(raw.read_text().replace('"event_id"', '"evt_id"'))
    elif kind == "zero bytes":
        raw.write_bytes(b"")
    elif kind == "BOM only":
        raw.write_bytes(b"\xef\xbb\xbf")
    elif kind == "1 MB of NULs":
        raw.write_bytes(b"\0" * (1 << 20))
    elif kind == "symlink to a system file":
        raw.unlink()
        raw.symlink_to("/etc/passwd")


LOST = {"renamed event_id": ("2026-11-04", "guardrails"),
        "zero bytes": ("2026-11-05", "guardrails"),
        "BOM only": ("2026-11-06", "guardrails"),
        "1 MB of NULs": ("2026-11-07", "guardrails"),
        "symlink to a system file": ("2026-11-08", "check_input")}


@pytest.mark.parametrize("kind", list(LOST))
def test_when_a_day_lost_its_input_then_nothing_is_charged_published_or_served(
        days: dict, kind: str, capsys: pytest.CaptureFixture) -> None:
    day, stopped_at = LOST[kind]
    data, cfg = days["data"], days["cfg"]
    _lost(kind, _raw(data, day))
    ledger, online = _ledger(cfg), _online(cfg)
    code = main(["--config", str(days["config"]), "run", "--date", day])
    assert code == (4 if stopped_at == "guardrails" else 3)
    manifest = Manifest.model_validate_json((reports_of(data, day) / "manifest.json").read_text())
    assert not manifest.published
    assert manifest.outcomes[stopped_at].status == "failed"
    assert _ledger(cfg) == ledger  # no ε charged
    assert _online(cfg) == online  # Feast untouched
    for area in ("published/personalization", "features/cohort_daily"):
        assert not (data / area / f"date={day}").exists(), area
    assert not (records_of(data, day) / "publish.json").exists()
    out = capsys.readouterr().out
    assert "k None" not in out and "None / None" not in (data / "reports" / "personalization"
                                                          / "index.html").read_text()
    if stopped_at == "guardrails":
        guard = GuardrailRecord.model_validate_json(
            (records_of(data, day) / "guardrails.json").read_text())
        assert guard.breached and manifest.guardrails == guard
        html = (reports_of(data, day) / "report.html").read_text()
        assert "input guardrail breached" in html and "<h2>Input guardrails</h2>" in html
        external = manifest.external_view().guardrails
        assert external.rows_in == 0 and all(c.measured is None for c in external.checks)
        assert [c.name for c in external.breached] == [c.name for c in guard.breached]
    else:  # refused before it ran: reported, but not a run of the audit history
        index = (data / "reports" / "personalization" / "index.html").read_text()
        assert "Refused before running" in index and day in index.split("Refused")[1]


def test_when_a_small_day_is_accepted_by_the_operator_then_it_publishes(days: dict) -> None:
    day, data, cfg = "2026-11-09", days["data"], days["cfg"]
    generate(data / "small", start=date(2026, 11, 9), days=1, users=300, seed=5)
    lines = _raw(data / "small", day).read_text().splitlines()
    raw = _raw(data, day)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text("\n".join(lines[: len(lines) // 5]) + "\n")  # a fifth of a normal day
    (raw.parent / "_SUCCESS").touch()
    ledger = _ledger(cfg)
    assert main(["--config", str(days["config"]), "run", "--date", day]) == 4
    guard = GuardrailRecord.model_validate_json(
        (records_of(data, day) / "guardrails.json").read_text())
    assert [c.name for c in guard.breached] == ["volume_vs_recent"]
    assert guard.baseline_dates == ["2026-11-03", "2026-11-02", "2026-11-01"]
    assert _ledger(cfg) == ledger
    assert main(["--config", str(days["config"]), "run", "--date", day,
                 "--accept-low-volume"]) == 0
    guard = GuardrailRecord.model_validate_json(
        (records_of(data, day) / "guardrails.json").read_text())
    assert guard.passed and [c.name for c in guard.accepted] == ["volume_vs_recent"]
    assert len(_ledger(cfg)) == len(ledger) + 1


def test_when_cli_input_is_wrong_then_exit_codes_say_which_kind(
        days: dict, capsys: pytest.CaptureFixture) -> None:
    config = str(days["config"])
    with pytest.raises(SystemExit) as usage:
        main(["--config", config, "run", "--date", "2099-01-01"])
    assert usage.value.code == 2
    assert main(["--config", config, "features", "Nowhere|25-34|mobile"]) == 6
    assert "not a cohort" in capsys.readouterr().err
    assert main(["--config", config, "features", COHORTS[0]]) == 0
    assert json.loads(capsys.readouterr().out)["cohort_id"] == [COHORTS[0]]
    assert main(["--config", str(Path(config).with_name("missing.yaml")), "ledger"]) == 5
    bad_key = {"PRIVACY_PIPELINE_TEST_KEY": "not-a-key"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in bad_key.items():
            mp.setenv(k, v)
        assert main(["--config", config, "run", "--date", "2026-11-03"]) == 5


def test_when_features_are_planned_then_days_that_failed_or_were_accepted_are_skipped(
        days: dict, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["--config", str(days["config"]), "plan-features"]) == 0
    out = capsys.readouterr().out
    # 11-04..11-08 lost their input, 11-09 was accepted as small: neither sizes a normal day
    assert "from the release of 2026-11-03 (passed the input guardrails)" in out
    assert "at most 1.03" in out
