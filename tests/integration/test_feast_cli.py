"""The feature repo a run leaves is a real Feast repo: the `feast` CLI plans and applies it
without deleting what a publish registered, and the registry carries what a consumer must know
(each field's description, the DP guarantee, mechanism, privacy unit and ledger chain, a
feature service of the values to serve)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.outputs.feast import feature_repo_dir, online_features, open_store
from pipeline.run import run_all
from pipeline.transforms.features import Release
from tests.conftest import generated_day

pytestmark = pytest.mark.slow
FEAST = Path(sys.executable).parent / "feast"


def _feast(repo: Path, *args: str) -> str:
    done = subprocess.run([str(FEAST), *args], cwd=repo, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_when_feast_plans_and_applies_the_repo_then_nothing_is_lost_and_tags_read_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = generated_day(tmp_path, monkeypatch, users=300, seed=4)
    _, published = run_all("2026-11-01", config)
    assert published
    cfg = load_config(config)
    repo = feature_repo_dir(cfg)
    plan = _feast(repo, "plan")
    assert "Deleted" not in plan and "No changes to registry" in plan, plan
    assert "No changes to infrastructure" in plan, plan
    _feast(repo, "apply")  # the habitual apply keeps everything a publish registered
    assert "Deleted" not in _feast(repo, "plan")

    store = open_store(cfg)
    view = store.get_feature_view("cohort_daily")
    tags = view.tags
    assert tags["privacy.epsilon_per_release"] == "1"
    assert tags["privacy.delta_per_release"] == "0"
    assert tags["privacy.mechanism"] == ("OpenDP Polars: integer Laplace, pure DP, user-level, "
                                         "public cohort keys")
    assert tags["privacy.unit"] == "user (pseudonym), up to 1 cohort(s) per day"
    assert tags["privacy.feature_set"] == "cohort_daily"
    assert tags["privacy.ledger_chain"].startswith("purpose personalization in ")
    assert all(f.description for f in view.features), [f.name for f in view.features
                                                       if not f.description]
    service = store.get_feature_service("cohort_daily_serving")
    [projection] = service.feature_view_projections
    assert [f.name for f in projection.features] == Release.of(cfg.features).to_serve()
    assert service.tags["privacy.epsilon_per_release"] == "1"
    # serving still answers after the CLI's apply
    cohort = f"{cfg.features.regions[1]}|25-34|mobile"
    values = online_features(cfg, [cohort])
    assert values["cohort_id"] == [cohort]
    described = _feast(repo, "feature-views", "describe", "cohort_daily")
    assert "privacy.mechanism" in described
