"""`distinct_categories_per_user`: how widely a cohort's users browse, as a DP mean of each
user's number of distinct categories. The registry's proof that a DP feature is one module."""

import polars as pl
import pytest

from pipeline.config import PipelineConfig
from pipeline.transforms.feature_plan import plan
from pipeline.transforms.features import release_features

SHARES = {"active_users": {"budget_share": 0.2}, "category_votes": {"budget_share": 0.5},
          "distinct_categories_per_user": {"budget_share": 0.3}}


def _events(users: int, categories_each: int, cats: tuple[str, ...]) -> pl.DataFrame:
    """`users` users in Texas|25-34|mobile, each with 3 events in each of `categories_each`
    categories (and one category outside the grid's, which does not count)."""
    rows = []
    for u in range(users):
        for c in (*cats[:categories_each], "not-a-category"):
            rows += [{"user_pseudonym": f"u{u}", "region": "Texas", "age_band": "25-34",
                      "device_type": "mobile", "content_category": c, "event_type": "view",
                      "session_seconds": 60}] * 3
    return pl.DataFrame(rows)


def test_when_users_browse_three_categories_then_the_released_mean_is_three(
        cfg: PipelineConfig) -> None:
    fcfg = cfg.features.model_validate({**cfg.features.model_dump(), "epsilon": 2.0,
                                        "features": SHARES})
    release, stats = release_features(
        _events(400, 3, fcfg.categories), fcfg, age_bands=cfg.generalize.age_bands,
        user_col="user_pseudonym", release_date="2026-11-01")
    row = release.table.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    value, bound = row["distinct_categories_per_user"], row["distinct_categories_per_user_error95"]
    # 400 users: the mean is within a fraction of one (twice the 95% bound: Laplace noise
    # exceeds it in 1 release of 400, so the test is not flaky)
    assert abs(value - 3) <= 2 * bound and bound < 0.5
    assert row["distinct_categories_per_user_shrunk"] == pytest.approx(value, abs=2 * bound)
    errors = {e.feature: e for e in stats.details.errors}  # type: ignore[attr-defined]
    assert errors["distinct_categories_per_user"].label == "distinct categories per user"
    # its share of ε: the sum's scale is (hi - lo) / (0.3 ε), hi - lo = the 8 categories
    assert stats.details.budget_shares["distinct_categories_per_user"] == 0.3  # type: ignore[attr-defined]


def test_when_a_user_has_many_categories_then_their_count_is_clipped_to_the_grid(
        cfg: PipelineConfig) -> None:
    from pipeline.transforms.features import bound_contributions

    fcfg = cfg.features.model_validate({**cfg.features.model_dump(), "features": SHARES})
    bounded = bound_contributions(_events(2, 8, fcfg.categories), fcfg,
                                  user_col="user_pseudonym", seed=1)
    n = len(fcfg.categories)  # 8 of 8 categories, the unknown one not counted: 2·8 - (0+8)
    assert bounded["distinct_categories_per_user_centred"].to_list() == [2 * n - n] * 2


def test_when_planned_then_the_new_feature_has_its_row(cfg: PipelineConfig) -> None:
    fcfg = cfg.features.model_validate({**cfg.features.model_dump(), "features": SHARES})
    rows = {r.feature: r for r in plan(fcfg, users=30, age_bands=7, target=0.5)}
    row = rows["distinct_categories_per_user"]
    assert row.label == "distinct categories per user" and row.error95 > 0
