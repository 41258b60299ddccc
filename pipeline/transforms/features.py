"""User-level differentially private cohort features with OpenDP: the release engine.

The features themselves are registered parts (`pipeline.features`): each says what one user
contributes, which OpenDP statistics it adds, how its noisy values are published and how
accurate they should be. This module runs them as one release.

The privacy unit is a pseudonymous user, however many events they have. Each user's data is
first reduced, in Polars, to at most `max_cohorts_per_user` rows (cohorts picked in a
pseudo-random order seeded by the release date, never by activity, so the choice depends only on
that user's own rows), each holding every feature's per-user contribution clipped to its public
bounds. OpenDP then releases, per cohort, every feature's statistics in one measurement, each
with its part of the release's budget (the features' `budget_share` weights, normalised by one
`ReleaseAccountant`); a feature whose rows are not one per (user, cohort), such as the category
votes, is its own measurement. Rates and means divide by the noisy user count (post-processing,
no extra budget). `privacy: pure` draws Laplace noise (ε-DP); `privacy: zcdp` Gaussian noise
(ρ-zCDP), whose error grows with the square root of the number of cohorts a user may touch
rather than linearly.

Every released value comes with its noise scale, a 95% error bound (OpenDP's
`summarize(alpha=0.05)`; for rates, means and shares a first-order bound from the noisy values
they divide) and an `_unreliable` flag. Rates, means and shares are also published shrunk toward
their parent cohort (`shrink_toward`, `pipeline.transforms.shrinkage`). Their `_unreliable` flag
is on the shrunk estimate (its 95% interval wider than the estimate); counts flag the raw value.

With `cohorts: config` the keys (region × age band × device type) come from config and are
public; cohorts absent from the data are still released (as noise), and data outside the keys is
never revealed, nor are the H3 cells or wider bands k-anonymity fell back on. With `cohorts:
private` OpenDP keeps only cohorts whose noisy user count clears a threshold chosen so that one
user reveals a cohort with probability at most `delta`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from types import SimpleNamespace
from typing import Any, cast

import polars as pl

from pipeline.config import FeaturesConfig
from pipeline.core.details import FeatureErrorDetail, FeaturesDetails
from pipeline.core.errors import BudgetExceededError
from pipeline.core.records import StageStats
from pipeline.features import REGISTRY, DPFeature, Grid
from pipeline.features.accountant import ReleaseAccountant
from pipeline.features.base import (
    DIMENSIONS,
    MAX_ROWS_BOUND,
    Collector,
    Column,
    Noise,
    Statistic,
    Variation,
)
from pipeline.features.category_votes import vote_rows as _vote_rows
from pipeline.ledger.budget import PrivacyBudget, RhoZCDP, ledger_epsilon
from pipeline.transforms.opendp_api import opendp_api
from pipeline.transforms.shrinkage import shrink

__all__ = ["DIMENSIONS", "MAX_ROWS_BOUND", "FeatureRelease", "Release", "bound_contributions",
           "bounded_shard", "cohort_keys", "release_features", "release_from_bounded",
           "release_from_shards", "released_columns",
           "vote_rows"]


@dataclass(frozen=True)
class FeatureRelease:
    table: pl.DataFrame
    budget: PrivacyBudget  # as planned: ε or ρ (`delta` is what private selection added)
    delta: float
    mechanism: str
    library: str

    @property
    def epsilon(self) -> float | None:
        """The ledger's ε column: None for a zCDP release."""
        return ledger_epsilon(self.budget)

    @property
    def rho(self) -> float:
        """The ledger's ρ column: the cost in zCDP (ε²/2 for a pure release)."""
        return self.budget.to(RhoZCDP).rho


@dataclass(frozen=True)
class Release:
    """The enabled features of a config, with their specs and budget parts."""

    cfg: FeaturesConfig
    grid: Grid
    features: dict[str, tuple[DPFeature, Any, list[PrivacyBudget]]]  # name -> (part, spec, parts)

    @classmethod
    def of(cls, cfg: FeaturesConfig) -> Release:
        """Every enabled feature asks the release's accountant for its parts; the accountant
        normalises their weights over the release's budget."""
        grid = Grid(categories=cfg.categories, per_user=cfg.max_cohorts_per_user,
                    mechanism=cfg.mechanism)
        acc = ReleaseAccountant(cfg.release_budget)
        asked = {name: (REGISTRY[name], spec, REGISTRY[name].request(spec, grid, acc))
                 for name, spec in cfg.features.enabled().items()}
        acc.compute_budgets()
        return cls(cfg, grid, {name: (f, spec, [r.budget for r in requests])
                               for name, (f, spec, requests) in asked.items()})

    def each(self) -> Iterable[tuple[DPFeature, Any, list[PrivacyBudget]]]:
        return self.features.values()

    def statistics(self) -> list[Statistic]:
        """The main measurement's statistics, feature by feature."""
        return [s for f, spec, parts in self.each()
                for s in f.statistics(spec, self.grid, parts)]

    def ordered(self) -> list[tuple[DPFeature, Any, list[PrivacyBudget]]]:
        """Counts, then averages, then shares (registry order within each)."""
        return sorted(self.each(), key=lambda fsp: fsp[0].group)

    def columns(self) -> list[Column]:
        """Every published feature column, in order."""
        return [c for f, spec, _ in self.ordered() for c in f.columns(spec, self.grid)]

    def values(self) -> list[str]:
        """The columns holding feature values (no noise scales, bounds or flags)."""
        return [v for f, spec, _ in self.ordered() for v in f.values(spec, self.grid)]

    def variation(self) -> dict[str, Variation]:
        """Each value column and how it varies from day to day without drift."""
        return {v: f.varies_as() for f, spec, _ in self.ordered()
                for v in f.values(spec, self.grid)}

    def to_serve(self) -> list[str]:
        """The value to serve of each feature: its shrunk estimate where it has one (rates,
        means and shares: the README's "value to use"), else the released value."""
        names = {c.name for c in self.columns()}
        return [f"{v}_shrunk" if f"{v}_shrunk" in names else v for v in self.values()]

    def errors(self, users: float, accuracy: Any) -> list[tuple[DPFeature, float, float]]:
        """Each feature's (95% error, relative error) at `users` per cohort."""
        return [(f, *f.expected_error(spec, self.grid, parts, users, accuracy))
                for f, spec, parts in self.each()]


def cohort_keys(cfg: FeaturesConfig, age_bands: tuple[str, ...]) -> pl.DataFrame:
    """The public cohort grid, from config only."""
    rows = list(itertools.product(cfg.regions, age_bands, cfg.device_types))
    return pl.DataFrame(rows, schema=list(DIMENSIONS), orient="row")


def released_columns(cfg: FeaturesConfig) -> list[str]:
    """Per count: the value, its noise scale, 95% error bound and unreliable flag; per rate,
    mean or share, also its shrunk estimate and standard error."""
    return [c.name for c in Release.of(cfg).columns()]


def bound_contributions(events: pl.DataFrame, cfg: FeaturesConfig, *, user_col: str,
                        seed: int) -> pl.DataFrame:
    """One row per (user, cohort), at most `max_cohorts_per_user` per user, each feature's
    per-user contribution clipped to its bounds."""
    release = Release.of(cfg)
    aggs = [e for f, spec, _ in release.each() for e in f.per_user(spec, release.grid)]
    per_cohort = events.group_by(user_col, *DIMENSIONS).agg(aggs)
    order = pl.concat_str(pl.col(user_col), *DIMENSIONS, separator="|").hash(seed=seed)
    return (per_cohort.with_columns(_order=order)
            .with_columns(_rank=pl.col("_order").rank("ordinal").over(user_col))
            .filter(pl.col("_rank") <= cfg.max_cohorts_per_user)
            .drop("_order", "_rank"))


def vote_rows(bounded: pl.DataFrame, cfg: FeaturesConfig, *, user_col: str, seed: int
              ) -> pl.DataFrame:
    """`pipeline.features.category_votes.vote_rows` for a config's category votes."""
    spec = cfg.features.enabled()["category_votes"]
    return _vote_rows(bounded, votes=spec.votes_per_user,  # type: ignore[attr-defined]
                      categories=cfg.categories, user_col=user_col, seed=seed)


def _aggregations(cfg: FeaturesConfig) -> list[tuple[pl.Expr, str, float]]:
    """(OpenDP aggregation, column, noise scale) of every statistic of the main measurement.

    A user is in at most `max_cohorts_per_user` (k) rows, one per cohort, so a statistic whose
    rows lie in [-B, B] moves by k·B in L1 (Laplace: scale = k·B / ε) and by √k·B in L2
    (Gaussian: scale = √k·B / √(2ρ)), ε or ρ being the statistic's part of the release.
    """
    import opendp.extras.polars  # noqa: F401  (registers the `.dp` expression namespace)

    return [(s.query(s.scale).alias(s.column), s.column, s.scale)
            for s in Release.of(cfg).statistics()]


def _measurement(dp: SimpleNamespace, bounded: pl.LazyFrame, cfg: FeaturesConfig,
                 keys: pl.DataFrame | None, aggs: list[tuple[pl.Expr, str, float]]
                 ) -> tuple[Any, Any]:
    """One OpenDP measurement for the release's statistics, and the privacy unit's distance.

    The scales are fixed by `_aggregations`: OpenDP's Context would search for them, building
    the measurement ~1,000 times per query (seconds each release). For private cohorts, the
    threshold is the smallest that keeps δ within `cfg.delta` (each build takes milliseconds).
    """
    k = cfg.max_cohorts_per_user
    unit, d_in = dp.unit_of(contributions=[
        dp.Bound(per_group=k), dp.Bound(by=list(DIMENSIONS), per_group=1, num_groups=k)])
    domain = dp.with_margin(dp.domain_of(bounded, infer=True),
                            dp.Margin(by=list(DIMENSIONS), max_length=MAX_ROWS_BOUND))
    measure = cfg.mechanism.measure(dp)
    # OpenDP ignores the plan's data but copies it on every build: plan over an empty frame.
    empty = pl.LazyFrame(schema=bounded.collect_schema())
    plan = empty.group_by(list(DIMENSIONS)).agg(expr for expr, _, _ in aggs)
    if keys is not None:
        plan = plan.join(keys.lazy(), on=list(DIMENSIONS), how="right")  # the keys, not the data's
        return dp.make_private_lazyframe(domain, unit, measure, plan, global_scale=1.0), d_in

    def build(threshold: int) -> Any:
        return dp.make_private_lazyframe(domain, unit, dp.approximate(measure), plan,
                                         global_scale=1.0, threshold=threshold)

    lo, hi = 1, 2  # δ falls as the threshold rises: find the least threshold within cfg.delta
    while build(hi).map(d_in)[1] > cfg.delta:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if build(mid).map(d_in)[1] <= cfg.delta else (mid, hi)
    return build(hi), d_in


def mechanism_of(cfg: FeaturesConfig) -> str:
    """The release's mechanism in words, as the ledger records it and Feast's tags say it."""
    kind = "private cohort selection" if cfg.cohorts == "private" else "public cohort keys"
    return f"OpenDP Polars: integer {cfg.mechanism.label}, user-level, {kind}"


def release_features(events: pl.DataFrame, cfg: FeaturesConfig, *, age_bands: tuple[str, ...],
                     user_col: str, release_date: str) -> tuple[FeatureRelease, StageStats]:
    """Draw one DP release from the events of its period. Callers must go through the ledger:
    never call this twice for the same release."""
    return release_from_shards([events], cfg, age_bands=age_bands, user_col=user_col,
                               release_date=release_date)


def release_from_shards(shards: Iterable[pl.DataFrame], cfg: FeaturesConfig, *,
                        age_bands: tuple[str, ...], user_col: str, release_date: str
                        ) -> tuple[FeatureRelease, StageStats]:
    """`release_features` over the period's events split by user (all of a user's rows in
    one shard): each shard is reduced to its users' bounded contributions (`bounded_shard`,
    at most `max_cohorts_per_user` rows each), which is per user and so exact; the
    measurements then run once on all of them, with the sensitivity the bounding
    guarantees."""
    return release_from_bounded(
        [bounded_shard(s, cfg, age_bands=age_bands, user_col=user_col,
                       release_date=release_date) for s in shards],
        cfg, age_bands=age_bands, user_col=user_col, release_date=release_date)


def release_from_bounded(parts: list[BoundedShard], cfg: FeaturesConfig, *,
                         age_bands: tuple[str, ...], user_col: str, release_date: str
                         ) -> tuple[FeatureRelease, StageStats]:
    """The release from every shard's bounded contributions (`bounded_shard`, run where the
    shards are)."""
    dp = opendp_api()
    seed = int(release_date.replace("-", ""))
    release = Release.of(cfg)
    keys = cohort_keys(cfg, age_bands) if cfg.cohorts == "config" else None
    bounded = _bounded(parts, release, user_col=user_col, seed=seed)
    noisy, noise, loss, delta = _measured(dp, bounded, release, keys)
    table = _table(_published(noisy, release, noise), release, release_date)
    out = FeatureRelease(
        table=table, budget=cfg.release_budget, delta=delta, mechanism=mechanism_of(cfg),
        library=f"opendp {dp.version}")
    stats = StageStats(stage="features", rows_in=bounded.rows_in, rows_out=table.height,
                       details=FeaturesDetails(
        feature_set=cfg.feature_set, period=cfg.period, privacy=cfg.privacy,
        epsilon=cfg.epsilon, rho=out.rho, delta=delta, accounted_by_opendp=loss,
        cohorts=cfg.cohorts,
        budget_shares={name: spec.budget_share for name, (_, spec, _) in
                       release.features.items()},
        privacy_unit=f"user ({user_col}), up to {cfg.max_cohorts_per_user} cohort(s) each",
        cohorts_released=table.height, users_counted=bounded.users,
        error95_active_users=noise.error95["active_users"],
        errors=expected_and_realized(table, release)))
    return out, stats


@dataclass
class Bounded:
    """Every shard's bounded contributions, without the user (the main measurement's rows),
    the features' own collected rows, and what went in."""

    main: pl.LazyFrame
    collectors: list[Collector]
    rows_in: int
    users: int


@dataclass(frozen=True)
class BoundedShard:
    """One shard's bounded contributions, without the user: the main measurement's rows and
    each collecting feature's (in `Release.each` order), and what went in. Exact, and never
    published: it is what the measurement reads, gathered from where the shards ran."""

    main: pl.DataFrame
    collectors: list[Collector]
    rows_in: int
    users: int


def bounded_shard(events: pl.DataFrame, cfg: FeaturesConfig, *, age_bands: tuple[str, ...],
                  user_col: str, release_date: str) -> BoundedShard:
    """One shard reduced to its users' bounded (cohort) rows: what a worker does."""
    seed = int(release_date.replace("-", ""))
    release = Release.of(cfg)
    keys = cohort_keys(cfg, age_bands) if cfg.cohorts == "config" else None
    collectors = _collectors(release, user_col=user_col, seed=seed)
    # Rows outside the public grid (a region not served, an age band widened for
    # k-anonymity) go first, so they never take the place of a user's cohort inside it.
    in_grid = (events.join(keys, on=list(DIMENSIONS), how="semi") if keys is not None
               else events.drop_nulls(list(DIMENSIONS)))
    bounded = bound_contributions(in_grid, cfg, user_col=user_col, seed=seed)
    for collector in collectors:
        collector.add(bounded)
    # Without the user, or what only a feature's own measurement reads (`_`-columns): the
    # measurement declares the bounds (k rows per user, one per cohort), which
    # `bound_contributions` guarantees, and reads no identifier.
    return BoundedShard(bounded.select(pl.exclude(user_col, "^_.*$")), collectors,
                        events.height, bounded.get_column(user_col).n_unique())


def _collectors(release: Release, *, user_col: str, seed: int) -> list[Collector]:
    return [c for f, spec, parts in release.each()
            if (c := f.collector(spec, release.grid, parts, user_col=user_col,
                                 seed=seed)) is not None]


def _bounded(parts: list[BoundedShard], release: Release, *, user_col: str, seed: int
             ) -> Bounded:
    """The shards' bounded rows as one (shards hold disjoint users: users add up)."""
    collectors = _collectors(release, user_col=user_col, seed=seed)
    for i, collector in enumerate(collectors):
        collector.merge([p.collectors[i] for p in parts])
    return Bounded(pl.concat([p.main for p in parts]).lazy() if parts else
                   pl.DataFrame().lazy(), collectors,
                   sum(p.rows_in for p in parts), sum(p.users for p in parts))


def _measured(dp: SimpleNamespace, bounded: Bounded, release: Release,
              keys: pl.DataFrame | None) -> tuple[pl.DataFrame, Noise, float, float]:
    """The release's measurements, drawn: the noisy statistics per cohort, their noise, and
    what OpenDP charged (loss and δ), which must be what the release planned."""
    cfg = release.cfg
    aggs = _aggregations(cfg)
    measurement, d_in = _measurement(dp, bounded.main, cfg, keys, aggs)
    spent = measurement.map(d_in)
    loss, delta = spent if cfg.cohorts == "private" else (spent, 0.0)
    noisy = cast(pl.LazyFrame, measurement(bounded.main)).collect()
    scale = {name: s for _, name, s in aggs}
    cohorts = noisy.select(DIMENSIONS)  # the config grid, or those private selection kept
    for collector in bounded.collectors:
        measured = collector.measure(dp, cohorts)
        loss += measured.loss
        scale.update(measured.scale)
        noisy = noisy.join(measured.table, on=list(DIMENSIONS), how="left")
    planned = cfg.release_budget.value
    if loss > planned * (1 + 1e-9) or delta > cfg.delta * (1 + 1e-9):
        raise BudgetExceededError(f"OpenDP accounts {loss}, δ={delta} for a release planned at "
                                  f"{planned}, δ={cfg.delta}: the scales are wrong; nothing "
                                  "was released")
    accuracy = cfg.mechanism.accuracy(dp)
    noise = Noise(scale, {name: accuracy(s, 0.05) for name, s in scale.items()},
                  cfg.mechanism)
    return noisy, noise, loss, float(delta)


def _table(published: pl.DataFrame, release: Release, release_date: str) -> pl.DataFrame:
    """The released table as Feast reads it: cohort id, dimensions, the day's date and
    timestamp (23:59:59 UTC: after every event of the day), then the features' columns."""
    ts = datetime.combine(datetime.fromisoformat(release_date).date(), time(23, 59, 59),
                          tzinfo=UTC)
    return (published
            .with_columns(cohort_id=pl.concat_str(*DIMENSIONS, separator="|"),
                          feature_date=pl.lit(ts.date()),
                          event_timestamp=pl.lit(ts).dt.cast_time_unit("us"))
            .select("cohort_id", *DIMENSIONS, "feature_date", "event_timestamp",
                    *(c.name for c in release.columns()))
            .sort("cohort_id"))


def _published(noisy: pl.DataFrame, release: Release, noise: Noise) -> pl.DataFrame:
    """Every feature's published columns from the noisy statistics (clipped counts, divided
    rates, means and shares, noise scales and 95% bounds), the shrunk estimates with their
    standard errors, then the `_unreliable` flags."""
    done = [f.released(spec, release.grid, noise) for f, spec, _ in release.each()]
    out = noisy.with_columns(c for r in done for c in r.columns)
    for r in done:
        for name, (weight, variance) in r.shrink.items():
            out = shrink(out, name, weight, variance, list(release.cfg.shrink_toward))
    return out.with_columns(f for r in done for f in r.flags)


def expected_and_realized(table: pl.DataFrame, release: Release) -> list[FeatureErrorDetail]:
    """Per feature: the planner's 95% error at this release's mean users per cohort (noisy
    counts: post-processing), next to the median of the release's own 95% bounds."""
    users = cast(float, table["active_users"].clip(0, None).mean() or 0.0)
    accuracy = release.grid.mechanism.accuracy(opendp_api())
    out = []
    for f, expected, _ in release.errors(users, accuracy):
        spec = release.features[f.name][1]
        bounds = f.error_columns(spec, release.grid)
        realized = table.select(pl.concat_list(bounds).explode().median()).item()
        out.append(FeatureErrorDetail(
            feature=f.name, label=f.label, expected_error95=round(expected, 6),
            median_error95=round(float(realized), 6) if realized is not None else None))
    return out
