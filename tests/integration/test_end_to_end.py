"""One generated day through every stage, then the questions a reviewer would ask."""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.demo.generate import generate
from pipeline.ledger.store import PrivacyLedger
from pipeline.outputs.feast import online_features, open_store
from pipeline.run import run_all
from tests.conftest import records_of, reports_of

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tests.conftest import TEST_KEY_TEXT, write_config

    tmp = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp, reports__pdf=True)  # the reviewer's bundle, PDFs included
    data = tmp / "data"
    generated = generate(data, start=date.fromisoformat(DAY), users=600, seed=11)
    log_file = data / "logs" / "e2e.log"
    log_file.parent.mkdir(parents=True)
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        ctx, published = run_all(DAY, config)
    finally:
        logging.getLogger().removeHandler(handler)
    yield {"ctx": ctx, "published": published, "config": config, "data": data,
           "generated": generated, "log_file": log_file}
    mp.undo()


def _raw_identifiers(path: Path) -> set[str]:
    values: set[str] = set()
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        for field in ("email", "phone", "name", "ip_address", "account_id", "device_id"):
            if isinstance(event.get(field), str):
                values.add(event[field])
    return values


def test_when_run_then_no_raw_identifier_appears_in_any_written_file(run: dict) -> None:
    raw = _raw_identifiers(run["generated"].event_files[0])
    assert len(raw) > 1000
    written = [p for p in run["data"].rglob("*") if p.is_file() and "raw" not in p.parts]
    assert any("online_store" in p.name for p in written)  # Feast's SQLite store is searched
    assert run["log_file"].stat().st_size > 0
    blobs = [p.read_bytes() for p in written]  # outputs, staging, Feast stores, reports, logs
    leaks = [v for v in raw if any(v.encode() in b for b in blobs)]
    assert leaks == []
    # Compressed Parquet hides values from a byte search: decode it too.
    from tests.conftest import readable_text

    texts = readable_text(written)
    assert sum(p.suffix == ".parquet" for p in written) >= 3
    assert [v for v in raw if any(v in t for t in texts)] == []


def test_when_run_then_rows_in_equal_out_plus_dropped_plus_quarantined(run: dict) -> None:
    manifest = json.loads((reports_of(run["data"], DAY) / "manifest.json").read_text())
    f = manifest["funnel"]
    assert f["rows_in"] == run["generated"].events
    assert f["rows_in"] == f["rows_out"] + sum(f["dropped"].values()) + sum(
        f["quarantined"].values())
    assert sum(f["quarantined"].values()) == run["generated"].malformed
    assert {"no_consent", "k_anonymity_suppressed", "duplicate_event"} <= set(f["dropped"])
    assert manifest["published"] and manifest["validation"]["success"]
    assert manifest["k_anonymity"]["k_achieved"] >= manifest["k_anonymity"]["k_required"]
    assert manifest["pii"]["found"]["EMAIL_ADDRESS"] > 0
    assert manifest["pseudonymization"]["key_id"] == "test-key-1"
    assert manifest["differential_privacy"]["epsilon"] == 1.0


def test_when_published_then_every_row_sits_in_a_group_of_at_least_k_users(run: dict) -> None:
    cfg = load_config(run["config"])
    table = pl.read_parquet(run["data"] / "published" / "personalization" / f"date={DAY}")
    sizes = table.group_by(list(cfg.purpose_spec.quasi_identifiers)).agg(
        pl.col("user_pseudonym").n_unique())
    assert sizes["user_pseudonym"].min() >= cfg.k_anonymity.k
    assert list(table.columns) == list(cfg.purpose_spec.columns)


def test_when_ml_team_reads_feast_then_features_come_back_online_and_offline(run: dict) -> None:
    cfg = load_config(run["config"])
    cohort = "California|25-34|mobile"
    online = online_features(cfg, [cohort], ["active_users", "share_news_shrunk",
                                             "active_users_error95"])
    assert online["cohort_id"] == [cohort] and online["active_users"][0] is not None
    assert online["active_users_error95"][0] > 0
    entity_df = pd.DataFrame({"cohort_id": [cohort],
                              "event_timestamp": [pd.Timestamp("2026-11-02", tz="UTC")]})
    hist = open_store(cfg).get_historical_features(
        entity_df=entity_df, features=["cohort_daily:active_users"]).to_df()
    assert hist["active_users"].iloc[0] == online["active_users"][0]


def test_when_date_is_rerun_then_outputs_are_identical_and_budget_charged_once(
        run: dict) -> None:
    features = run["data"] / "features" / "cohort_daily" / f"date={DAY}" / "part.parquet"
    published = run["data"] / "published" / "personalization" / f"date={DAY}" / "part.parquet"
    before = features.read_bytes(), published.read_bytes()
    _, again = run_all(DAY, run["config"])
    assert again
    assert (features.read_bytes(), published.read_bytes()) == before
    cfg = load_config(run["config"])
    ledger = PrivacyLedger(cfg.paths.local / cfg.budget.ledger_path)
    assert ledger.history("personalization") == [(DAY, "cohort_daily", 1.0, 0.5, 0.0)]
    ledger_json = json.loads((records_of(run["data"], DAY) / "ledger.json").read_text())
    assert ledger_json["reused_stored_release"] is True


def test_when_reviewer_opens_the_bundle_then_chromium_renders_it(run: dict) -> None:
    """Headless Debian Chromium renders the internal and external reports and the index; the
    screenshots are kept in `test-artifacts/` (or $TEST_ARTIFACTS_DIR) for a human to look at."""
    import os
    import shutil
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR",
                                    Path(__file__).resolve().parents[2] / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    reports = run["data"] / "reports" / "personalization"
    pages = {"report": reports / f"date={DAY}" / "report.html", "index": reports / "index.html",
             "external-report": reports / "external" / f"date={DAY}" / "report.html"}
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1280,1000"]
    for name, page in pages.items():
        dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True,
                             capture_output=True, text=True, timeout=120).stdout
        assert "<h1>" in dom and "</table>" in dom, name
        shot = artifacts / f"{name}.png"
        subprocess.run([chromium, *flags, f"--screenshot={shot}", page.as_uri()], check=True,
                       capture_output=True, timeout=120)
        assert shot.stat().st_size > 10_000, name
    index = pages["index"].read_text()
    assert "Privacy budget over time" in index and "Privacy health over time" in index
    # the scorecard's charts, as Chromium lays them out: every one drawn, none scripted
    dom = subprocess.run([chromium, *flags, "--dump-dom", pages["index"].as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    charts = dom.split('<figure class="chart"')[1:]
    assert len(charts) == 9, len(charts)  # the budget, then the scorecard's eight
    for chart in charts:
        assert "pygal-chart" in chart and ("<path" in chart or "<rect" in chart)
    for title in ("k and ℓ achieved", "PII found in free text, per type",
                  "Quarantine rate by reason", "Consent and withdrawals",
                  "Re-identification: share of people singled out",
                  "What privacy costs the worst group"):
        assert title in dom, title
    assert "<script" not in index
    # the run report's charts as Chromium lays them out, and its PDF
    dom = subprocess.run([chromium, *flags, "--dump-dom", pages["report"].as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    drawn = dom.split('<figure class="chart"')[1:]
    assert len(drawn) >= 4 and all("pygal-chart" in c for c in drawn), len(drawn)
    for title in ("Row funnel: where every raw line went", "PII replaced in free text",
                  "k-anonymity: rows per generalization level", "Privacy budget"):
        assert title in dom, title
    pdf = (pages["report"].parent / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type /Page[^s]", pdf)) >= 4
    # the Data Docs link is relative, and the docs load nothing from the network
    from pipeline.outputs.data_docs import remote_resources

    html = pages["report"].read_text()
    [docs] = re.findall(r'href="([^"]*data_docs/local_site/index.html)"', html)
    site = (pages["report"].parent / docs).resolve()
    assert not docs.startswith(("file:", "/")) and site.is_file()
    assert [p for p in site.parent.rglob("*.html") if remote_resources(p.read_text())] == []
    docs_dom = subprocess.run([chromium, *flags, "--dump-dom", site.as_uri()], check=True,
                              capture_output=True, text=True, timeout=120).stdout
    assert docs_dom.count("<tr") >= 2  # bootstrap-table drew the validation runs offline
    external = pages["external-report"].read_text()
    assert "test-key-1" not in external and str(run["data"]) not in external
