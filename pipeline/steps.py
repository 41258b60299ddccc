"""What each row of `pipeline.stages.STAGES` calls, by its `target` name: thin adapters from a
run's context to the transforms, the ledger's release protocol and the outputs.

Table stages take the shards of the partition the engine reads (a day in one piece is one
shard), do what needs all of them (a plan), and return what to do to each shard
(`ShardWork`); the engine runs it on every shard, here or on a Dask cluster, and writes the
results to the stage's zone and the stats to the run's records. Task stages do their own
reading and writing and return the path they wrote. Every stage takes the run's day as a
`date`, parsed once at the boundary (`pipeline.core.context.parse_day`), and a context held to
its row of the stage table: every zone, path and record comes from it.

All imports are at the top except Great Expectations (7–14 s), which only `validate` needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.context import RunContext
from pipeline.core.details import ColumnFinding, ConsentDetails, PiiDetails
from pipeline.core.errors import (
    ConfigError,
    GuardrailError,
    MissingInputError,
    ValidationFailedError,
)
from pipeline.core.fs import DataPath, is_local, remove_tree
from pipeline.core.gates import require_guarded, require_validated
from pipeline.core.keys import MasterKey
from pipeline.core.layout import partition_name
from pipeline.core.records import (
    ErasureRecord,
    GuardrailRecord,
    InputRecord,
    LedgerRecord,
    PublishRecord,
    RetentionRecord,
    StageStats,
    ValidationRecord,
)
from pipeline.core.shardwork import ShardFn, ShardWork
from pipeline.core.storage import Shards, parquet_bytes
from pipeline.ledger.release import next_release, release_days, release_once
from pipeline.ledger.store import Charge, Release
from pipeline.outputs.feast import materialize
from pipeline.outputs.report import write_report
from pipeline.stages import INPUT_MARKER, ZONES
from pipeline.transforms.consent import filter_by_consent
from pipeline.transforms.erasure import (
    erase_from_zone,
    erase_raw_lines,
    pseudonyms_of,
    published_pseudonyms,
    read_requests,
    withdrawn,
)
from pipeline.transforms.features import release_from_shards
from pipeline.transforms.generalize.coarsen import Generalizer
from pipeline.transforms.generalize.kanon import short_of
from pipeline.transforms.guardrails import DayInput, check_guardrails
from pipeline.transforms.ingest import (
    count_lines,
    ingest_events,
    ingest_shards,
    read_records,
    user_shard_of,
)
from pipeline.transforms.minimize import aggregate, allowlisted, apply_allowlist, group_counts
from pipeline.transforms.pii.columns import scan_columns
from pipeline.transforms.pii.scrub import (
    WORKERS_FROM_TEXTS,
    TextScrubber,
    distinct_texts,
    fast_analyzer,
    scrub_pii,
)
from pipeline.transforms.profile import (
    epoch_of,
    history_of,
    profile_stats,
    publish_profiles,
    shard_profiles,
)
from pipeline.transforms.pseudonymize import pseudonymize_columns
from pipeline.transforms.retention import finish_interrupted, purge

EVENTS_FILE, CONSENT_FILE = "events.jsonl", "consent.jsonl"


def erase(ctx: RunContext, day: date) -> str:
    """Apply erasure requests and consent withdrawals to every stored partition (see
    `pipeline.transforms.erasure`); published partitions left short of k or ℓ are suppressed
    again."""
    result = ErasureRecord()
    ctx.zone("erasure_requests", "read")
    ids = read_requests(ctx.root)  # the zone's one file (`erasure.REQUESTS`)
    result.requests = len(ids)
    # Active and retired keys: a pseudonym under any of them is the user.
    keys, key_ids, purpose = ctx.keys.keys, ctx.keys.key_ids, ctx.cfg.purpose
    consent_path = ctx.file("raw_consent", CONSENT_FILE)
    erased = pseudonyms_of(ids, keys, purpose) if ids else []
    limit = ctx.cfg.ingest.max_line_bytes
    if ids:
        for raw in sorted(ctx.area("raw_events", "write").glob(f"date=*/{EVENTS_FILE}")):
            result.add_removed("raw/events", erase_raw_lines(raw, ids, max_line_bytes=limit))
        result.add_removed("raw/consent", erase_raw_lines(consent_path, ids,
                                                          max_line_bytes=limit))
        for zone in ctx.staging():
            erase_from_zone(ctx.storage, zone, ids, erased, result, key_ids=key_ids)
    gone = []
    if consent_path.is_file():
        consent = read_records(consent_path, ctx.cfg.consent_schema,
                               source_name=str(consent_path)).table
        gone = withdrawn(consent, ctx.cfg.purpose_spec.consent_purpose)
    result.withdrawn_users = len(gone)
    withdrew = pseudonyms_of(gone, keys, purpose) if gone else []
    for name in ("generalized", "pending") if gone else ():  # what later releases read
        erase_from_zone(ctx.storage, ctx.zone(name), [], withdrew, result, key_ids=key_ids)
    if ids or gone:
        spec, k = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
        zone = ctx.zone("published")
        published = published_pseudonyms(  # a profile purpose's are new each epoch
            sorted({*erased, *withdrew}), keys, spec, ctx.storage.dates(zone))
        erase_from_zone(ctx.storage, zone, [], published, result,
                        short=short_of(spec.quasi_identifiers, ctx.user_col, k.k, l=k.l,
                                       sensitive=spec.sensitive_attribute),
                        key_ids=key_ids)
    return str(ctx.records(day).save(result))


def check_input(ctx: RunContext, day: date) -> str:
    """The run's day must be over (not in the future) and its raw input present, before any
    stage deletes or rewrites anything: a mistyped date must not purge real data."""
    if day > date.today():
        raise ConfigError(f"{day} has not happened yet (today is {date.today()}); nothing "
                          "was run or deleted")
    source = raw_events(ctx, day)
    if not source.is_file():
        raise MissingInputError(f"{source}: no raw events for {day}; nothing was run or "
                                "deleted")
    if not input_marker(ctx, day).is_file():
        raise MissingInputError(f"{source.parent}: no {INPUT_MARKER} marker, so the day's "
                                "input may be incomplete; nothing was run or deleted")
    if is_local(source):
        local, root = Path(str(source)), Path(str(ctx.root)).resolve()
        if local.is_symlink() and not local.resolve().is_relative_to(root):
            raise MissingInputError(f"{source}: a symbolic link to a file outside the data "
                                    "root; raw input must be the landing side's own file, "
                                    "never read through a link (nothing was run or deleted)")
    lines = count_lines(source, ctx.cfg.ingest)  # decompressed, as ingest reads them
    return str(ctx.records(day).save(InputRecord(
        source=str(source.relative_to(ctx.root)), bytes=source.stat().st_size, lines=lines)))


def retention(ctx: RunContext, day: date) -> str:
    """Finish purges a crash interrupted, then delete partitions past their retention window
    (every purpose's, as the zones' folders for any purpose); record what went."""
    zones = [ZONES[ctx.zone(n, "write").name] for n, z in ZONES.items() if z.retention]
    cfg = ctx.cfg.retention
    return str(ctx.records(day).save(RetentionRecord(
        interrupted_finished=finish_interrupted(ctx.root, cfg, zones=zones),
        purged=purge(ctx.root, cfg, day, zones=zones), windows_days=cfg.model_dump())))


def raw_events(ctx: RunContext, day: date) -> DataPath:
    """The day's raw events file, as the landing side writes it."""
    return ctx.file("raw_events", EVENTS_FILE, day, "read")


def input_marker(ctx: RunContext, day: date) -> DataPath:
    """The file whose arrival says the day's raw input is complete (landing side's)."""
    return ctx.file("raw_events", INPUT_MARKER, day, "read")


def ingest(ctx: RunContext, day: date) -> str:
    """Parse the day; a day of more than `scale.events_per_shard` lines is split into shards
    by a keyed hash of the user, decoded batch by batch through encrypted spill files, so no
    more than a batch and then a shard is ever in memory."""
    source = raw_events(ctx, day)
    if not source.is_file():
        raise MissingInputError(f"{source}: no raw events for {day}")
    name, schema = str(source.relative_to(ctx.root)), ctx.cfg.event_schema
    ingested, quarantine = ctx.zone("ingested", "write"), ctx.zone("quarantine", "write")
    storage, records = ctx.storage, ctx.records(day)
    n = max(1, -(-_lines(ctx, day, source) // ctx.cfg.scale.events_per_shard))
    if n == 1:
        result = ingest_events(source, schema, source_name=name, limits=ctx.cfg.ingest,
                               day=day)
        storage.write(quarantine, day, result.quarantine)
        records.save_stats(result.stats)
        return str(storage.write(ingested, day, result.table))
    spills = storage.spill_dir(ingested, day)
    remove_tree(spills)  # a crashed run's

    def spill(shard: int, batch: int, rows: pl.DataFrame) -> None:
        storage.write_file(ingested, day, spills / f"{shard:05d}-{batch:06d}.parquet", rows)

    def load(shard: int) -> list[pl.DataFrame]:
        return [storage.read_part(ingested, day, p)
                for p in sorted(spills.glob(f"{shard:05d}-*.parquet"))]

    shard_of = user_shard_of(schema, ctx.user_col, ctx.key.derive("shard"), n)
    sharded = ingest_shards(source, schema, source_name=name, n=n, shard_of=shard_of,
                            spill=spill, load=load, limits=ctx.cfg.ingest, day=day)
    storage.write(quarantine, day, sharded.quarantine)
    written = storage.write_shards(ingested, day, sharded.shards(), n)
    records.save_stats(sharded.stats())
    return str(written)


def _lines(ctx: RunContext, day: date, source: DataPath) -> int:
    """Lines of the day's raw file: as `check_input` counted them if the file is the one it
    saw (same size), else counted now."""
    seen = ctx.records(day).load(InputRecord)
    if seen is not None and seen.bytes == source.stat().st_size:
        return seen.lines
    return count_lines(source, ctx.cfg.ingest)


# A table stage returns what to do to each shard of its input (`ShardWork`); the engine runs it
# on every shard, here or on a cluster, and writes the results (`pipeline.run`).


def consent(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    path = ctx.file("raw_consent", CONSENT_FILE, mode="read")
    if not path.is_file():
        raise MissingInputError(f"{path}: no consent records (without them nobody has "
                                "consented)")
    return ShardWork(open=_consenting)


@contextmanager
def _consenting(ctx: RunContext) -> Iterator[ShardFn]:
    """The consent records, read where the shards run, and each shard filtered by them."""
    path = ctx.file("raw_consent", CONSENT_FILE, mode="read")
    records = read_records(path, ctx.cfg.consent_schema, source_name=str(path))
    rejected = records.stats.rows_in - records.stats.rows_out
    purpose = ctx.cfg.purpose_spec.consent_purpose

    def each(events: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
        kept, stats = filter_by_consent(events, records.table, purpose=purpose)
        stats.details = stats.details_of(ConsentDetails).model_copy(
            update={"consent_records_rejected": rejected})
        return kept, stats

    yield each


def guardrails(ctx: RunContext, day: date) -> str:
    """The day's volume, users and quarantine share against the purpose's guardrails, before
    anything is charged or published; a breach stops the run here (GuardrailError), unless
    it is a low-volume one the operator accepted for this day."""
    records, cfg = ctx.records(day), ctx.cfg.guardrails
    ingested, consented = records.stage_stats("ingest"), records.stage_stats("consent")
    if ingested is None or consented is None:
        raise MissingInputError(f"{day}: ingest and consent must run before the guardrails")
    measured = DayInput(rows_in=ingested.rows_in, rows_valid=ingested.rows_out,
                        rows_quarantined=sum(ingested.quarantined.values()),
                        users_after_consent=consented.details_of(ConsentDetails).users_kept)
    accept = ctx.accept_low_volume or day in cfg.accept_low_volume_dates
    record = check_guardrails(measured, cfg, history=_published_volumes(ctx, day),
                              accept_low_volume=accept)
    path = records.save(record)
    if not record.passed:
        raise GuardrailError(
            f"{day}: input guardrail breached: "
            + "; ".join(c.describe() for c in record.breached)
            + ". Nothing was charged or published. If the day is known to be small, rerun "
              "with --accept-low-volume (or list it in guardrails.accept_low_volume_dates)")
    return str(path)


def _published_volumes(ctx: RunContext, day: date) -> list[tuple[str, int]]:
    """(date, valid rows) of the days before `day` that passed the guardrails without an
    override and were published, most recent first: what the volume check compares with."""
    v = ctx.cfg.guardrails.volume
    out: list[tuple[str, int]] = []
    for back in range(1, (v.lookback_days if v else 0) + 1):
        d = day - timedelta(days=back)
        records = ctx.records(d)
        guard, validation = records.load(GuardrailRecord), records.load(ValidationRecord)
        if guard is not None and guard.passed and not guard.accepted and \
                validation is not None and validation.success:
            out.append((str(d), guard.rows_valid))
    return out


def detect_pii(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """Which untagged columns hold PII is decided on the first shard (a keyed-hash sample of
    users) and applied to all, so every shard keeps the same columns. A day in one piece is
    judged as it is scrubbed, and is read only once."""
    schema, pii = ctx.cfg.event_schema, ctx.cfg.pii
    findings = None
    if len(shards) > 1:
        with fast_analyzer(pii) as analyzer:
            findings = scan_columns(next(iter(shards)), schema, analyzer, pii,
                                    ctx.cfg.purpose_spec.closed_columns)
    return ShardWork(open=partial(_scrubbing, findings),
                     finish=partial(_with_token_key, ctx.key.key_id))


@contextmanager
def _scrubbing(findings: list[ColumnFinding] | None, ctx: RunContext) -> Iterator[ShardFn]:
    """One scrubber (model, and worker processes if this process may start them and its first
    shard has enough distinct texts to be worth them) for the shards run here."""
    cfg, key, purpose = ctx.cfg, ctx.key, ctx.cfg.purpose
    with ExitStack() as stack:
        scrubbers: list[TextScrubber] = []

        def each(events: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
            if not scrubbers:
                workers = distinct_texts(events, cfg.event_schema) >= WORKERS_FROM_TEXTS
                scrubbers.append(stack.enter_context(TextScrubber(
                    cfg.pii, key.token_key(purpose), with_workers=workers and ctx.own_workers)))
            result = scrub_pii(events, cfg.event_schema, scrubbers[0],
                               pseudonym_key=key.pseudonym_key(purpose),
                               closed=cfg.purpose_spec.closed_columns, findings=findings)
            return result.table, result.stats

        yield each


def _with_token_key(key_id: str, parts: list[StageStats]) -> StageStats:
    stats = StageStats.merged(parts)
    stats.details = stats.details_of(PiiDetails).model_copy(update={"token_key_id": key_id})
    return stats


def pseudonymize(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    return ShardWork(open=_pseudonymizing)


def _pseudonymizing(ctx: RunContext) -> AbstractContextManager[ShardFn]:
    return nullcontext(partial(pseudonymize_columns, schema=ctx.cfg.event_schema,
                               master=ctx.key, purpose=ctx.cfg.purpose))


def generalize(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """Two passes over the shards (see `Generalizer`): the k-anonymity plan over all users,
    here, then each shard generalized by it."""
    spec, kcfg = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
    g = Generalizer(ctx.cfg.generalize, quasi_identifiers=spec.event_quasi_identifiers,
                    user_col=ctx.user_col, k=kcfg.k, l=kcfg.l,
                    sensitive=spec.event_sensitive_attribute, order=kcfg.generalize_order)
    g.plan(shards)
    return ShardWork.each(g.apply, finish=g.stats)


def minimize(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """Shard by shard. Counts (an aggregate purpose) are summed over the shards and published
    as one table; strict text counts the users of a word over the whole day, so a purpose
    with it minimizes the day in one piece."""
    spec, k = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity.k
    if spec.profile:
        return ShardWork(open=partial(_profiling, day),
                         gather=partial(_profiled, spec, k, ctx.cfg.generalize
                                        .age_band_coarser_edges, _epoch_history(ctx, day)))
    if any(d.strict_text for d in spec.domains.values()):
        return ShardWork.each(_whole, gather=partial(_allowlisted_whole, spec, k))
    if spec.aggregate:
        return ShardWork.each(partial(_group_counts, spec, k),
                              gather=partial(_aggregated, spec, k))
    return ShardWork.each(partial(allowlisted, spec=spec, k=k))


def _profiling(day: date, ctx: RunContext) -> AbstractContextManager[ShardFn]:
    spec = ctx.cfg.purpose_spec
    assert spec.profile is not None
    return nullcontext(partial(_shard_profiles, spec, ctx.cfg.k_anonymity.k, ctx.key,
                               epoch_of(day, spec.profile.epoch)))


def _shard_profiles(spec: PurposeSpec, k: int, key: MasterKey, epoch: str,
                    table: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
    """`shard_profiles`, with stats in events for the gather."""
    out, details = shard_profiles(table, spec, key=key, epoch=epoch, k=k)
    return out, StageStats(stage="minimize", rows_in=table.height, rows_out=table.height,
                           details=details)


def _profiled(spec: PurposeSpec, k: int, coarser: Sequence[Sequence[int]], history: pl.DataFrame,
              tables: list[pl.DataFrame], parts: list[StageStats]
              ) -> tuple[pl.DataFrame, StageStats]:
    merged = StageStats.merged(parts)
    out, details = publish_profiles(pl.concat(tables), spec, k=k, coarser_age_edges=coarser,
                                    history=history)
    return profile_stats(merged.rows_in, out, details, merged)


def _epoch_history(ctx: RunContext, day: date) -> pl.DataFrame:
    """Earlier published profiles of the day's epoch (none for a daily epoch)."""
    spec = ctx.cfg.purpose_spec
    assert spec.profile is not None
    if spec.profile.epoch == "day":
        return history_of([], spec)
    epoch = epoch_of(day, spec.profile.epoch)
    zone, storage = ctx.zone("published", "read"), ctx.storage
    earlier = [d for d in storage.dates(zone)
               if d < day and epoch_of(d, spec.profile.epoch) == epoch and storage.exists(zone, d)]
    return history_of((storage.read(zone, d) for d in earlier), spec)


def _whole(table: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
    return table, StageStats(stage="minimize", rows_in=table.height, rows_out=table.height)


def _allowlisted_whole(spec: PurposeSpec, k: int, tables: list[pl.DataFrame],
                       _parts: list[StageStats]) -> tuple[pl.DataFrame, StageStats]:
    return apply_allowlist(pl.concat(tables), spec, k=k)


def _group_counts(spec: PurposeSpec, k: int, table: pl.DataFrame
                  ) -> tuple[pl.DataFrame, StageStats]:
    out, stats = allowlisted(table, spec, k=k)
    return group_counts(out, spec), stats


def _aggregated(spec: PurposeSpec, k: int, counts: list[pl.DataFrame], parts: list[StageStats]
                ) -> tuple[pl.DataFrame, StageStats]:
    return aggregate(list(zip(counts, parts, strict=True)), spec, k=k)


def validate(ctx: RunContext, day: date) -> str:
    """Run the suite on the pending partition (shard by shard on a large day); promote it to
    `published` only if it passes, else raise ValidationFailedError (after saving the
    outcome)."""
    from pipeline.transforms.validate.suite import validate_shards, validate_table  # GX

    records = ctx.records(day)
    before = records.load(ValidationRecord)  # a rekey revalidates a validated day
    require_guarded(ctx, day, validated_before=before is not None and before.success)
    pending = Shards(ctx.storage, ctx.zone("pending", "read"), day)
    spec, k, l = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity.k, ctx.cfg.k_anonymity.l  # noqa: E741
    # A Great Expectations project per date: concurrent runs of other dates (a backfill)
    # never rewrite this one's suite or checkpoint.
    gx_root = ctx.local_area("validation", "write") / partition_name(day)
    run_name = f"{ctx.cfg.purpose}-{day}"
    with fast_analyzer(ctx.cfg.pii) as detector:
        if len(pending) == 1:
            outcome = validate_table(next(iter(pending)), spec, k=k, l=l, gx_root=gx_root,
                                     run_name=run_name, detector=detector)
        else:
            outcome = validate_shards(pending, spec, k=k, l=l, gx_root=gx_root,
                                      run_name=run_name, detector=detector)
    records.save(outcome)
    if not outcome.success:
        failed = ", ".join(f"{c.expectation}({c.column or 'table'})" for c in outcome.failures)
        raise ValidationFailedError(f"{day}: minimization suite failed: {failed}; "
                                    "publishing is blocked")
    # the promotion
    return str(ctx.storage.write_shards(ctx.zone("published", "write"), day, iter(pending),
                                        len(pending)))


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
    return release_once(ctx, day, days, partial(_draw, ctx, day, days))


def _draw(ctx: RunContext, day: date, days: list[date], charge: Charge) -> Release:
    """Draw the release from the exact values of validated days (encrypted staging): DP
    protects the output, and the published table keeps only coarse ones. A day's shards hold
    disjoint users and are bounded one at a time; a week's days are split by user
    differently each day, so a weekly release reads them whole."""
    zone, storage = ctx.zone("generalized", "read"), ctx.storage
    shards: Iterable[pl.DataFrame] = (
        Shards(storage, zone, day) if days == [day]
        else [pl.concat([storage.read(zone, d) for d in days])])
    rel, stats = release_from_shards(shards, ctx.cfg.features,
                                     age_bands=ctx.cfg.generalize.age_bands,
                                     user_col=ctx.user_col, release_date=str(day))
    ctx.records(day).save_stats(stats)
    return Release.drawn(charge, delta=rel.delta, mechanism=rel.mechanism, library=rel.library,
                         payload=parquet_bytes(rel.table))


def publish(ctx: RunContext, day: date) -> str:
    records = ctx.records(day)
    ledger = records.load(LedgerRecord)
    if ledger is None:
        raise MissingInputError(f"{day}: the features stage has not run")
    before = records.load(PublishRecord)
    if ledger.release_due:
        ctx.zone("feature_store", "write")  # Feast's registry and online store
        info = materialize(ctx.cfg, day,
                           release=ctx.file("features", "part.parquet", day, "read"))
        info.features_sha256 = ledger.payload_sha256
        info.changed = before is None or not before.materialized or \
            before.features_sha256 != ledger.payload_sha256
    else:
        info = PublishRecord(materialized=False, reason=ledger.reason or (
            f"no release due on {day}: features are released {ledger.period}ly"))
    return str(records.save(info))


def report(ctx: RunContext, day: date) -> str:
    return str(write_report(ctx, day))
