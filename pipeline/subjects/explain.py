"""What a person's data became, in their terms: the k-anonymous group and the cohort they fell
into each day, the DP releases their events went into (and how far those can depend on them),
and when each place that holds them deletes it.

All of it is computed again from what the deployment holds (their own rows, the public cohort
grid, the ledger's releases and config), never from anyone else's data beyond group sizes, which
are what the published table already shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from pipeline.core.context import RunContext
from pipeline.core.errors import StorageError
from pipeline.core.storage import Shards
from pipeline.features import DIMENSIONS
from pipeline.ledger.release import release_days
from pipeline.stages import ZONES
from pipeline.transforms.features import Release, bound_contributions, cohort_keys
from pipeline.transforms.minimize import allowlisted


def groups(ctx: RunContext, published: dict[date, pl.DataFrame],
           generalized: dict[date, pl.DataFrame]) -> pl.DataFrame:
    """Per day: the published group the person is in (its quasi-identifier values, or for an
    aggregate purpose the counted group) and how many users it holds."""
    spec = ctx.cfg.purpose_spec
    zone = ctx.zone("published")
    out = []
    if spec.aggregate:
        by = list(spec.aggregate.by)
        for day, rows in sorted(generalized.items()):
            theirs = allowlisted(rows, spec, k=ctx.cfg.k_anonymity.k)[0].select(by).unique()
            for shard in _shards(ctx, zone, day):
                counted = shard.join(theirs, on=by, how="semi", nulls_equal=True)
                for row in counted.iter_rows(named=True):
                    out.append({"date": str(day), "group": _describe(row, by),
                                "users_in_group": row.get(spec.aggregate.users)})
        return pl.DataFrame(out, schema=_GROUPS)
    qis = [q for q in spec.quasi_identifiers if q != "pseudonym_key_id"]
    for day, rows in sorted(published.items()):
        theirs = rows.select(qis).unique()
        sizes: dict[tuple, int] = {}
        for shard in _shards(ctx, zone, day):
            hits = shard.join(theirs, on=qis, how="semi", nulls_equal=True)
            for key, n in hits.group_by(qis).agg(
                    pl.col(spec.user_col).n_unique().alias("_n")).select(
                        pl.concat_list([pl.col(q).cast(pl.String) for q in qis]), "_n"
                    ).iter_rows():
                sizes[tuple(key)] = sizes.get(tuple(key), 0) + n
        for key, n in sizes.items():
            out.append({"date": str(day), "group": _describe(dict(zip(qis, key, strict=True)),
                                                             qis),
                        "users_in_group": n})
    return pl.DataFrame(out, schema=_GROUPS)


_GROUPS = {"date": pl.String, "group": pl.String, "users_in_group": pl.Int64}


def _describe(row: dict, columns: Sequence[str]) -> str:
    return ", ".join(f"{c} {row[c]}" for c in columns)


def _shards(ctx: RunContext, zone: object, day: date) -> Iterable[pl.DataFrame]:
    storage = ctx.storage
    try:
        if storage.exists(zone, day):  # type: ignore[arg-type]
            yield from Shards(storage, zone, day)  # type: ignore[arg-type]
    except StorageError:
        return


def cohorts(ctx: RunContext, generalized: dict[date, pl.DataFrame]) -> pl.DataFrame:
    """Per day: the public cohorts (region × age band × device type) the person's events
    fell in."""
    grid = cohort_keys(ctx.cfg.features, ctx.cfg.generalize.age_bands)
    out = []
    for day, rows in sorted(generalized.items()):
        present = [d for d in DIMENSIONS if d in rows.columns]
        if len(present) < len(DIMENSIONS):
            continue
        mine = rows.select(DIMENSIONS).unique()
        in_grid = mine.join(grid, on=list(DIMENSIONS), how="semi")
        for row in mine.sort(list(DIMENSIONS), nulls_last=True).iter_rows(named=True):
            cohort = "|".join(str(row[d]) for d in DIMENSIONS)
            listed = in_grid.filter(*(pl.col(d) == row[d] for d in DIMENSIONS)).height > 0
            out.append({"date": str(day), "cohort": cohort, "in_public_grid": listed})
    return pl.DataFrame(out, schema={"date": pl.String, "cohort": pl.String,
                                     "in_public_grid": pl.Boolean})


@dataclass(frozen=True)
class ReleaseTaken:
    """A DP release and what it took of the person: which cohorts, and how far it may
    depend on them."""

    date: str
    feature_set: str
    cost: str  # ε = 1, or ρ = 0.5
    covers: str
    cohorts: list[str] | None  # None: the inputs are deleted, so nobody can say
    sentence: str


def releases(ctx: RunContext, generalized: dict[date, pl.DataFrame], held: set[date]
             ) -> list[ReleaseTaken]:
    """Every release of the purpose's feature set whose data days the person has rows in,
    with the cohorts their bounded contribution went to: the choice depends only on their own
    rows and the release date, so it is recomputed exactly. `held`: the days whose generalized
    partitions still exist (a release whose days are gone cannot be checked)."""
    fcfg = ctx.cfg.features
    if not fcfg.enabled:
        return []
    ledger = ctx.ledger()
    release = Release.of(fcfg)
    bounds = "; ".join(f"{f.label}: {f.your_bound(spec, release.grid)}"
                       for f, spec, _ in release.each())
    keys = cohort_keys(fcfg, ctx.cfg.generalize.age_bands) if fcfg.cohorts == "config" else None
    out = []
    for day_text, feature_set, _eps, _rho, _delta in ledger.history(ctx.cfg.purpose):
        stored = ledger.get(ctx.cfg.purpose, feature_set, day_text)
        if stored is None:
            continue
        day = date.fromisoformat(day_text)
        days = release_days(fcfg.period, day) or [day]
        days = [d for d in days if date.fromisoformat(stored.period_start) <= d]
        cost = f"{stored.budget.unit} = {stored.budget.value:g}"
        covers = (day_text if stored.period_start == day_text
                  else f"{stored.period_start} to {day_text}")
        if not all(d in held for d in days):
            out.append(ReleaseTaken(day_text, feature_set, cost, covers, None,
                                    "The data of these days is deleted (staging retention), "
                                    "so whether your events were among its inputs can no "
                                    "longer be said."))
            continue
        mine = [generalized[d] for d in days if d in generalized]
        if not mine:
            continue
        rows = pl.concat(mine, how="diagonal_relaxed")
        in_grid = (rows.join(keys, on=list(DIMENSIONS), how="semi") if keys is not None
                   else rows.drop_nulls(list(DIMENSIONS)))
        if in_grid.is_empty():
            out.append(ReleaseTaken(
                day_text, feature_set, cost, covers, [],
                f"Your events of {covers} fell outside the cohorts this release covers (its "
                "public grid of regions, age bands and device types, or, once coarsened to "
                "keep you among at least k people, an unknown region or age band), so none of "
                "them went into it."))
            continue
        bounded = bound_contributions(in_grid, fcfg, user_col=ctx.user_col,
                                      seed=int(day_text.replace("-", "")))
        chosen = sorted("|".join(r) for r in bounded.select(DIMENSIONS).iter_rows())
        out.append(ReleaseTaken(
            day_text, feature_set, cost, covers, chosen,
            f"Your events of {covers} went into the release of {day_text} for "
            f"{len(chosen)} cohort(s): {', '.join(chosen)}. Before any noise was added, your "
            f"part was bounded ({bounds}), and noise was added to every released value, so "
            f"no value depends on your data by more than that bound: the release as a whole "
            f"is differentially private at the level of one person, at {cost}."))
    return out


# Zone -> the retention window (config `retention`) its partitions are kept for.
def deletion_dates(ctx: RunContext, held: dict[str, set[date]]) -> pl.DataFrame:
    """Per zone and date holding the person's data: from when retention deletes it (the first
    daily run dated that many days after the partition or later), or that it is kept."""
    cfg = ctx.cfg.retention
    out = []
    for zone, days in sorted(held.items()):
        retention = ZONES[zone].retention if zone in ZONES else None
        window = getattr(cfg, f"{retention}_days") if retention else None
        for day in sorted(days):
            out.append({"zone": zone, "date": str(day),
                        "deleted_by_the_run_of": str(day + timedelta(days=window))
                        if window else None,
                        "kept_for_days": window})
    return pl.DataFrame(out, schema={"zone": pl.String, "date": pl.String,
                                     "deleted_by_the_run_of": pl.String,
                                     "kept_for_days": pl.Int64})
