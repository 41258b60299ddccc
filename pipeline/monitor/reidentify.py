"""The daily re-identification check: the insider join attack of `bench.linkage`, run on the
day's table before it is published, with the encrypted generalized zone as what the attacker
knows. k-anonymity promises that at most 1/k of the published people can be singled out; this
measures it on the table about to go out, so a defect in minimization (a column left exact, a
group short of k, a staging pseudonym published) blocks the gate instead of shipping.

The attacker holds every user's generalized events under their staging pseudonym (the identity
they can link to an account: the staging key is an insider's), computes each user's exact row as
the pipeline does (a profile, or an event row with the purpose's domains), and:

- **pseudonym reuse**: looks each published pseudonym up among the staging ones;
- **all events**: matches each published row against every user's exact row (a published value
  fits an exact one when equal, or when it generalizes it: `any`, `unknown`, a coarser age
  band); a row is singled out when exactly one user fits and it is the right one;
- **m known events** (profiles): knows m random events of a target and looks for the published
  rows whose context fits each; the target is singled out when exactly one fits and it is the
  target's.

Vectorized, so it costs a join per generalization pattern rather than a cross product: rows of
one pattern (which columns are wildcards, which age-band level) match a user only on the user's
values mapped to that pattern, so each user maps to one key per pattern and each published key
counts its users with a group-by. Aggregate purposes publish counts over at least k users and no
per-user row: nothing to single out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.keys import MasterKey
from pipeline.core.records import AttackRate, ReidentificationRecord
from pipeline.transforms.minimize import allowlisted
from pipeline.transforms.profile import (
    ANY,
    UNKNOWN,
    coarser_bands,
    shard_profiles,
    with_epoch_pseudonym,
)

_WILD = "\u0000*"  # a wildcard's key value: no published or exact value equals it
_ID, _PROBE = "_who", "_probe"


@dataclass(frozen=True)
class Known:
    """What the attacker derived from one shard of the generalized zone: each user's exact
    row (`_who`: the identity a published row must be linked to) and, for profiles, m sampled
    events' context per user."""

    exact: pl.DataFrame
    events: pl.DataFrame | None  # _who, _probe (the sample's event index), context columns
    staging: pl.DataFrame  # the staging pseudonyms present (one column `_who_staging`)


def _with_band_alternatives(table: pl.DataFrame, coarser: Sequence[Sequence[int]]
                            ) -> pl.DataFrame:
    """One row per band an exact row's age band may be published as (itself, and each
    coarser band containing it), duplicates dropped: a published band fits an exact row
    when it is one of these. (An event's band may already be coarse: the event-level
    k-anonymity steps it, so `18-34` may be exact and also `18-24`'s coarser band.)"""
    if "age_band" not in table.columns or not coarser:
        return table
    band = table["age_band"].cast(pl.String)
    options = pl.DataFrame([band.alias("_b"), *(coarser_bands(band, edges).alias(f"_b{i}")
                                                for i, edges in enumerate(coarser))])
    merged = options.select(pl.concat_list(options.columns).list.unique().alias("age_band"))
    return table.with_columns(merged["age_band"]).explode("age_band")


def _keys(published: pl.DataFrame, cols: Sequence[str]) -> pl.DataFrame:
    """Published rows with a `_pattern` code (which columns are wildcards: `any`, `unknown`
    or null generalize any value) and their key columns, wildcards set to `_WILD`."""
    codes, keys = [], []
    for c in cols:
        v = pl.col(c).cast(pl.String)
        wild = v.is_in([ANY, UNKNOWN]) | v.is_null()
        codes.append(pl.when(wild).then(pl.lit("*")).otherwise(pl.lit("=")))
        keys.append(pl.when(wild).then(pl.lit(_WILD)).otherwise(v).alias(c))
    return published.with_columns(*keys, pl.concat_str(codes, separator="").alias("_pattern"))


def _as_pattern(exact: pl.DataFrame, cols: Sequence[str], pattern: str) -> pl.DataFrame:
    """Exact rows as a published row of this pattern would show them."""
    return exact.with_columns(pl.lit(_WILD).alias(c) if code == "*" else pl.col(c)
                              for c, code in zip(cols, pattern, strict=True))


def _candidates(published: pl.DataFrame, exact: pl.DataFrame, cols: Sequence[str],
                coarser: Sequence[Sequence[int]]) -> pl.DataFrame:
    """Per published row (`_ID` kept): how many people's exact rows fit it (`fits`), and the
    one that does when exactly one (`single`)."""
    exact = _with_band_alternatives(exact.select(_ID, *cols), coarser)
    out = []
    for (pattern,), rows in _keys(published, cols).group_by("_pattern"):
        counts = (_as_pattern(exact, cols, str(pattern)).group_by(list(cols))
                  .agg(pl.col(_ID).n_unique().alias("fits"), pl.col(_ID).first().alias("single")))
        out.append(rows.select(_ID, *cols).join(counts, on=list(cols), how="left",
                                                nulls_equal=True)
                   .select(_ID, pl.col("fits").fill_null(0), "single"))
    if not out:
        return pl.DataFrame(schema={_ID: pl.String, "fits": pl.UInt32, "single": pl.String})
    return pl.concat(out)


def _known_event_hits(published: pl.DataFrame, events: pl.DataFrame, cols: Sequence[str],
                      coarser: Sequence[Sequence[int]], m: int) -> tuple[int, int]:
    """(targets, singled out) when the attacker knows m events of each target with at least
    m: the published rows whose context fits every known event (see the module docstring)."""
    sample = events.filter(pl.col(_PROBE) < m)
    enough = sample.group_by(_ID).len().filter(pl.col("len") >= m).select(_ID)
    targets = enough.height
    if not targets or published.is_empty():
        return targets, 0
    sample = _with_band_alternatives(sample.join(enough, on=_ID, how="semi"), coarser)
    per_target = []
    for (pattern,), rows in _keys(published.select(_ID, *cols), cols).group_by("_pattern"):
        counts = rows.group_by(list(cols)).agg(pl.len().alias("fits"),
                                               pl.col(_ID).first().alias("single"))
        # a published key is a candidate when every known event fits it
        fitting = (_as_pattern(sample, cols, str(pattern))
                   .group_by(_ID, *cols).agg(pl.col(_PROBE).n_unique().alias("_events"))
                   .filter(pl.col("_events") == m).drop("_events"))
        per_target.append(fitting.join(counts, on=list(cols), how="inner", nulls_equal=True)
                          .select(_ID, "fits", "single"))
    fits = (pl.concat(per_target).group_by(_ID)
            .agg(pl.col("fits").sum(), pl.col("single").first()))
    hits = fits.filter((pl.col("fits") == 1) & (pl.col("single") == pl.col(_ID))).height
    return targets, hits


def known_from_shard(shard: pl.DataFrame, spec: PurposeSpec, *, key: MasterKey, epoch: str,
                     k: int, m: int, seed: int) -> Known:
    """One shard of the generalized zone as the attacker reads it (shards hold disjoint users,
    so the day's knowledge is the shards' concatenation)."""
    user = spec.user_col
    staging = shard.select(pl.col(user).unique().alias("_who_staging"))
    if spec.profile is None:
        exact, _ = allowlisted(shard, spec, k=k)
        exact = exact.with_columns(pl.col(c).alias(_ID) for c in spec.pseudonym_columns[:1])
        return Known(exact=exact, events=None, staging=staging)
    profiles, _ = shard_profiles(shard, spec, key=key, epoch=epoch, k=k)
    exact = profiles.rename({user: _ID})
    # the events the attacker may know: each user's context per event, under the published
    # pseudonym it must be linked to, m of them drawn at random (seeded: a rerun is the same)
    ctx = list(spec.profile.context)
    events = (with_epoch_pseudonym(shard.select(user, *ctx), user, key, spec.purpose, epoch)
              .rename({user: _ID})
              .with_columns(pl.int_range(pl.len()).shuffle(seed=seed).over(_ID).alias(_PROBE))
              .filter(pl.col(_PROBE) < m))
    return Known(exact=exact, events=events, staging=staging)


def reidentification(published: pl.DataFrame, known: Sequence[Known], spec: PurposeSpec, *,
                     k: int, coarser: Sequence[Sequence[int]], known_events: Sequence[int],
                     max_rate: float | None = None) -> ReidentificationRecord:
    """Every attack on the day's table to be published (see the module docstring), each as a
    rate against the limit (1/k unless `max_rate` is stricter)."""
    limit = min(1 / k, max_rate) if max_rate is not None else 1 / k
    if spec.aggregate is not None or not spec.pseudonym_columns:
        return ReidentificationRecord(
            applicable=False, k=k, limit=limit, passed=True,
            note="counts over at least k users, no per-user row or pseudonym: nothing to "
                 "single out")
    pcol = spec.pseudonym_columns[0]
    cols = [c for c in spec.columns if c not in spec.pseudonym_columns]
    pub = published.select(pl.col(pcol).alias(_ID), *(pl.col(c).cast(pl.String) for c in cols))
    exact = pl.concat([kn.exact.select(_ID, *(pl.col(c).cast(pl.String) for c in cols))
                       for kn in known]) if known else pl.DataFrame()
    staging = pl.concat([kn.staging for kn in known]) if known else pl.DataFrame(
        {"_who_staging": []}, schema={"_who_staging": pl.String})
    n = pub[_ID].n_unique()
    attacks = []
    reused = pub.join(staging, left_on=_ID, right_on="_who_staging", how="semi")[_ID].n_unique()
    attacks.append(AttackRate(attack="pseudonym reuse", targets=n, singled_out=reused))
    if not exact.is_empty() and n:
        found = _candidates(pub, exact, cols, coarser)
        hits = found.filter((pl.col("fits") == 1) & (pl.col("single") == pl.col(_ID)))
        attacks.append(AttackRate(attack="all events", targets=n,
                                  singled_out=hits[_ID].n_unique()))
    sampled = [kn.events for kn in known if kn.events is not None]
    if spec.profile is not None and sampled:
        events = pl.concat(sampled)
        ctx = list(spec.profile.context)
        for m in known_events:
            targets, hits_m = _known_event_hits(pub.select(_ID, *ctx), events, ctx, coarser, m)
            attacks.append(AttackRate(attack=f"{m} known event{'s' if m > 1 else ''}",
                                      targets=targets, singled_out=hits_m))
    worst = max(attacks, key=lambda a: a.rate)
    return ReidentificationRecord(
        applicable=True, k=k, limit=limit, published_pseudonyms=n, attacks=attacks,
        worst_attack=worst.attack, rate=worst.rate, passed=worst.rate <= limit)
