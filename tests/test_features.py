import polars as pl

from pipeline.config import PipelineConfig
from pipeline.features import bound_contributions, cohort_keys, release_features


def _events(cfg: PipelineConfig) -> pl.DataFrame:
    heavy = {"user_pseudonym": ["heavy"] * 10_000, "region": ["Texas"] * 10_000,
             "age_band": ["25-34"] * 10_000, "device_type": ["mobile"] * 5000 + ["desktop"] * 5000,
             "content_category": ["news"] * 10_000, "session_seconds": [100_000] * 10_000}
    light = {"user_pseudonym": [f"u{i}" for i in range(200)], "region": ["Texas"] * 200,
             "age_band": ["25-34"] * 200, "device_type": ["mobile"] * 200,
             "content_category": ["news"] * 200, "session_seconds": [60] * 200}
    return pl.concat([pl.DataFrame(heavy), pl.DataFrame(light)])


def test_when_a_user_has_10000_events_then_contribution_is_bounded(cfg: PipelineConfig) -> None:
    bounded = bound_contributions(_events(cfg), cfg.features, user_col="user_pseudonym", seed=1)
    heavy = bounded.filter(pl.col("user_pseudonym") == "heavy")
    assert heavy.height == cfg.features.max_cohorts_per_user
    assert heavy["events_news"].max() == cfg.features.max_events_per_category
    assert heavy["session_mean"].max() == cfg.features.session_seconds_bounds[1]


def test_when_released_then_every_public_cohort_is_present_with_error_bounds(
        cfg: PipelineConfig) -> None:
    release, stats = release_features(_events(cfg), cfg.features,
                                      age_bands=cfg.generalize.age_bands,
                                      user_col="user_pseudonym", release_date="2026-11-01")
    t = release.table
    f = cfg.features
    assert t.height == len(f.regions) * len(cfg.generalize.age_bands) * len(f.device_types)
    row = t.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    assert abs(row["active_users"] - 200) < 5 * row["active_users_error95"]
    assert row["active_users_error95"] > 0 and (t["active_users"] >= 0).all()
    assert stats.details["epsilon"] == f.epsilon


def test_when_data_holds_cells_and_values_outside_config_then_keys_still_come_from_config(
        cfg: PipelineConfig) -> None:
    """DP compatibility of generalization: the cohort keys are the config grid, whatever H3
    cells, regions or widened age bands the data holds; a user's row outside the grid does not
    take the place of their cohort inside it."""
    n = 300
    inside = {"user_pseudonym": [f"u{i}" for i in range(n)], "region": ["Texas"] * n,
              "age_band": ["25-34"] * n, "device_type": ["mobile"] * n,
              "h3_cell": [f"88{i:013x}" for i in range(n)],
              "content_category": ["news"] * n, "session_seconds": [60] * n}
    # The same users again with an age band widened by k-anonymity, and in an unserved place.
    widened = {**inside, "age_band": ["18-34"] * n}
    elsewhere = {**inside, "region": ["Nevada"] * n}
    events = pl.concat([pl.DataFrame(d) for d in (inside, widened, elsewhere)])
    release, stats = release_features(events, cfg.features, age_bands=cfg.generalize.age_bands,
                                      user_col="user_pseudonym", release_date="2026-11-01")
    expected = cohort_keys(cfg.features, cfg.generalize.age_bands)
    assert release.table.select("region", "age_band", "device_type").sort(
        pl.all()).equals(expected.sort(pl.all()))
    assert "h3_cell" not in release.table.columns
    assert stats.details["users_in_public_cohorts"] == n  # every user counted in Texas|25-34
    row = release.table.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    assert abs(row["active_users"] - n) < 5 * row["active_users_error95"]
