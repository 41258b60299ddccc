"""The stages that publish a day: the validation gate, the DP release through the ledger, Feast,
and the run report. Thin adapters to `pipeline.transforms`, `pipeline.ledger.release` and
`pipeline.outputs`. Great Expectations (7–14 s to import) is imported only by `validate`.
"""

from __future__ import annotations

from datetime import date
from functools import partial

import polars as pl

from pipeline.core.context import RunContext
from pipeline.core.details import FeaturesDetails
from pipeline.core.errors import MissingInputError, ValidationFailedError
from pipeline.core.fs import DataPath, remove_tree
from pipeline.core.gates import require_guarded, require_validated
from pipeline.core.layout import partition_name
from pipeline.core.records import (
    CheckResult,
    LedgerRecord,
    PublishRecord,
    ReidentificationRecord,
    ValidationRecord,
)
from pipeline.core.shardwork import run_map
from pipeline.core.storage import Shards, parquet_bytes
from pipeline.ledger.release import next_release, release_days, release_once
from pipeline.ledger.store import Charge, Release
from pipeline.outputs.data_docs import SHARDS_DIR, write_shard_docs_index
from pipeline.outputs.feast import materialize
from pipeline.outputs.report import write_report
from pipeline.steps.consents import stopped_pseudonyms, verified
from pipeline.transforms.features import BoundedShard, bounded_shard, release_from_bounded
from pipeline.transforms.pii.detect import FastAnalyzer
from pipeline.transforms.pii.scrub import fast_analyzer
from pipeline.transforms.validate.merge import ShardValidation, merged_validation


def validate(ctx: RunContext, day: date) -> str:
    """Run the suite on the pending partition (shard by shard on a large day); promote it to
    `published` only if it passes, else raise ValidationFailedError (after saving the
    outcome)."""

    records = ctx.records(day)
    before = records.load(ValidationRecord)  # a rekey revalidates a validated day
    require_guarded(ctx, day, validated_before=before is not None and before.success)
    pending = Shards(ctx.storage, ctx.zone("pending", "read"), day)
    spec, k, l = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity.k, ctx.cfg.k_anonymity.l  # noqa: E741
    # A Great Expectations project per date: concurrent runs of other dates (a backfill)
    # never rewrite this one's suite or checkpoint.
    gx_root = ctx.local_area("validation", "write") / partition_name(day)
    run_name = f"{ctx.cfg.purpose}-{day}"
    if len(pending) == 1:  # one piece, where the engine runs it
        [outcome] = run_map(ctx, partial(_validate_whole, day, run_name), [0])
    else:  # each shard's suite where the shard runs; only the per-group counts come back
        remove_tree(gx_root / SHARDS_DIR)  # an earlier run's, maybe of more shards
        parts = run_map(ctx, partial(_validate_shard, day, run_name), range(len(pending)))
        outcome = merged_validation(parts, spec, k=k, l=l, data_docs_index=str(
            write_shard_docs_index(gx_root, [p.record for p in parts], day)))
    reid = records.load(ReidentificationRecord)
    outcome = _with_reidentification(outcome, reid)
    records.save(outcome)
    if not outcome.success:
        failed = ", ".join(f"{c.expectation}({c.column or 'table'})" for c in outcome.failures)
        raise ValidationFailedError(
            f"{day}: minimization suite failed: {failed}; publishing is blocked"
            + (f" ({reid.describe()})" if reid is not None and not reid.passed else ""))
    # the promotion
    return str(ctx.storage.write_shards(ctx.zone("published", "write"), day, iter(pending),
                                        len(pending)))


def _validate_whole(day: date, run_name: str, ctx: RunContext, _i: int) -> ValidationRecord:
    """The whole suite on a day in one piece."""
    from pipeline.transforms.validate.suite import validate_table  # GX

    spec, kcfg = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
    table = ctx.storage.read(ctx.zone("pending", "read"), day)
    return validate_table(table, spec, k=kcfg.k, l=kcfg.l,
                          gx_root=ctx.local_area("validation", "write") / partition_name(day),
                          run_name=run_name, detector=_detector(ctx))


def _validate_shard(day: date, run_name: str, ctx: RunContext, i: int) -> ShardValidation:
    """The suite on shard `i` of the pending partition, where it runs, in a Great
    Expectations project of its own (two workers never rewrite one project's suite)."""
    from pipeline.transforms.validate.suite import validate_shard  # GX

    pending = ctx.zone("pending", "read")
    parts = ctx.storage.parts(pending, day)
    table = ctx.storage.read_part(pending, day, parts[i])
    spec, kcfg = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
    root = ctx.local_area("validation", "write") / partition_name(day) / SHARDS_DIR / f"{i:05d}"
    return validate_shard(table, spec, k=kcfg.k, l=kcfg.l, gx_root=root,
                          run_name=f"{run_name}-shard{i:05d}", detector=_detector(ctx))


_detectors: dict[str, FastAnalyzer] = {}


def _detector(ctx: RunContext) -> FastAnalyzer:
    """This process's PII detector for validation, loaded once (a worker validates many
    shards)."""
    where = ctx.cfg.pii.model_dump_json()
    if where not in _detectors:
        _detectors[where] = fast_analyzer(ctx.cfg.pii)
    return _detectors[where]


def _with_reidentification(outcome: ValidationRecord, reid: ReidentificationRecord | None
                           ) -> ValidationRecord:
    """The suite's outcome with the re-identification check (`reidentify`) as one more of its
    checks: a hard guardrail, so the gate fails with it. Missing, it fails: the gate does not
    pass a table nobody attacked."""
    observed = None if reid is None else {
        "rate": round(reid.rate, 4), "limit": round(reid.limit, 4), "attack": reid.worst_attack,
        "applicable": reid.applicable}
    check = CheckResult(expectation="reidentification_rate_at_most_one_in_k", column=None,
                        success=reid is not None and reid.passed, observed=observed,
                        unexpected_count=None if reid is None else max(
                            (a.singled_out for a in reid.attacks), default=0))
    return outcome.model_copy(update={"checks": [*outcome.checks, check],
                                      "success": outcome.success and check.success})


def features(ctx: RunContext, day: date) -> str:
    """Release DP features through the ledger (`pipeline.ledger.release`): charged once,
    returned as stored on reruns.

    A weekly feature set is released on the week's last day (Sunday) from the week's
    generalized partitions (encrypted staging, exact values), every day of which must have
    passed validation; on other days nothing is released. (The engine gates the stage on its
    own day; the release also never reads a day that did not pass, however it is called.)"""
    fcfg, records = ctx.cfg.features, ctx.records(day)
    if not fcfg.enabled:
        records.save(LedgerRecord(release_due=False, period=fcfg.period,
                                  reason=f"purpose {ctx.cfg.purpose} releases no features"))
        return ""
    days = release_days(fcfg.period, day)
    if days is None:
        records.save(LedgerRecord(release_due=False, period=fcfg.period,
                                  next_release=str(next_release(fcfg.period, day))))
        return ""
    for d in days:
        require_validated(ctx, d)
    written = release_once(ctx, day, days, partial(_draw, ctx, day, days))
    if (rec := records.load(LedgerRecord)) is not None and rec.release_due \
            and not rec.reused_stored_release:
        ctx.audit("release", detail={
            "feature_set": rec.feature_set, "release_date": rec.date, "covers": rec.covers,
            "unit": rec.unit, "cost": rec.cost, "window_spent": rec.window_spent,
            "payload_sha256": rec.payload_sha256})
    return written


def _draw(ctx: RunContext, day: date, days: list[date], charge: Charge) -> Release:
    """Draw the release from the exact values of validated days (encrypted staging): DP
    protects the output, and the published table keeps only coarse ones. A day's shards hold
    disjoint users: each is bounded where it runs and only the bounded rows come back. A
    week's days are split by user differently each day, so a weekly release regroups them by
    user first (`_week_bounded`)."""
    # Paused and withdrawn users, and reset users' earlier profile, leave every release from
    # the next run on, even one over days read before they decided (nothing is deleted here).
    stopped = stopped_pseudonyms(ctx, verified(ctx).table)
    fcfg, bands, user = ctx.cfg.features, ctx.cfg.generalize.age_bands, ctx.user_col
    if days == [day]:
        n = len(ctx.storage.parts(ctx.zone("generalized", "read"), day))
        parts = run_map(ctx, partial(_bound_shard, day, stopped), range(n),
                        rows=lambda p: p[0].rows_in)
        bounded, left = [b for b, _ in parts], sum(n for _, n in parts)
    else:
        bounded, left = _week_bounded(ctx, day, days, stopped)
    rel, stats = release_from_bounded(bounded, fcfg, age_bands=bands, user_col=user,
                                      release_date=str(day))
    stats.details = stats.details_of(FeaturesDetails).model_copy(
        update={"rows_left_out_for_consent": left})
    ctx.records(day).save_stats(stats)
    return Release.drawn(charge, delta=rel.delta, mechanism=rel.mechanism, library=rel.library,
                         payload=parquet_bytes(rel.table))


def _week_bounded(ctx: RunContext, day: date, days: list[date], stopped: list[str]
                  ) -> tuple[list[BoundedShard], int]:
    """A week bounded by user without holding it: every shard of its days is split by a hash
    of the user into as many buckets as the week has shards (one map), parked encrypted in the
    release date's `_spill` folder of the generalized zone (the stage's `scratch`), and each
    bucket, which then holds all of its users' week, is bounded where it runs (a second map).
    About a shard is in memory at a time; the pieces are removed however the draw ends.
    Returns the buckets' bounded rows and the rows left out for consent."""
    zone = ctx.zone("generalized", "read")
    pieces = [(d, i) for d in days for i in range(len(ctx.storage.parts(zone, d)))]
    spill = ctx.storage.spill_dir(zone, day)
    remove_tree(spill)  # a crashed draw's
    try:
        left = run_map(ctx, partial(_regroup_shard, day, stopped, len(pieces)), pieces)
        buckets = run_map(ctx, partial(_bound_bucket, day), range(len(pieces)),
                          rows=lambda b: 0 if b is None else b.rows_in)
    finally:
        remove_tree(spill)
    found = [b for b in buckets if b is not None]
    if not found:  # nobody left (all stopped): the week's columns, without rows
        d, i = pieces[0]
        found = [_bounded(ctx, ctx.storage.read_part(zone, d, ctx.storage.parts(zone, d)[i])
                          .clear(), day)]
    return found, sum(left)


def _regroup_shard(day: date, stopped: list[str], buckets: int, ctx: RunContext,
                   piece: tuple[date, int]) -> int:
    """Map 1 of `_week_bounded`: shard `i` of day `d`, without stopped users, split into
    `buckets` pieces by user; returns how many rows left for consent."""
    d, i = piece
    zone, storage = ctx.zone("generalized", "read"), ctx.storage
    shard = storage.read_part(zone, d, storage.parts(zone, d)[i])
    kept = _without(shard, stopped, ctx)
    # by the pseudonym's text, whatever the day stored it as (a user split over two buckets
    # would be bounded twice)
    user = pl.col(ctx.user_col).cast(pl.String)
    bucket = (user.hash(seed=_REGROUP_SEED) % buckets).alias("_bucket")
    for (b,), rows in kept.with_columns(bucket).partition_by("_bucket", as_dict=True).items():
        storage.write_file(zone, day, _bucket_file(storage.spill_dir(zone, day), int(b), d, i),
                           rows.drop("_bucket"))
    return shard.height - kept.height


def _bound_bucket(day: date, ctx: RunContext, bucket: int) -> BoundedShard | None:
    """Map 2 of `_week_bounded`: one bucket's rows, from every day, bounded (None if no user
    fell in it)."""
    zone, storage = ctx.zone("generalized", "read"), ctx.storage
    files = sorted(storage.spill_dir(zone, day).glob(f"b{bucket:05d}-*"))
    if not files:
        return None
    return _bounded(ctx, pl.concat([storage.read_part(zone, day, f) for f in files],
                                   how="vertical_relaxed"), day)


_REGROUP_SEED = 7  # any fixed seed: every worker must bucket a user alike


def _bucket_file(spill: DataPath, bucket: int, d: date, i: int) -> DataPath:
    return spill / f"b{bucket:05d}-{d:%Y%m%d}-s{i:05d}.parquet"


def _bound_shard(day: date, stopped: list[str], ctx: RunContext, i: int
                 ) -> tuple[BoundedShard, int]:
    """Shard `i` of the day's generalized partition, bounded where it runs."""
    zone = ctx.zone("generalized", "read")
    shard = ctx.storage.read_part(zone, day, ctx.storage.parts(zone, day)[i])
    kept = _without(shard, stopped, ctx)
    return _bounded(ctx, kept, day), shard.height - kept.height


def _without(events: pl.DataFrame, stopped: list[str], ctx: RunContext) -> pl.DataFrame:
    """`events` without the rows of users who paused, withdrew or reset since."""
    return events.filter(~pl.col(ctx.user_col).is_in(stopped)) if stopped else events


def _bounded(ctx: RunContext, events: pl.DataFrame, day: date) -> BoundedShard:
    """`events` (users whole) bounded for the release of `day`."""
    return bounded_shard(events, ctx.cfg.features, age_bands=ctx.cfg.generalize.age_bands,
                         user_col=ctx.user_col, release_date=str(day))


def publish(ctx: RunContext, day: date) -> str:
    records = ctx.records(day)
    ledger = records.load(LedgerRecord)
    if ledger is None:
        raise MissingInputError(f"{day}: the features stage has not run")
    before = records.load(PublishRecord)
    if ledger.release_due:
        ctx.zone("feature_store", "write")  # Feast's registry and online store
        info = materialize(ctx.cfg, day,
                           release=ctx.file("features", "part.parquet", day, "read"),
                           policy=ctx.policy)
        info.features_sha256 = ledger.payload_sha256
        info.changed = before is None or not before.materialized or \
            before.features_sha256 != ledger.payload_sha256
    else:
        info = PublishRecord(materialized=False, reason=ledger.reason or (
            f"no release due on {day}: features are released {ledger.period}ly"))
    return str(records.save(info))


def report(ctx: RunContext, day: date) -> str:
    return str(write_report(ctx, day))
