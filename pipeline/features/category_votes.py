"""`category_votes`: each cohort's category mix, what personalization needs most, at the least
cost.

Every user casts `votes_per_user` (M) unit votes split over categories in proportion to their
events (`vote_rows`), so one user moves the whole histogram by one user's worth (OpenDP charges
the count by the per-user total, measured in `tests/transforms/test_features`) and no budget is
split per category. Shares are votes over the cohort's votes, published with a first-order
error bound and shrunk toward the parent cohorts. The votes are their own OpenDP measurement
(a count per (cohort, category) cell), calibrated from OpenDP's own accounting so the charge is
exactly the feature's part of the budget.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import polars as pl
from pydantic import Field

from pipeline.features.base import (
    DIMENSIONS,
    MAX_ROWS_BOUND,
    SHARE,
    Accuracy,
    Column,
    DPFeature,
    FeatureShare,
    Grid,
    Measured,
    Noise,
    Released,
    accuracy_columns,
)
from pipeline.ledger.budget import PrivacyBudget

VOTE_CELL = (*DIMENSIONS, "content_category")


class CategoryVotesFeature(FeatureShare):
    """Each user's category mix as `votes_per_user` unit votes (their shares of events per
    category, rounded by largest remainder): one user moves the whole histogram by one user's
    worth (L1 = 1 in users), however many categories there are, so no budget is split per
    category. Released as shares per cohort, with a shrunk estimate and its standard error."""

    votes_per_user: Annotated[int, Field(ge=1, le=100)] = 20


def vote_rows(bounded: pl.DataFrame, *, votes: int, categories: tuple[str, ...], user_col: str,
              seed: int) -> pl.DataFrame:
    """Each kept (user, cohort) as `votes` (M) rows, one per unit vote, for categories in
    proportion to the user's events there; a user with no categorized events casts none.

    Rounding is systematic sampling: the user's M · shares laid end to end from a seeded
    offset u in [0, 1), each category getting the whole numbers its stretch covers. Every user
    casts exactly M votes, each category the floor or ceiling of M · share, and in expectation
    exactly M · share. Rounding to the nearest (largest remainder) would be biased: with 18
    categories and M = 10, a category most users watch a little would get no votes at all
    (measured on MovieLens: it capped the lift kept at about 0.8 even with almost no noise)."""
    key = [user_col, *DIMENSIONS]
    counts = [f"_n_{c}" for c in categories]
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


class VoteCollector:
    """Each shard's vote rows (cells only), then the one measurement over all of them."""

    def __init__(self, spec: CategoryVotesFeature, grid: Grid, part: PrivacyBudget, *,
                 user_col: str, seed: int) -> None:
        self.spec, self.grid, self.part = spec, grid, part
        self.user_col, self.seed = user_col, seed
        self.cells = VoteCells()
        self.parts: list[pl.DataFrame] = []

    def add(self, bounded: pl.DataFrame) -> None:
        # Only the cell: the measurement declares the bound on a user's vote rows, which
        # holds by construction, and needs no identifier.
        rows = vote_rows(bounded, votes=self.spec.votes_per_user,
                         categories=self.grid.categories, user_col=self.user_col,
                         seed=self.seed)
        self.parts.append(self.cells.number(rows).select("_cell"))

    def merge(self, others: list[VoteCollector]) -> None:  # type: ignore[override]
        """Others' vote rows, their cells renumbered into this collector's numbering."""
        for other in others:
            if other.cells.ids is None:
                continue
            renumbered = self.cells.number(other.cells.ids.rename({"_cell": "_old"})).select(
                "_old", _new="_cell")
            self.parts.extend(part.join(renumbered, left_on="_cell", right_on="_old")
                              .select(_cell="_new") for part in other.parts)

    def measure(self, dp: Any, cohorts: pl.DataFrame) -> Measured:
        """Noisy votes for every category of the released `cohorts` (the config grid, or
        those private selection kept), in users (`_votes_<category>`)."""
        votes = pl.concat(self.parts).lazy()
        released = self.cells.number(cohorts.select(DIMENSIONS).join(
            pl.DataFrame({"content_category": list(self.grid.categories)}), how="cross"))
        m, d_in, scale = self._measurement(dp, votes, released)
        counted = cast(pl.LazyFrame, m(votes)).collect().join(released, on="_cell")
        return Measured(self._columns(counted), m.map(d_in), {"_votes": scale})

    def _measurement(self, dp: Any, votes: pl.LazyFrame, cells: pl.DataFrame
                     ) -> tuple[Any, Any, float]:
        """The category-vote histogram as one OpenDP measurement: a count per released cell
        where each user holds at most k·M rows (k cohorts, M votes each). Its scale is
        calibrated from OpenDP's own accounting at scale 1."""
        from opendp.extras.polars import dp_len

        k, m = self.grid.per_user, self.spec.votes_per_user
        unit, d_in = dp.unit_of(contributions=[
            dp.Bound(per_group=k * m),
            dp.Bound(by=["_cell"], per_group=m,
                     num_groups=k * min(m, len(self.grid.categories)))])
        domain = dp.with_margin(dp.domain_of(votes, infer=True),
                                dp.Margin(by=["_cell"], max_length=MAX_ROWS_BOUND))
        empty = pl.LazyFrame(schema=votes.collect_schema())
        mechanism = self.grid.mechanism

        def build(scale: float) -> Any:
            plan = (empty.group_by("_cell").agg(dp_len(signed=True, scale=scale)
                                                .alias("_votes"))
                    .join(cells.lazy().select("_cell"), on="_cell", how="right"))
            return dp.make_private_lazyframe(domain, unit, mechanism.measure(dp), plan,
                                             global_scale=1.0)

        scale = mechanism.calibrate(build(1.0).map(d_in), self.part)
        return build(scale), d_in, scale

    def _columns(self, noisy_votes: pl.DataFrame) -> pl.DataFrame:
        """Noisy vote counts per cohort, one column per category, in users (votes / M, at
        least 0: post-processing)."""
        m = self.spec.votes_per_user
        wide = noisy_votes.pivot(on="content_category", index=list(DIMENSIONS),
                                 values="_votes")
        return wide.select(*DIMENSIONS, *((pl.col(c).fill_null(0).clip(0, None) / m)
                                          .alias(f"_votes_{c}") for c in self.grid.categories))


class CategoryVotes(DPFeature):
    name = "category_votes"
    label = "share (each category)"
    config = CategoryVotesFeature
    group = SHARE
    summary = "share of the cohort's users' activity in the category (category votes)"

    def per_user(self, spec: CategoryVotesFeature, grid: Grid) -> list[pl.Expr]:
        # raw counts, for the user's category mix (see `vote_rows`)
        return [pl.col("content_category").eq(cat).sum().cast(pl.Int64).alias(f"_n_{cat}")
                for cat in grid.categories]

    def collector(self, spec: CategoryVotesFeature, grid: Grid, parts: list[PrivacyBudget], *,
                  user_col: str, seed: int) -> VoteCollector:
        return VoteCollector(spec, grid, parts[0], user_col=user_col, seed=seed)

    def released(self, spec: CategoryVotesFeature, grid: Grid, noise: Noise) -> Released:
        votes = [pl.col(f"_votes_{c}") for c in grid.categories]
        total = pl.sum_horizontal(votes)
        m = spec.votes_per_user
        v_scale, v_err = noise.scale["_votes"] / m, noise.error95["_votes"] / m  # in users
        v_var, n_cat = noise.mechanism.variance(v_scale), len(grid.categories)
        t = total.clip(1, None)

        def share_var(q: pl.Expr) -> pl.Expr:
            # The category's noisy votes and the total's (n_cat of them), first order.
            return v_var * (1 + n_cat * q**2) / t**2

        cols: list[pl.Expr] = []
        out = Released(cols)
        for c, v in zip(grid.categories, votes, strict=True):
            share = pl.when(total > 0).then(v / total)
            cols += [share.alias(f"share_{c}"),
                     pl.when(total > 0).then(v_scale / total).alias(f"share_{c}_noise_scale"),
                     pl.when(total > 0).then(v_err * (1 + share * n_cat**0.5) / total)
                     .alias(f"share_{c}_error95")]
            out.shrink[f"share_{c}"] = (total, share_var)
            out.flags.append((pl.col(f"share_{c}_shrunk").is_null()
                              | (1.96 * pl.col(f"share_{c}_se")
                                 > pl.col(f"share_{c}_shrunk").abs()))
                             .alias(f"share_{c}_unreliable"))
        return out

    def columns(self, spec: CategoryVotesFeature, grid: Grid) -> list[Column]:
        return [col for c in grid.categories
                for col in accuracy_columns(f"share_{c}", f"{c}: {self.summary}", shrunk=True)]

    def values(self, spec: CategoryVotesFeature, grid: Grid) -> list[str]:
        return [f"share_{c}" for c in grid.categories]

    def your_bound(self, spec: CategoryVotesFeature, grid: Grid) -> str:
        return (f"your mix of categories counts as {spec.votes_per_user} votes in all, one "
                "person's worth, however much you browsed")

    def expected_error(self, spec: CategoryVotesFeature, grid: Grid,
                       parts: list[PrivacyBudget], users: float, accuracy: Accuracy
                       ) -> tuple[float, float]:
        c = len(grid.categories)
        e = accuracy(grid.scale(parts[0], bound=1), 0.05) * (1 + c**-0.5) / max(users, 1.0)
        return e, e * c
