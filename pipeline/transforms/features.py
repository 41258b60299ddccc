"""User-level differentially private cohort features with OpenDP.

The privacy unit is a pseudonymous user, however many events they have. Each user's data is
first reduced, in Polars, to at most `max_cohorts_per_user` rows (cohorts picked in a
pseudo-random order seeded by the release date, never by activity, so the choice depends only on
that user's own rows): per-category event counts clipped, a purchase flag, and the user's own
mean session length clipped to its bounds. OpenDP then releases, per cohort, one statistic per
declared feature, each with its `budget_share` of the release: a noisy user count, noisy
per-category event sums, a noisy count of purchasers and a noisy sum of the users' mean
sessions. Rates and means divide by the noisy user count (post-processing, no extra budget).
`privacy: pure` draws Laplace noise (ε-DP); `privacy: zcdp` Gaussian noise (ρ-zCDP), whose
error grows with the square root of the number of cohorts a user may touch rather than linearly.

`category_votes` releases what personalization needs most, each cohort's category mix, at the
least cost: every user casts `votes_per_user` unit votes split over categories in proportion to
their events (largest remainder), so one user moves the whole histogram by one user's worth
(OpenDP charges the count by the per-user total, measured in `tests/transforms/test_features`)
and no budget is split per category. Shares are votes over the cohort's votes.

Every released value comes with its noise scale, a 95% error bound (OpenDP's
`summarize(alpha=0.05)`; for rates, means and shares a first-order bound from the noisy values
they divide) and an `_unreliable` flag. Rates, means and shares are also published shrunk toward
their parent cohort (`shrink_toward`: the cohorts sharing those dimensions, summed from the same
release, so parent and children are consistent by construction and no budget is spent): an
empirical-Bayes estimate (Efron and Morris) that weighs each cohort's noisy value against the
spread between cohorts, with its standard error (`_se`). Sparse cohorts borrow strength from
their parent; well-measured ones keep their own value. Their `_unreliable` flag is on the shrunk
estimate (its 95% interval wider than the estimate); counts flag the raw value.

With `cohorts: config` the keys (region × age band × device type) come from config and are
public; cohorts absent from the data are still released (as noise), and data outside the keys is
never revealed, nor are the H3 cells or wider bands k-anonymity fell back on. With `cohorts:
private` OpenDP keeps only cohorts whose noisy user count clears a threshold chosen so that one
user reveals a cohort with probability at most `delta`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import polars as pl

from pipeline.config import CategoryVotesFeature, FeaturesConfig
from pipeline.core.errors import BudgetExceededError
from pipeline.core.records import StageStats
from pipeline.ledger.budget import PrivacyBudget, RhoZCDP, ledger_epsilon
from pipeline.transforms.opendp_api import opendp_api

DIMENSIONS = ("region", "age_band", "device_type")
MAX_ROWS_BOUND = 1_000_000_000  # public bound on table length, for OpenDP's overflow checks


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


def cohort_keys(cfg: FeaturesConfig, age_bands: tuple[str, ...]) -> pl.DataFrame:
    """The public cohort grid, from config only."""
    rows = list(itertools.product(cfg.regions, age_bands, cfg.device_types))
    return pl.DataFrame(rows, schema=list(DIMENSIONS), orient="row")


def count_features(cfg: FeaturesConfig) -> list[str]:
    """Released integer features: noisy counts."""
    events = cfg.features.events_per_category
    return ["active_users", *((f"events_{c}" for c in cfg.categories) if events else ())]


def share_features(cfg: FeaturesConfig) -> list[str]:
    """Released category shares (category votes over the cohort's votes)."""
    return [f"share_{c}" for c in cfg.categories] if cfg.features.category_votes else []


def ratio_features(cfg: FeaturesConfig) -> dict[str, tuple[int, int]]:
    """Released float features, averages over users, with each user's value bounds."""
    f = cfg.features
    out: dict[str, tuple[int, int]] = {}
    if f.purchase_rate:
        out["purchase_rate"] = (0, 1)
    if f.mean_session_seconds:
        out["mean_session_seconds"] = f.mean_session_seconds.bounds
    return out


def centred(value: pl.Expr, lo: int, hi: int) -> pl.Expr:
    """2 * value - (lo + hi): a user's value around the middle of its bounds, doubled to stay an
    integer. Its sum moves by at most hi - lo per user, half what a sum of raw values in
    [0, hi] would, so the average's noise is halved (the sum-around-the-midpoint of PipelineDP's
    MEAN). The average is (sum / users + lo + hi) / 2."""
    return (value * 2 - (lo + hi)).cast(pl.Int64)


def bound_contributions(events: pl.DataFrame, cfg: FeaturesConfig, *, user_col: str,
                        seed: int) -> pl.DataFrame:
    """One row per (user, cohort), at most `max_cohorts_per_user` per user, values clipped."""
    f = cfg.features
    aggs: list[pl.Expr] = []
    if f.events_per_category:
        aggs += [pl.col("content_category").eq(cat).sum().clip(0, f.events_per_category
                                                                .max_per_user)
                 .cast(pl.Int64).alias(f"events_{cat}") for cat in cfg.categories]
    if f.category_votes:  # raw counts, for the user's category mix (see `vote_rows`)
        aggs += [pl.col("content_category").eq(cat).sum().cast(pl.Int64).alias(f"_n_{cat}")
                 for cat in cfg.categories]
    per_user = {"purchase_rate": pl.col("event_type").eq("purchase").any().cast(pl.Int64),
                "mean_session_seconds": pl.col("session_seconds").mean().round(0)}
    for name, (lo, hi) in ratio_features(cfg).items():
        value = per_user[name].clip(lo, hi).fill_null(lo)
        aggs.append(centred(value, lo, hi).alias(f"{name}_centred"))
    per_cohort = events.group_by(user_col, *DIMENSIONS).agg(aggs)
    order = pl.concat_str(pl.col(user_col), *DIMENSIONS, separator="|").hash(seed=seed)
    return (per_cohort.with_columns(_order=order)
            .with_columns(_rank=pl.col("_order").rank("ordinal").over(user_col))
            .filter(pl.col("_rank") <= cfg.max_cohorts_per_user)
            .drop("_order", "_rank"))


def vote_rows(bounded: pl.DataFrame, cfg: FeaturesConfig, *, user_col: str, seed: int
              ) -> pl.DataFrame:
    """Each kept (user, cohort) as `votes_per_user` (M) rows, one per unit vote, for
    categories in proportion to the user's events there; a user with no categorized events
    casts none.

    Rounding is systematic sampling: the user's M · shares laid end to end from a seeded
    offset u in [0, 1), each category getting the whole numbers its stretch covers. Every user
    casts exactly M votes, each category the floor or ceiling of M · share, and in expectation
    exactly M · share. Rounding to the nearest (largest remainder) would be biased: with 18
    categories and M = 10, a category most users watch a little would get no votes at all
    (measured on MovieLens: it capped the lift kept at about 0.8 even with almost no noise)."""
    votes = cast(CategoryVotesFeature, cfg.features.category_votes).votes_per_user
    key = [user_col, *DIMENSIONS]
    counts = [f"_n_{c}" for c in cfg.categories]
    offset = (pl.concat_str(*key, separator="|").hash(seed=seed) % 1_000_003) / 1_000_003
    return (bounded.select(*key, *counts, _u=offset)
            .unpivot(index=[*key, "_u"], on=counts, variable_name="content_category",
                     value_name="_n")
            .with_columns(pl.col("content_category").str.strip_prefix("_n_"),
                          _total=pl.col("_n").sum().over(key))
            .filter(pl.col("_total") > 0)
            .with_columns(_end=(pl.col("_n").cum_sum().over(key) * votes / pl.col("_total")))
            .with_columns(_votes=((pl.col("_end") + pl.col("_u")).floor()
                                  - (pl.col("_end") - pl.col("_n") * votes / pl.col("_total")
                                     + pl.col("_u")).floor()).cast(pl.Int64))
            .filter(pl.col("_votes") > 0)
            .select(*key, "content_category", pl.int_ranges(0, "_votes").alias("_i"))
            .explode("_i").drop("_i"))


def _aggregations(cfg: FeaturesConfig) -> list[tuple[pl.Expr, str, float]]:
    """(OpenDP aggregation, column, noise scale) for every released statistic.

    A feature's `budget_share` is split evenly over its statistics (one per category for
    events). A user is in at most `max_cohorts_per_user` (k) rows, one per cohort, so a
    statistic whose rows lie in [-B, B] moves by k·B in L1 (Laplace: scale = k·B / ε) and by
    √k·B in L2 (Gaussian: scale = √k·B / √(2ρ)).
    """
    from opendp.extras.polars import dp_len  # also registers the `.dp` expression namespace

    f = cfg.features

    def scale(share: float, n_stats: int, bound: float) -> float:
        return cfg.mechanism.scale(cfg.release_budget * share / n_stats,
                                   per_user=cfg.max_cohorts_per_user, bound=bound)

    s = scale(f.active_users.budget_share, 1, 1)
    out = [(dp_len(signed=True, scale=s), "active_users", s)]
    if f.events_per_category:
        hi, n = f.events_per_category.max_per_user, len(cfg.categories)
        s = scale(f.events_per_category.budget_share, n, hi)
        out += [(pl.col(f"events_{c}").dp.sum((0, hi), scale=s), f"events_{c}", s)  # type: ignore[attr-defined]
                for c in cfg.categories]
    for name, (lo, hi) in ratio_features(cfg).items():
        spec = getattr(f, name)
        s = scale(spec.budget_share, 1, hi - lo)
        total = pl.col(f"{name}_centred").dp.sum((lo - hi, hi - lo), scale=s)  # type: ignore[attr-defined]
        out.append((total, f"{name}_sum", s))
    return [(expr.alias(name), name, s) for expr, name, s in out]


def _measurement(dp: SimpleNamespace, bounded: pl.LazyFrame, cfg: FeaturesConfig,
                 keys: pl.DataFrame | None, aggs: list[tuple[pl.Expr, str, float]]
                 ) -> tuple[Any, Any]:
    """One OpenDP measurement for the whole release, and the privacy unit's distance.

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


VOTE_CELL = (*DIMENSIONS, "content_category")


class VoteCells:
    """Vote cells (cohort, category) numbered as they are first seen, so a vote row is one
    UInt32 instead of four strings: at M rows per user, most of a large release's memory."""

    def __init__(self) -> None:
        self.ids: pl.DataFrame | None = None

    def number(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` (with the cell's columns) with their cell's number, new cells numbered."""
        cells = rows.select(VOTE_CELL).unique(maintain_order=True)
        seen = 0 if self.ids is None else self.ids.height
        new = (cells if self.ids is None else
               cells.join(self.ids, on=VOTE_CELL, how="anti", nulls_equal=True))
        new = new.with_columns(_cell=pl.int_range(seen, seen + new.height, dtype=pl.UInt32))
        self.ids = new if self.ids is None else pl.concat([self.ids, new])
        return rows.join(self.ids, on=VOTE_CELL, how="left", nulls_equal=True)


def _votes_measurement(dp: SimpleNamespace, votes: pl.LazyFrame, cfg: FeaturesConfig,
                       cells: pl.DataFrame) -> tuple[Any, Any, float]:
    """The category-vote histogram as one OpenDP measurement: a count per released cell
    (`cells`' `_cell`: a cohort and a category, see `VoteCells`) where each user holds at most
    k·M rows (k cohorts, M votes each). Its scale is calibrated from OpenDP's own accounting
    at scale 1, so the charge is exactly the feature's share."""
    from opendp.extras.polars import dp_len

    spec = cast(CategoryVotesFeature, cfg.features.category_votes)
    k, m = cfg.max_cohorts_per_user, spec.votes_per_user
    unit, d_in = dp.unit_of(contributions=[
        dp.Bound(per_group=k * m),
        dp.Bound(by=["_cell"], per_group=m, num_groups=k * min(m, len(cfg.categories)))])
    domain = dp.with_margin(dp.domain_of(votes, infer=True),
                            dp.Margin(by=["_cell"], max_length=MAX_ROWS_BOUND))
    empty = pl.LazyFrame(schema=votes.collect_schema())

    def build(scale: float) -> Any:
        plan = (empty.group_by("_cell").agg(dp_len(signed=True, scale=scale).alias("_votes"))
                .join(cells.lazy().select("_cell"), on="_cell", how="right"))
        return dp.make_private_lazyframe(domain, unit, cfg.mechanism.measure(dp), plan,
                                         global_scale=1.0)

    scale = cfg.mechanism.calibrate(build(1.0).map(d_in), cfg.release_budget * spec.budget_share)
    return build(scale), d_in, scale


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
    one shard): each shard is reduced to its users' bounded contributions (at most
    `max_cohorts_per_user` rows each), which is per user and so exact; the measurement then
    runs once on all of them, with the sensitivity the bounding guarantees."""
    dp = opendp_api()
    seed = int(release_date.replace("-", ""))
    keys = cohort_keys(cfg, age_bands) if cfg.cohorts == "config" else None
    rows_in, users, parts, vote_parts, cells = 0, 0, [], [], VoteCells()
    for events in shards:
        rows_in += events.height
        # Rows outside the public grid (a region not served, an age band widened for
        # k-anonymity) go first, so they never take the place of a user's cohort inside it.
        in_grid = (events.join(keys, on=list(DIMENSIONS), how="semi") if keys is not None
                   else events.drop_nulls(list(DIMENSIONS)))
        bounded = bound_contributions(in_grid, cfg, user_col=user_col, seed=seed)
        if cfg.features.category_votes:
            # Only the cell: the measurement declares the bound on a user's vote rows, which
            # holds by construction, and needs no identifier.
            vote_parts.append(cells.number(vote_rows(bounded, cfg, user_col=user_col,
                                                     seed=seed)).select("_cell"))
        users += bounded.get_column(user_col).n_unique()  # shards hold disjoint users
        # Without the user either: the measurement declares the bounds (k rows per user, one
        # per cohort), which `bound_contributions` guarantees, and reads no identifier.
        parts.append(bounded.select(pl.exclude(user_col, "^_n_.*$")))
    main = pl.concat(parts).lazy()
    aggs = _aggregations(cfg)
    measurement, d_in = _measurement(dp, main, cfg, keys, aggs)
    spent = measurement.map(d_in)
    loss, delta = spent if cfg.cohorts == "private" else (spent, 0.0)
    noisy = cast(pl.LazyFrame, measurement(main)).collect()
    scale = {name: s for _, name, s in aggs}
    if cfg.features.category_votes:
        votes = pl.concat(vote_parts).lazy()
        # The cells of the released cohorts (the config grid, or the privately chosen).
        released = cells.number(noisy.select(DIMENSIONS).join(
            pl.DataFrame({"content_category": list(cfg.categories)}), how="cross"))
        vm, vd_in, scale["_votes"] = _votes_measurement(dp, votes, cfg, released)
        loss += vm.map(vd_in)
        counted = cast(pl.LazyFrame, vm(votes)).collect().join(released, on="_cell")
        noisy = noisy.join(_vote_columns(counted, cfg), on=list(DIMENSIONS), how="left")
    planned = cfg.release_budget.value
    if loss > planned * (1 + 1e-9) or delta > cfg.delta * (1 + 1e-9):
        raise BudgetExceededError(f"OpenDP accounts {loss}, δ={delta} for a release planned at "
                                  f"{planned}, δ={cfg.delta}: the scales are wrong; nothing "
                                  "was released")
    accuracy = cfg.mechanism.accuracy(dp)
    error95 = {name: accuracy(s, 0.05) for name, s in scale.items()}
    ts = datetime.combine(datetime.fromisoformat(release_date).date(), time(23, 59, 59),
                          tzinfo=UTC)
    table = (_with_accuracy(noisy, cfg, scale, error95)
             .with_columns(cohort_id=pl.concat_str(*DIMENSIONS, separator="|"),
                           feature_date=pl.lit(ts.date()),
                           event_timestamp=pl.lit(ts).dt.cast_time_unit("us"))
             .select("cohort_id", *DIMENSIONS, "feature_date", "event_timestamp",
                     *released_columns(cfg))
             .sort("cohort_id"))
    noise = cfg.mechanism.label
    cohorts = "private cohort selection" if cfg.cohorts == "private" else "public cohort keys"
    release = FeatureRelease(
        table=table, budget=cfg.release_budget, delta=float(delta),
        mechanism=f"OpenDP Polars: integer {noise}, user-level, {cohorts}",
        library=f"opendp {dp.version}")
    stats = StageStats(stage="features", rows_in=rows_in, rows_out=table.height, details={
        "feature_set": cfg.feature_set, "period": cfg.period, "privacy": cfg.privacy,
        "epsilon": cfg.epsilon, "rho": release.rho, "delta": float(delta),
        "accounted_by_opendp": loss, "cohorts": cfg.cohorts,
        "budget_shares": {name: spec.budget_share
                          for name, spec in cfg.features.enabled().items()},
        "privacy_unit": f"user ({user_col}), up to {cfg.max_cohorts_per_user} cohort(s) each",
        "cohorts_released": table.height,
        "users_counted": users,
        "error95_active_users": error95["active_users"],
        "errors": expected_and_realized(table, cfg)})
    return release, stats


def expected_and_realized(table: pl.DataFrame, cfg: FeaturesConfig
                          ) -> dict[str, dict[str, float | None]]:
    """Per feature: the planner's 95% error at this release's mean users per cohort (noisy
    counts: post-processing), next to the median of the release's own 95% bounds."""
    from pipeline.transforms.feature_plan import feature_errors

    users = cast(float, table["active_users"].clip(0, None).mean() or 0.0)
    columns = {"active_users": "^active_users_error95$", "share (each category)":
               "^share_.*_error95$", "events (each category)": "^events_.*_error95$",
               "purchase_rate": "^purchase_rate_error95$",
               "mean_session_seconds": "^mean_session_seconds_error95$"}
    out = {}
    for name, (expected, _) in feature_errors(cfg, users).items():
        realized = table.select(pl.concat_list(pl.col(columns[name])).explode().median()).item()
        out[name] = {"expected_error95": round(expected, 6),
                     "median_error95": round(float(realized), 6) if realized is not None
                     else None}
    return out


def _vote_columns(noisy_votes: pl.DataFrame, cfg: FeaturesConfig) -> pl.DataFrame:
    """Noisy vote counts per cohort, one column per category, in users (votes / M, at least 0:
    post-processing)."""
    m = cast(CategoryVotesFeature, cfg.features.category_votes).votes_per_user
    wide = noisy_votes.pivot(on="content_category", index=list(DIMENSIONS), values="_votes")
    return wide.select(*DIMENSIONS, *((pl.col(c).fill_null(0).clip(0, None) / m)
                                      .alias(f"_votes_{c}") for c in cfg.categories))


def _with_accuracy(noisy: pl.DataFrame, cfg: FeaturesConfig, scale: dict[str, float],
                   error95: dict[str, float]) -> pl.DataFrame:
    """Clip counts at 0, divide rates, means and shares, and add each value's noise scale, 95%
    error bound, shrunk estimate with its standard error (rates and shares) and `_unreliable`
    flag."""
    users = pl.col("active_users")
    n = users.clip(1, None)
    mech = cfg.mechanism
    var_users = mech.variance(scale["active_users"])
    cols: list[pl.Expr] = []
    variances: dict[str, tuple[pl.Expr, Callable[[pl.Expr], pl.Expr]]] = {}
    for c in count_features(cfg):
        cols += [pl.col(c).cast(pl.Int64).clip(0, None), pl.lit(scale[c]).alias(f"{c}_noise_scale"),
                 pl.lit(error95[c]).alias(f"{c}_error95")]
    for r, (lo, hi) in ratio_features(cfg).items():
        total = pl.col(f"{r}_sum")
        value = pl.when(users > 0).then(((total / users + lo + hi) / 2).clip(lo, hi))
        # First order: the sum's error, plus how far the value sits from the middle times the
        # user count's error, over twice the users (see `centred`).
        err = pl.when(users > 0).then(
            (error95[f"{r}_sum"] + (2 * value - lo - hi).abs() * error95["active_users"])
            / (2 * users))
        # The sum's Laplace scale in the value's units (it is divided by 2 * users).
        noise = pl.when(users > 0).then(scale[f"{r}_sum"] / (2 * users))
        cols += [value.alias(r), noise.alias(f"{r}_noise_scale"), err.alias(f"{r}_error95")]
        noise_var = mech.variance(scale[f"{r}_sum"])

        def ratio_var(q: pl.Expr, lo: int = lo, hi: int = hi, noise_var: float = noise_var
                      ) -> pl.Expr:
            # The noisy sum's and user count's variance, first order (see `centred`).
            return (noise_var + (2 * q - lo - hi) ** 2 * var_users) / (4 * n**2)

        variances[r] = (users, ratio_var)
    out = noisy.with_columns(cols)
    if cfg.features.category_votes:
        votes = [pl.col(f"_votes_{c}") for c in cfg.categories]
        total = pl.sum_horizontal(votes)
        m = cast(CategoryVotesFeature, cfg.features.category_votes).votes_per_user
        v_scale, v_err = scale["_votes"] / m, error95["_votes"] / m  # in users
        v_var, n_cat = mech.variance(v_scale), len(cfg.categories)
        t = total.clip(1, None)

        def share_var(q: pl.Expr) -> pl.Expr:
            # The category's noisy votes and the total's (n_cat of them), first order.
            return v_var * (1 + n_cat * q**2) / t**2

        shares = []
        for c, v in zip(cfg.categories, votes, strict=True):
            share = pl.when(total > 0).then(v / total)
            shares += [share.alias(f"share_{c}"),
                       pl.when(total > 0).then(v_scale / total).alias(f"share_{c}_noise_scale"),
                       pl.when(total > 0).then(v_err * (1 + share * n_cat**0.5) / total)
                       .alias(f"share_{c}_error95")]
            variances[f"share_{c}"] = (total, share_var)
        out = out.with_columns(shares)
    for name, (weight, var) in variances.items():
        out = _shrink(out, name, weight, var, list(cfg.shrink_toward))
    flags = [(pl.col(c).is_null() | (pl.col(f"{c}_error95") > pl.col(c))).alias(f"{c}_unreliable")
             for c in count_features(cfg)]
    flags += [(pl.col(f"{r}_shrunk").is_null() | (1.96 * pl.col(f"{r}_se")
                                                  > pl.col(f"{r}_shrunk").abs()))
              .alias(f"{r}_unreliable") for r in variances]
    return out.with_columns(flags)


def _shrink(df: pl.DataFrame, value: str, weight: pl.Expr,
            variance: Callable[[pl.Expr], pl.Expr], dims: list[str]) -> pl.DataFrame:
    """Empirical Bayes toward the cohort's parents (Efron and Morris; the several-levels idea of
    the Census TopDown and of small-area estimation), all from this release.

    The parent estimate q is an additive model: overall level plus one effect per value of each
    of `dims` (region, age band, device type), fitted by weighted least squares over the
    cohorts, weights 1 / v, where v is the cohort value's variance from the noise alone. Main
    effects pool every cohort that shares a region, an age band or a device type, so they are
    far less noisy than one cohort. τ², the spread of cohorts around q beyond their noise, is
    estimated from the residuals; each cohort keeps the share τ² / (τ² + v) of its distance from
    q. The target is the cohort's exact value (what the release estimates), and the standard
    error is the posterior's plus what q's own fit adds."""
    d = df.with_columns(_w=weight.clip(0, None).fill_null(0))
    p = d[value].to_numpy().astype(float)
    ok = np.isfinite(p) & (d["_w"].to_numpy() > 0)
    levels = [d[c].to_numpy() for c in dims]
    x = np.column_stack([np.ones(len(p))] + [
        (col == v).astype(float) for col in levels for v in np.unique(col)[1:]])
    q = np.full(len(p), np.nanmean(p[ok]) if ok.any() else np.nan)
    v = np.ones(len(p))
    qvar = np.zeros(len(p))
    for _ in range(2):  # v depends on q (shares), q on v (weights): two rounds settle it
        v = np.maximum(d.select(variance(pl.lit(pl.Series(np.nan_to_num(q))).clip(0, None)))
                       .to_series().to_numpy(), 1e-12)
        if ok.sum() > x.shape[1]:
            w = np.where(ok, 1 / v, 0.0)
            xtwx = x.T @ (x * w[:, None])
            inv = np.linalg.pinv(xtwx)
            beta = inv @ (x.T @ (w * np.nan_to_num(p)))
            q = x @ beta
            qvar = np.einsum("ij,jk,ik->i", x, inv, x)
    # A fitted q absorbs part of each cohort's deviation (its leverage h = qvar / v), so a
    # residual's expected square is (τ² + v)(1 - h), not τ² + v: correct for it, or τ² comes
    # out too small and the estimate is pulled too far toward q.
    slack = np.clip(1 - qvar / v, 1e-6, 1)[ok]
    resid = (p - q)[ok]
    tau2 = max(float(np.sum(resid**2 - v[ok] * slack) / np.sum(slack)) if ok.any() else 0.0,
               0.0)
    keep = np.where(ok, tau2 / (tau2 + v), 0.0)
    shrunk = q + keep * np.nan_to_num(p - q)
    se = np.sqrt(keep * v + (1 - keep) ** 2 * qvar)
    return d.drop("_w").with_columns(pl.Series(f"{value}_shrunk", shrunk),
                                     pl.Series(f"{value}_se", se))


def released_columns(cfg: FeaturesConfig) -> list[str]:
    """Per count: the value, its noise scale, 95% error bound and unreliable flag; per rate,
    mean or share, also its shrunk estimate and standard error."""
    counts = [f"{c}{suffix}" for c in count_features(cfg)
              for suffix in ("", "_noise_scale", "_error95", "_unreliable")]
    return counts + [f"{c}{suffix}" for c in (*ratio_features(cfg), *share_features(cfg))
                     for suffix in ("", "_noise_scale", "_error95", "_shrunk", "_se",
                                    "_unreliable")]
