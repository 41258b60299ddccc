import numpy as np
import polars as pl
import pytest
import scipy.stats

from pipeline.config import EventCountsFeature, FeatureShare, FeatureSpecs, PipelineConfig
from pipeline.transforms.features import bound_contributions, cohort_keys, release_features


def _events(cfg: PipelineConfig) -> pl.DataFrame:
    n = 10_000
    heavy = {"user_pseudonym": ["heavy"] * n, "region": ["Texas"] * n,
             "age_band": ["25-34"] * n, "device_type": ["mobile"] * 5000 + ["desktop"] * 5000,
             "event_type": ["purchase"] * n, "content_category": ["news"] * n,
             "session_seconds": [100_000] * n}
    light = {"user_pseudonym": [f"u{i}" for i in range(200)], "region": ["Texas"] * 200,
             "age_band": ["25-34"] * 200, "device_type": ["mobile"] * 200,
             "event_type": ["purchase", "view"] * 100,
             "content_category": ["news"] * 200, "session_seconds": [60] * 200}
    return pl.concat([pl.DataFrame(heavy), pl.DataFrame(light)])


def test_when_a_user_has_10000_events_then_contribution_is_bounded(cfg: PipelineConfig) -> None:
    fcfg = cfg.features.model_copy(update={"features": cfg.features.features.model_copy(
        update={"events_per_category": EventCountsFeature(budget_share=0.1)})})
    f = fcfg.features
    assert f.events_per_category and f.mean_session_seconds
    bounded = bound_contributions(_events(cfg), fcfg, user_col="user_pseudonym", seed=1)
    heavy = bounded.filter(pl.col("user_pseudonym") == "heavy")
    assert heavy.height == cfg.features.max_cohorts_per_user
    assert heavy["events_news"].max() == f.events_per_category.max_per_user
    lo, hi = f.mean_session_seconds.bounds
    assert heavy["mean_session_seconds_centred"].max() == 2 * hi - (lo + hi)  # clipped at hi
    assert heavy["purchase_rate_centred"].max() == 1  # purchased: 2 * 1 - (0 + 1)


def test_when_released_then_every_public_cohort_has_each_feature_with_its_accuracy(
        cfg: PipelineConfig) -> None:
    release, stats = release_features(_events(cfg), cfg.features,
                                      age_bands=cfg.generalize.age_bands,
                                      user_col="user_pseudonym", release_date="2026-11-01")
    t = release.table
    f = cfg.features
    assert t.height == len(f.regions) * len(cfg.generalize.age_bands) * len(f.device_types)
    for feature in ("active_users", "share_news", "purchase_rate", "mean_session_seconds"):
        assert {f"{feature}_noise_scale", f"{feature}_error95", f"{feature}_unreliable"} <= set(
            t.columns)
    row = t.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    assert abs(row["active_users"] - 200) < 5 * row["active_users_error95"]
    assert abs(row["purchase_rate"] - 0.5) < 5 * row["purchase_rate_error95"]
    assert row["active_users_error95"] > 0 and (t["active_users"] >= 0).all()
    assert ((t["purchase_rate"] >= 0) & (t["purchase_rate"] <= 1)).all()
    # Cohorts with no data: the noise is the whole value, so they are flagged, except where
    # the noise happens to land above its own 95% bound (one-sided: ~2.5% of them).
    empty = t.filter(~pl.col("cohort_id").str.starts_with("Texas|25-34|"))
    assert empty.height > 200 and empty["active_users_unreliable"].mean() > 0.9
    # Budget shares: the user count got its share of epsilon, so its scale is 1 / (share eps).
    share = f.features.active_users.budget_share
    assert row["active_users_noise_scale"] == pytest.approx(1 / (share * f.epsilon), rel=1e-6)
    assert stats.details.epsilon == f.epsilon


def test_when_many_cohorts_are_released_then_noise_follows_the_declared_laplace(
        cfg: PipelineConfig) -> None:
    """Noise from the real release path matches a discrete Laplace of the declared scale.
    OpenDP draws from a cryptographic RNG that cannot be seeded, so this is a statistical test
    on ~4,000 draws at a level (1e-4) that fails by chance once in 10,000 runs."""
    regions = tuple(f"r{i}" for i in range(200))
    fcfg = cfg.features.model_copy(update={"regions": regions, "features": FeatureSpecs(
        active_users=FeatureShare(budget_share=1.0))})
    keys = cohort_keys(fcfg, cfg.generalize.age_bands)
    users = 40  # per cohort, so clipping at 0 never touches the noise
    events = keys.join(pl.DataFrame({"n": range(users)}), how="cross").with_columns(
        user_pseudonym=pl.concat_str("region", "age_band", "device_type", "n"),
        content_category=pl.lit("news"), event_type=pl.lit("view"),
        session_seconds=pl.lit(60))
    release, _ = release_features(events, fcfg, age_bands=cfg.generalize.age_bands,
                                  user_col="user_pseudonym", release_date="2026-11-01")
    noise = (release.table["active_users"] - users).to_numpy()
    scale = release.table["active_users_noise_scale"][0]
    assert scale == pytest.approx(1 / fcfg.epsilon)
    support = np.arange(-40, 41)
    # Discrete Laplace: P(x) proportional to exp(-|x| / scale).
    pmf = np.exp(-np.abs(support) / scale)
    pmf /= pmf.sum()
    observed = np.array([(noise == x).sum() for x in support])
    keep = pmf * len(noise) >= 5  # chi-square needs >= 5 expected per bin
    expected = pmf[keep] / pmf[keep].sum() * observed[keep].sum()
    assert len(noise) == keys.height and np.abs(noise).max() < 40
    assert scipy.stats.chisquare(observed[keep], expected).pvalue > 1e-4


def test_when_data_holds_cells_and_values_outside_config_then_keys_still_come_from_config(
        cfg: PipelineConfig) -> None:
    """DP compatibility of generalization: the cohort keys are the config grid, whatever H3
    cells, regions or widened age bands the data holds; a user's row outside the grid does not
    take the place of their cohort inside it."""
    n = 300
    inside = {"user_pseudonym": [f"u{i}" for i in range(n)], "region": ["Texas"] * n,
              "age_band": ["25-34"] * n, "device_type": ["mobile"] * n,
              "h3_cell": [f"88{i:013x}" for i in range(n)],
              "content_category": ["news"] * n, "session_seconds": [60] * n,
              "event_type": ["view"] * n}
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
    assert stats.details.users_counted == n  # every user counted in Texas|25-34
    row = release.table.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    assert abs(row["active_users"] - n) < 5 * row["active_users_error95"]


def _grid_events(cfg: PipelineConfig, users: int, regions: int = 200) -> tuple[pl.DataFrame,
                                                                             PipelineConfig]:
    """`users` distinct users in every cohort of a `regions`-region grid, one event each."""
    fcfg = cfg.features.model_copy(update={
        "regions": tuple(f"r{i}" for i in range(regions)),
        "features": FeatureSpecs(active_users=FeatureShare(budget_share=1.0))})
    keys = cohort_keys(fcfg, cfg.generalize.age_bands)
    events = keys.join(pl.DataFrame({"n": range(users)}), how="cross").with_columns(
        user_pseudonym=pl.concat_str("region", "age_band", "device_type", "n"),
        content_category=pl.lit("news"), event_type=pl.lit("view"), session_seconds=pl.lit(60))
    return events, cfg.model_copy(update={"features": fcfg})


def test_when_privacy_is_zcdp_then_noise_follows_the_declared_gaussian(
        cfg: PipelineConfig) -> None:
    """ρ-zCDP draws discrete Gaussian noise of scale √k / √(2ρ) (k cohorts per user), checked
    by a chi-square test on ~4,000 cohorts, as for Laplace above."""
    events, cfg = _grid_events(cfg, users=60)
    fcfg = cfg.features.model_copy(update={"privacy": "zcdp", "epsilon": None, "rho": 0.02,
                                           "max_cohorts_per_user": 2})
    release, stats = release_features(events, fcfg, age_bands=cfg.generalize.age_bands,
                                      user_col="user_pseudonym", release_date="2026-11-01")
    sigma = release.table["active_users_noise_scale"][0]
    assert sigma == pytest.approx(2 ** 0.5 / (2 * 0.02) ** 0.5)  # = 7.07
    assert (release.epsilon, release.rho, release.delta) == (None, 0.02, 0.0)
    assert stats.details.accounted_by_opendp == pytest.approx(0.02)
    assert "Gaussian" in release.mechanism
    noise = (release.table["active_users"] - 60).to_numpy()
    support = np.arange(-59, 60)
    pmf = np.exp(-support.astype(float) ** 2 / (2 * sigma ** 2))
    pmf /= pmf.sum()
    observed = np.array([(noise == x).sum() for x in support])
    keep = pmf * len(noise) >= 5
    expected = pmf[keep] / pmf[keep].sum() * observed[keep].sum()
    assert scipy.stats.chisquare(observed[keep], expected).pvalue > 1e-4
    error95 = release.table["active_users_error95"][0]
    # OpenDP rounds the bound up to an integer: it covers at least 95% (97.2% here).
    assert 0.955 < (np.abs(noise) <= error95).mean() < 0.99


def test_when_cohorts_are_private_then_only_cohorts_many_users_share_appear(
        cfg: PipelineConfig) -> None:
    """Private selection: cohorts come from the data but only clear a noisy threshold. A cohort
    one user makes (even with 10,000 events), or one absent from config, can only appear with
    probability δ; big cohorts, in config or not, do appear."""
    n = 400
    big = {"user_pseudonym": [f"u{i}" for i in range(n)], "region": ["Texas"] * n,
           "age_band": ["25-34"] * n, "device_type": ["mobile"] * n,
           "content_category": ["news"] * n, "session_seconds": [60] * n,
           "event_type": ["view"] * n}
    unserved = {**big, "user_pseudonym": [f"v{i}" for i in range(n)], "region": ["Nevada"] * n}
    lonely = {**{k: v[:1] * 10_000 for k, v in big.items()}, "user_pseudonym": ["w"] * 10_000,
              "region": ["Utah"] * 10_000}
    events = pl.concat([pl.DataFrame(d) for d in (big, unserved, lonely)])
    fcfg = cfg.features.model_copy(update={"cohorts": "private", "delta": 1e-7})
    release, stats = release_features(events, fcfg, age_bands=cfg.generalize.age_bands,
                                      user_col="user_pseudonym", release_date="2026-11-01")
    assert set(release.table["cohort_id"]) == {"Texas|25-34|mobile", "Nevada|25-34|mobile"}
    assert 0 < release.delta <= 1e-7
    assert "private cohort selection" in release.mechanism
    assert stats.details.accounted_by_opendp == pytest.approx(fcfg.epsilon)


def test_when_one_user_behaves_extremely_then_no_statistic_moves_more_than_its_sensitivity(
        cfg: PipelineConfig) -> None:
    """What OpenDP is told is what the bounding guarantees: adding the heaviest imaginable user
    moves each exact, pre-noise statistic by at most its stated sensitivity."""
    from pipeline.transforms.features import DIMENSIONS, vote_rows

    fcfg = cfg.features.model_copy(update={"max_cohorts_per_user": 2})
    f, k = fcfg.features, fcfg.max_cohorts_per_user
    assert f.category_votes and f.mean_session_seconds and f.purchase_rate
    m = f.category_votes.votes_per_user
    base = _events(cfg).filter(pl.col("user_pseudonym") != "heavy")
    n = 50_000  # one user in every cohort of Texas, every category, extreme values
    extreme = pl.DataFrame({
        "user_pseudonym": ["x"] * n, "region": ["Texas"] * n,
        "age_band": [cfg.generalize.age_bands[i % 7] for i in range(n)],
        "device_type": [fcfg.device_types[i % 3] for i in range(n)],
        "event_type": ["purchase"] * n,
        "content_category": [fcfg.categories[i % len(fcfg.categories)] for i in range(n)],
        "session_seconds": [10**9] * n})

    def exact(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        bounded = bound_contributions(events, fcfg, user_col="user_pseudonym", seed=3)
        stats = bounded.group_by(DIMENSIONS).agg(
            pl.len().alias("active_users"),
            *(pl.col(f"{r}_centred").sum().alias(r) for r in ("purchase_rate",
                                                              "mean_session_seconds")))
        votes = vote_rows(bounded, fcfg, user_col="user_pseudonym", seed=3).group_by(
            [*DIMENSIONS, "content_category"]).len()
        return stats, votes

    (s0, v0), (s1, v1) = exact(base), exact(pl.concat([base, extreme]))
    moved = s1.join(s0, on=DIMENSIONS, how="left", suffix="_0").fill_null(0)
    lo, hi = f.mean_session_seconds.bounds
    # Each row of a user is one cohort: a count moves by 1 per cohort, k in all (L1).
    assert (moved["active_users"] - moved["active_users_0"]).abs().sum() <= k
    assert (moved["purchase_rate"] - moved["purchase_rate_0"]).abs().max() <= 1
    assert (moved["mean_session_seconds"] - moved["mean_session_seconds_0"]).abs().max() \
        <= hi - lo
    # Votes: the whole histogram moves by at most k * M votes (k users' worth), in L1.
    dv = v1.join(v0, on=[*DIMENSIONS, "content_category"], how="left", suffix="_0").fill_null(0)
    assert (dv["len"] - dv["len_0"]).abs().sum() == k * m


def test_when_a_user_votes_then_exactly_m_votes_follow_their_mix(cfg: PipelineConfig) -> None:
    from pipeline.transforms.features import vote_rows

    fcfg = cfg.features
    m = fcfg.features.category_votes.votes_per_user
    users = [f"u{i}" for i in range(400)]
    mix = {"news": 6, "sports": 3, "music": 1}  # 60%, 30%, 10% of each user's events
    events = pl.DataFrame({
        "user_pseudonym": [u for u in users for c, n in mix.items() for _ in range(n)],
        "content_category": [c for _ in users for c, n in mix.items() for _ in range(n)]}
    ).with_columns(region=pl.lit("Texas"), age_band=pl.lit("25-34"), device_type=pl.lit("mobile"),
                   event_type=pl.lit("view"), session_seconds=pl.lit(60))
    bounded = bound_contributions(events, fcfg, user_col="user_pseudonym", seed=1)
    votes = vote_rows(bounded, fcfg, user_col="user_pseudonym", seed=1)
    per_user = votes.group_by("user_pseudonym").len()["len"]
    assert per_user.min() == per_user.max() == m
    per_user_cat = votes.group_by("user_pseudonym", "content_category").len()
    for cat, n in mix.items():  # each user: the floor or the ceiling of M x share
        got = per_user_cat.filter(pl.col("content_category") == cat)["len"]
        assert got.min() >= int(m * n / 10) and got.max() <= -(-m * n // 10)
        assert votes.filter(pl.col("content_category") == cat).height == m * n * 40


def test_when_a_sparse_cohort_is_released_then_its_share_borrows_from_its_parents(
        cfg: PipelineConfig) -> None:
    """A cohort of 3 users and one of 300 with the same taste: shrinking moves the small one's
    noisy share toward what its parents say, and the reader ranks by the shrunk value."""
    from pipeline.outputs.reader import category_scores

    rows = []
    for band, n in (("25-34", 300), ("35-44", 3)):
        for i in range(n):
            for cat, k in (("news", 7), ("sports", 3)):
                rows += [{"user_pseudonym": f"{band}-{i}", "region": "Texas", "age_band": band,
                          "device_type": "mobile", "content_category": cat,
                          "event_type": "view", "session_seconds": 60}] * k
    release, _ = release_features(pl.DataFrame(rows), cfg.features,
                                  age_bands=cfg.generalize.age_bands,
                                  user_col="user_pseudonym", release_date="2026-11-01")
    big = release.table.filter(pl.col("cohort_id") == "Texas|25-34|mobile").row(0, named=True)
    assert abs(big["share_news_shrunk"] - 0.7) < 0.1 and big["share_news_se"] < 0.1
    scores = category_scores(release.table, cfg.features.categories)
    assert scores.height == release.table.height * len(cfg.features.categories)
    assert set(scores.columns) == {"cohort_id", "category", "score", "se"}
    shrunk = release.table["share_news_shrunk"]
    assert shrunk.is_not_null().all() and ((shrunk >= -0.5) & (shrunk <= 1.5)).all()


def test_when_a_plan_misses_its_target_then_it_names_a_change_that_meets_it(
        cfg: PipelineConfig) -> None:
    from pipeline.transforms.feature_plan import feature_errors, plan

    fcfg = cfg.features
    rows = {r.feature: r for r in plan(fcfg, users=10, age_bands=7, target=0.5)}
    assert rows["active_users"].relative > 0.5 and "ε 1 -> " in rows["active_users"].fix
    # Ten times the users: errors of rates and shares fall tenfold; a count's stays.
    few, many = feature_errors(fcfg, 10), feature_errors(fcfg, 100)
    assert many["purchase_rate"][0] == pytest.approx(few["purchase_rate"][0] / 10)
    assert many["active_users"][0] == few["active_users"][0]
    assert all(r.fix == "" for r in plan(fcfg, users=10**6, age_bands=7, target=0.5))


def test_when_a_plan_would_need_more_budget_than_config_allows_then_it_never_suggests_it(
        cfg: PipelineConfig) -> None:
    import re

    from pipeline.transforms.feature_plan import max_release_budget, plan

    ceiling = max_release_budget(cfg.features, cfg.budget)
    assert ceiling.value == pytest.approx(min(
        cfg.budget.max_epsilon_per_release,
        cfg.budget.epsilon_per_window / cfg.budget.window_days))
    generous = cfg.budget.model_copy(update={"epsilon_per_window": 3000.0})
    assert max_release_budget(cfg.features, generous).value == \
        cfg.budget.max_epsilon_per_release
    for limit in (ceiling, cfg.budget.release_cap(cfg.features.mechanism)):
        # 3.4 users per cohort: the all-quarantined day's noise once made it suggest ε 34.4
        rows = plan(cfg.features, users=3.4, age_bands=7, target=0.5, max_budget=limit)
        suggested = [float(x) for r in rows for x in re.findall(r"(?<!need )ε 1 -> ([0-9.]+)",
                                                               r.fix)]
        assert all(x <= limit.value for x in suggested)
        assert any(f"over the {limit.value:.3g} config and the window allow" in r.fix
                   for r in rows)
