"""DP features are registered parts: the release, the planner, Feast and config follow the
registry, and the budget weights are normalised by one accountant."""

import polars as pl
import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.core.errors import ConfigError
from pipeline.features import REGISTRY
from pipeline.features.accountant import ReleaseAccountant
from pipeline.ledger.budget import PureDP, RhoZCDP
from pipeline.transforms.features import Release, release_features
from tests.transforms.test_features import _events


def test_when_weights_do_not_add_up_to_one_then_the_accountant_normalises_them() -> None:
    acc = ReleaseAccountant(PureDP(2.0))
    a = acc.request_budget(weight=1)
    with acc.scope(weight=3):  # three statistics share one feature's weight
        parts = [acc.request_budget() for _ in range(3)]
    acc.compute_budgets()
    assert a.budget == PureDP(0.5)
    assert [p.budget for p in parts] == [PureDP(0.5)] * 3
    assert sum((p.budget for p in [a, *parts]), PureDP(0.0)) == PureDP(2.0)


def test_when_shares_add_up_to_one_then_each_part_is_exactly_budget_times_share() -> None:
    acc = ReleaseAccountant(RhoZCDP(0.7))
    reqs = [acc.request_budget(weight=w) for w in (0.15, 0.6, 0.15, 0.1)]
    acc.compute_budgets()
    assert [r.budget for r in reqs] == [RhoZCDP(0.7 * w) for w in (0.15, 0.6, 0.15, 0.1)]


def test_when_budgets_are_read_before_they_are_computed_then_it_says_so() -> None:
    acc = ReleaseAccountant(PureDP(1.0))
    request = acc.request_budget(weight=0.5)
    with pytest.raises(RuntimeError, match="compute_budgets"):
        _ = request.budget


def test_when_every_feature_is_on_then_the_release_publishes_exactly_the_declared_columns(
        cfg: PipelineConfig) -> None:
    shares = {name: {"budget_share": 1 / len(REGISTRY)} for name in REGISTRY}
    fcfg = cfg.features.model_validate({**cfg.features.model_dump(), "features": shares})
    release = Release.of(fcfg)
    table, _ = release_features(_events(cfg), fcfg, age_bands=cfg.generalize.age_bands,
                                user_col="user_pseudonym", release_date="2026-11-01")
    declared = [c.name for c in release.columns()]
    assert table.table.columns[6:] == declared  # after cohort id, dimensions and dates
    assert set(release.values()) <= set(declared)
    for f, spec, _ in release.each():
        assert set(f.error_columns(spec, release.grid)) <= set(declared), f.name
    dtypes = {"int": pl.Int64, "bool": pl.Boolean, "float": pl.Float64}
    for c in release.columns():
        assert table.table.schema[c.name] == dtypes[c.dtype], c.name
        assert c.description, c.name


def test_when_the_feature_store_schema_is_built_then_it_follows_the_registry(
        cfg: PipelineConfig) -> None:
    from pipeline.outputs.feast import feature_definitions

    _, view, serving = feature_definitions(cfg)
    fields = {f.name: f for f in view.schema}
    assert {c.name for c in Release.of(cfg.features).columns()} == (
        set(fields) - {"region", "age_band", "device_type"})
    assert all(f.description for f in fields.values())


def test_when_the_planner_runs_then_it_names_every_enabled_feature_once(
        cfg: PipelineConfig) -> None:
    from pipeline.transforms.feature_plan import plan

    rows = plan(cfg.features, users=50, age_bands=7, target=0.5)
    assert [r.feature for r in rows] == list(cfg.features.features.enabled())
    assert [r.label for r in rows] == [REGISTRY[r.feature].label for r in rows]


def test_when_config_names_a_feature_nobody_registered_then_load_fails_naming_it(
        config_path, tmp_path) -> None:  # noqa: ANN001
    import yaml

    doc = yaml.safe_load(config_path.read_text())
    doc["features"]["features"]["median_basket"] = {"budget_share": 0.1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="median_basket"):
        load_config(bad)
