"""Two purposes on one day: each publishes only what its purpose file allows, under its own
paths, keys and records, and neither run touches the other's files."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.run import run_all
from tests.conftest import generated_day, write_config

DAY = date(2026, 11, 1)
SHARED = ("raw/", "ledger/", "feature_repo/", "keys/", ".locks/", "audit_log/")  # shared stores


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_when_two_purposes_run_then_each_writes_only_under_its_own_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=400, seed=8)
    analytics = write_config(tmp_path, purpose="analytics")
    assert run_all(DAY, config)[1]
    before = _digests(data)
    ctx, published = run_all(DAY, analytics)
    assert published
    # analytics releases no features: its monitor never reads personalization's release,
    # though both configs name the feature set alike
    monitor = json.loads((data / "runs" / "analytics" / f"date={DAY}" / "monitor.json")
                         .read_text())
    assert monitor["disparity"] is None
    assert monitor["features_note"] == "purpose analytics releases no features"
    after = _digests(data)
    changed = {p for p in after if before.get(p) != after[p]}
    # Nothing of personalization's changed; everything new is under analytics or shared.
    assert not [p for p in changed if "personalization" in p or "cohort_daily" in p]
    assert not [p for p in changed if "analytics" not in p and not p.startswith(SHARED)]

    counts = pl.read_parquet(data / "published" / "analytics" / f"date={DAY}" / "part.parquet")
    spec = load_config(analytics).purpose_spec
    assert counts.columns == list(spec.columns) and counts.height > 0
    assert counts["users"].min() >= 10  # k of config/analytics.yaml
    stats = ctx.records(DAY).stats()["minimize"]
    assert stats.rows_out == counts["events"].sum()  # the funnel counts events in groups
    assert ctx.records(DAY).outcomes()["publish"].status == "succeeded"
    assert not (data / "features" / "analytics").exists()
