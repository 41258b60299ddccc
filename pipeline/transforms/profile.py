"""Per-user profiles, k-anonymous at the user level: what a profile purpose publishes.

Why not event rows: an insider holding the raw events with their account ids recomputes every
published column of an event row (date, day part, event type, category, device type, age
band, the H3 cell around the GPS point). k-anonymity over a few quasi-identifiers says nothing
about a user's *set* of rows, which is almost always unique: on the generator's days 50-77%
of users were singled out (`bench/linkage`), against the 1/k = 20% that k = 5 promises.

So each user becomes one row per pseudonym epoch: their usual context (most frequent region,
age band, device type), their top interests and an activity band. Every published column is
a quasi-identifier (the insider recomputes each), and the table is k-anonymous over all of
them, one row per user: whoever holds the raw events finds at least k accounts that fit any
published row, and an attacker who knows only some of a user's events finds more.

Groups short of k give up columns in the purpose's `give_up` order (the same walk as
`kanon.enforce`: all steps of one column, then the next; age bands coarsen through the
configured coarser edges first); what is still short is suppressed. The pseudonym is fresh per
epoch (`epoch: day` by default), an HMAC of the staging pseudonym and the epoch under a key of
its own, so one epoch's row cannot be chained to another's. With a longer epoch, a user's
earlier published rows of the epoch count as part of their row (`history`): the sequence, not
only today's row, is shared by k users.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.config.contracts import Profile
from pipeline.config.settings import age_band_labels
from pipeline.core.details import MinimizeDetails, ProfileDetails
from pipeline.core.keys import MasterKey
from pipeline.core.records import StageStats
from pipeline.transforms.generalize.kanon import Hierarchy, enforce
from pipeline.transforms.minimize import allowlisted
from pipeline.transforms.pseudonymize import hmac_expr

ANY, NONE, UNKNOWN = "any", "none", "unknown"
EVENTS = "_events"      # events behind a profile (the funnel counts events)
HISTORY = "_history"    # earlier published rows of the epoch (week and stable epochs)


def epoch_of(day: date, epoch: str) -> str:
    """The epoch a day belongs to: `2026-11-01`, `2026-W44` (ISO week) or `stable`."""
    if epoch == "day":
        return day.isoformat()
    if epoch == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return "stable"


def epoch_key(master: MasterKey, purpose: str) -> bytes:
    """The key of published profile pseudonyms: not the staging pseudonym key, so a published
    pseudonym cannot be recomputed from a staging one without the master key."""
    return master.derive(f"epoch-pseudonym:{purpose}")


def epoch_pseudonyms(stable: Sequence[str], keys: Iterable[MasterKey], purpose: str,
                     epochs: Iterable[str]) -> list[str]:
    """Every published pseudonym these staging pseudonyms may carry in these epochs, under
    each key in the ring (for erasure)."""
    base = pl.DataFrame({"p": list(stable)}, schema={"p": pl.String})
    out: set[str] = set()
    for key in keys:
        for epoch in epochs:
            out.update(with_epoch_pseudonym(base, "p", key, purpose, epoch)["p"].to_list())
    return sorted(out)


def with_epoch_pseudonym(table: pl.DataFrame, column: str, master: MasterKey, purpose: str,
                         epoch: str) -> pl.DataFrame:
    """`table` with `column` replaced by its epoch pseudonym."""
    key = epoch_key(master, purpose)
    return (table.with_columns(pl.concat_str(pl.lit(f"{epoch}:"), pl.col(column))
                               .alias(column))
            .with_columns(hmac_expr(column, key).alias(column)))


def _mode(column: str) -> pl.Expr:
    """The most frequent non-null value (ties: the smallest), `unknown` without one."""
    return (pl.col(column).drop_nulls().mode().sort().first().fill_null(UNKNOWN)
            .alias(column))


def user_profiles(table: pl.DataFrame, profile: Profile, user_col: str) -> pl.DataFrame:
    """One row per user of a shard (shards hold disjoint users, so this is exact): the
    profile's columns, the pseudonym key id and date, and the events behind it."""
    interests = profile.interests
    ranked = (table.filter(pl.col(interests.column).is_not_null())
              .group_by(user_col, interests.column).len()
              .sort([user_col, "len", interests.column], descending=[False, True, False])
              .group_by(user_col, maintain_order=True)
              .agg(pl.col(interests.column).head(len(interests.names)).alias("_top")))
    per_user = table.group_by(user_col).agg(
        pl.col("pseudonym_key_id").first(), pl.col("event_date").first(),
        *(_mode(c) for c in profile.context), pl.len().alias(EVENTS))
    out = per_user.join(ranked, on=user_col, how="left").with_columns(
        pl.col("_top").list.get(i, null_on_oob=True).fill_null(NONE).alias(name)
        for i, name in enumerate(interests.names)).drop("_top")
    if profile.activity:
        edges, labels = profile.activity.edges, profile.activity.labels
        expr = pl.lit(labels[-1])
        for hi, label in reversed(list(zip(edges[1:], labels[:-1], strict=True))):
            expr = pl.when(pl.col(EVENTS) < hi).then(pl.lit(label)).otherwise(expr)
        out = out.with_columns(expr.alias(profile.activity.column))
    return out.sort(user_col)


def shard_profiles(table: pl.DataFrame, spec: PurposeSpec, *, key: MasterKey, epoch: str,
                   k: int) -> tuple[pl.DataFrame, MinimizeDetails]:
    """One shard's users as profiles under their epoch pseudonyms, each value within its
    domain (`minimize.allowlisted`), with the events behind each (`EVENTS`); and what the
    domains replaced. What `publish_profiles` gathers from every shard."""
    assert spec.profile is not None
    user = spec.user_col
    profiles = with_epoch_pseudonym(user_profiles(table, spec.profile, user), user, key,
                                    spec.purpose, epoch)
    kept, stats = allowlisted(profiles.drop(EVENTS), spec, k=k)
    return kept.with_columns(profiles[EVENTS]), stats.details_of(MinimizeDetails)


def _bounds(label: str) -> tuple[int, int] | None:
    if label.startswith("under-"):
        return 0, int(label[6:]) - 1
    if label.endswith("+"):
        return int(label[:-1]), 200
    lo, sep, hi = label.partition("-")
    return (int(lo), int(hi)) if sep and lo.isdigit() and hi.isdigit() else None


def coarser_band(label: str, edges: Sequence[int]) -> str:
    """The band of `edges` holding all of `label`'s ages, else `unknown`."""
    b = _bounds(label)
    if b is None:
        return UNKNOWN
    lo, hi = b
    for band in age_band_labels(edges):
        c = _bounds(band)
        if c and c[0] <= lo and hi <= c[1]:
            return band
    return UNKNOWN


def coarser_bands(bands: pl.Series, edges: Sequence[int]) -> pl.Series:
    """`coarser_band` of every value, worked out once per distinct band."""
    mapping = {b: coarser_band(b, edges) for b in bands.drop_nulls().unique()}
    return bands.replace_strict(mapping, default=None, return_dtype=pl.String)


def hierarchies(profile: Profile, coarser_age_edges: Sequence[Sequence[int]]
                ) -> list[Hierarchy]:
    """Each `give_up` column's steps: age bands through each coarser set of edges, then
    `unknown`; interests and activity to `any`; other context to `unknown`."""
    out = []
    computed_any = {*profile.interests.names,
                    *([profile.activity.column] if profile.activity else [])}
    for c in profile.give_up:
        src = f"_src_{c}"
        if c == "age_band":
            ladders = [tuple(e) for e in coarser_age_edges]

            def value(level: int, src: str = src, ladders: list = ladders) -> pl.Expr:
                if level == 0:
                    return pl.col(src)
                if level <= len(ladders):
                    edges = ladders[level - 1]
                    return pl.col(src).map_batches(lambda s: coarser_bands(s, edges),
                                                   return_dtype=pl.String)
                return pl.lit(UNKNOWN)
            out.append(Hierarchy(c, len(ladders) + 1, value, (src,)))
        else:
            top = ANY if c in computed_any else UNKNOWN

            def step(level: int, src: str = src, top: str = top) -> pl.Expr:
                return pl.col(src) if level == 0 else pl.lit(top)
            out.append(Hierarchy(c, 1, step, (src,)))
    return out


def publish_profiles(profiles: pl.DataFrame, spec: PurposeSpec, *, k: int,
                     coarser_age_edges: Sequence[Sequence[int]],
                     history: pl.DataFrame | None = None
                     ) -> tuple[pl.DataFrame, ProfileDetails]:
    """The day's k-anonymous profile table from every shard's `user_profiles` (already under
    their epoch pseudonyms and within their domains), and what enforcement did. `history`:
    (user column, `_history`) for users with earlier rows in the epoch."""
    profile = spec.profile
    assert profile is not None
    user = spec.user_col
    qis = list(spec.quasi_identifiers)
    table = profiles
    if history is not None and history.height:
        table = table.join(history, on=user, how="left")
    else:
        table = table.with_columns(pl.lit(None, pl.String).alias(HISTORY))
    table = table.with_columns(pl.col(HISTORY).fill_null(""))
    hs = hierarchies(profile, coarser_age_edges)
    table = table.with_columns(pl.col(h.column).alias(h.sources[0]) for h in hs)
    kept, suppression = enforce(table, [*qis, HISTORY], user, k, hierarchies=hs)
    levels = {h.column: dict(sorted(kept[h.level_column].value_counts().iter_rows()))
              for h in hs}
    out = kept.sort(user).select(*spec.columns, EVENTS)
    details = ProfileDetails(
        users=profiles.height, users_published=out.height,
        users_suppressed=suppression.users_suppressed, groups=suppression.groups_kept,
        epoch=profile.epoch,
        given_up={c: {int(lv): int(n) for lv, n in counts.items()}
                  for c, counts in levels.items()},
        exact_share={c: (round(counts.get(0, 0) / out.height, 4) if out.height else None)
                     for c, counts in levels.items()})
    return out, details


def profile_stats(events_in: int, out: pl.DataFrame, details: ProfileDetails,
                  minimize: StageStats) -> tuple[pl.DataFrame, StageStats]:
    """The stage's stats in events (the funnel's unit): events of users whose profile is
    published are out; those of suppressed users are dropped, by reason."""
    events_out = int(out[EVENTS].sum() or 0)
    stats = StageStats(stage="minimize", rows_in=events_in, rows_out=events_out,
                       details=minimize.details_of(MinimizeDetails).model_copy(
                           update={"profiles": details}))
    if events_in > events_out:
        stats.dropped = {"user_profile_under_k": events_in - events_out}
    return out.drop(EVENTS), stats.check_balanced()


def history_of(earlier: Iterable[pl.DataFrame], spec: PurposeSpec) -> pl.DataFrame:
    """(user, `_history`): each pseudonym's earlier published rows of the epoch, in date
    order, as one string (what an attacker chaining the epoch's days sees)."""
    user = spec.user_col
    cols = [c for c in spec.quasi_identifiers if c != "pseudonym_key_id"]
    parts = [t.select(user, pl.concat_str([pl.col(c).cast(pl.String).fill_null("")
                                           for c in cols], separator="|").alias("_row"))
             for t in earlier]
    if not parts:
        return pl.DataFrame(schema={user: pl.String, HISTORY: pl.String})
    return (pl.concat(parts).group_by(user, maintain_order=True)
            .agg(pl.col("_row").str.join(";").alias(HISTORY)))
