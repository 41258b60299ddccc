"""A failed validation blocks the DP release and publishing; the report says why."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.core.context import RunContext
from pipeline.core.errors import ValidationFailedError
from pipeline.demo.generate import generate
from pipeline.run import execute
from pipeline.stages import DAILY
from tests.conftest import TEST_KEY_TEXT, reports_of, write_config

DAY = date(2026, 11, 1)
LEAK = "leaked.reviewer.test@example.com"


@pytest.mark.slow
def test_when_validation_fails_then_nothing_is_released_or_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    ctx = RunContext(load_config(write_config(tmp_path)))
    generate(ctx.root, start=DAY, users=250, seed=5)
    for stage in DAILY[:DAILY.index("validate")]:  # up to the pending (unvalidated) table
        execute(ctx, stage, DAY)
    zone = ctx.zone("pending")
    tampered = ctx.storage.read(zone, DAY).with_columns(
        top_category=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(LEAK))
        .otherwise("top_category"))
    ctx.storage.write(zone, DAY, tampered)

    with pytest.raises(ValidationFailedError, match="hold_no_pii_shape"):
        execute(ctx, "validate", DAY)
    for stage in ("features", "publish"):
        with pytest.raises(ValidationFailedError, match="refusing"):
            execute(ctx, stage, DAY)
    execute(ctx, "report", DAY)

    manifest = json.loads((reports_of(ctx.root, DAY) / "manifest.json").read_text())
    assert manifest["published"] is False and manifest["validation"]["success"] is False
    assert not ctx.storage.partition(ctx.zone("published"), DAY).exists()  # never promoted
    assert not (ctx.root / "ledger").exists() and not (ctx.root / "feature_repo").exists()
    html = (reports_of(ctx.root, DAY) / "report.html").read_text()
    assert "NOT published" in html and "expect_column_values_to_hold_no_pii_shape" in html
    for path in (ctx.root / "validation").rglob("*"):
        assert not path.is_file() or LEAK.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_when_a_later_day_fails_validation_then_the_previous_features_stay_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.outputs.feast import online_features
    from pipeline.run import run_all

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    ctx = RunContext(load_config(config))
    generate(ctx.root, start=DAY, days=2, users=250, seed=5)
    _, published = run_all(DAY, config)
    assert published
    cohorts = [f"{r}|25-34|mobile" for r in ctx.cfg.features.regions[:3]]
    served = online_features(ctx.cfg, cohorts)

    day2 = date(2026, 11, 2)
    for stage in DAILY[:DAILY.index("validate")]:  # up to the pending (unvalidated) table
        execute(ctx, stage, day2)
    zone = ctx.zone("pending")
    ctx.storage.write(zone, day2, ctx.storage.read(zone, day2).with_columns(
        content_category=pl.lit(LEAK)))
    with pytest.raises(ValidationFailedError):
        execute(ctx, "validate", day2)
    for stage in ("features", "publish"):
        with pytest.raises(ValidationFailedError):
            execute(ctx, stage, day2)
    assert online_features(ctx.cfg, cohorts) == served
    assert not ctx.storage.partition(ctx.zone("features"), day2).exists()
    assert not ctx.storage.partition(ctx.zone("published"), day2).exists()  # never promoted
