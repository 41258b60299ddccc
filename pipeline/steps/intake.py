"""The stages that take a day in: check its input, keep the stored data lawful (erasure,
retention), parse it, and check it looks like a normal day before anything is charged or
published. Thin adapters from a run's context to `pipeline.transforms` (see `pipeline.steps`).
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import polars as pl

from pipeline.access.changes import log_changes
from pipeline.core.context import RunContext
from pipeline.core.details import ConsentDetails
from pipeline.core.errors import ConfigError, GuardrailError, MissingInputError
from pipeline.core.fs import DataPath, is_local, remove_tree
from pipeline.core.records import (
    ErasureRecord,
    GuardrailRecord,
    InputRecord,
    RetentionRecord,
    StageStats,
    ValidationRecord,
)
from pipeline.core.shardwork import run_map
from pipeline.stages import INPUT_MARKER, ZONES
from pipeline.steps.consents import CONSENT_FILE, decisions, imported
from pipeline.transforms.consent import (
    PAUSED,
    all_epochs,
    decisions_for,
    latest_decisions,
    pseudonym_epochs,
    users_whose_latest,
)
from pipeline.transforms.erasure import (
    erase_from_zone,
    erase_raw_lines,
    old_pseudonyms,
    pseudonyms_of,
    published_pseudonyms,
    read_requests,
    withdrawn,
)
from pipeline.transforms.generalize.kanon import short_of
from pipeline.transforms.guardrails import DayInput, check_guardrails
from pipeline.transforms.ingest import (
    ByteRange,
    RangeSplit,
    assembled_shard,
    byte_ranges,
    count_lines,
    ingest_events,
    newlines_in,
    repeated_lines,
    split_range,
    split_stats,
    unterminated,
    user_shard_of,
    with_global_lines,
)
from pipeline.transforms.retention import finish_interrupted, purge

EVENTS_FILE = "events.jsonl"


def erase(ctx: RunContext, day: date) -> str:
    """Apply erasure requests, consent withdrawals and profile resets to every stored
    partition (see `pipeline.transforms.erasure`); published partitions left short of k or ℓ
    are suppressed again. The consent log is brought up to date first: its decisions, not the
    landing file's, say who withdrew or reset."""
    result = ErasureRecord()
    ctx.zone("erasure_requests", "read")
    ids = read_requests(ctx.root)  # the zone's one file (`erasure.REQUESTS`)
    result.requests = len(ids)
    consent = decisions(ctx, imported(ctx).log).table
    cp = ctx.cfg.purpose_spec.consent_purpose
    every = all_epochs(consent, cp)  # a user's pseudonyms in each epoch they have had
    # Active and retired keys: a pseudonym under any of them is the user.
    keys, key_ids, purpose = ctx.keys.keys, ctx.keys.key_ids, ctx.cfg.purpose
    erased = pseudonyms_of(ids, keys, purpose, every) if ids else []
    if ids:
        limit = ctx.cfg.ingest.max_line_bytes
        for raw in sorted(ctx.area("raw_events", "write").glob(f"date=*/{EVENTS_FILE}")):
            result.add_removed("raw/events", erase_raw_lines(raw, ids, max_line_bytes=limit))
        for zone in ctx.staging():
            erase_from_zone(ctx.storage, zone, ids, erased, result, key_ids=key_ids)
        # the log's rows first: a landing line already erased must be erased in the log
        result.add_removed("consent log", ctx.consent_log("write").erase(ids))
        result.add_removed("raw/consent", erase_raw_lines(
            ctx.file("raw_consent", CONSENT_FILE, mode="write"), ids, max_line_bytes=limit))
    gone = withdrawn(consent, cp)
    result.withdrawn_users = len(gone)
    result.paused_users = len(users_whose_latest(consent, cp, (PAUSED,)))
    withdrew = pseudonyms_of(gone, keys, purpose, every) if gone else []
    for name in ("generalized", "pending") if gone else ():  # what later releases read
        erase_from_zone(ctx.storage, ctx.zone(name), [], withdrew, result, key_ids=key_ids)
    resets = pseudonym_epochs(consent, cp).join(
        latest_decisions(decisions_for(consent, cp), "account_id").select(
            "account_id", "_reset_at"), on="account_id")
    result.reset_users = resets.height
    before_reset = old_pseudonyms(resets, every, keys, purpose)
    if resets.height:  # their derived data, as an erasure would (raw events, and the
        # `ingested` zone that is their parse, stay for the purposes they still serve)
        for zone in [z for z in ctx.staging() if z.name != "ingested"]:
            erase_from_zone(ctx.storage, zone, [], before_reset, result, key_ids=key_ids,
                            before=resets.select("account_id", "_reset_at"))
    if ids or gone or resets.height:
        spec, k = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
        zone = ctx.zone("published")
        published = published_pseudonyms(  # a profile purpose's are new each epoch
            sorted({*erased, *withdrew, *before_reset}), keys, spec, ctx.storage.dates(zone))
        erase_from_zone(ctx.storage, zone, [], published, result,
                        short=short_of(spec.quasi_identifiers, ctx.user_col, k.k, l=k.l,
                                       sensitive=spec.sensitive_attribute),
                        key_ids=key_ids)
    removed = sum(int(n) for n in result.removed.values())
    cache = ctx.area("text_cache", "write")
    if removed and cache.exists():  # it names nobody, so it cannot be searched: cleared
        result.add_removed("text cache", sum(1 for p in cache.rglob("*") if p.is_file()))
        remove_tree(cache)
    if removed:  # standing requests are re-applied every day: logged when they removed rows
        ctx.audit("erase", detail={"requests": result.requests, "rows_removed": removed,
                                   "withdrawn_users": result.withdrawn_users,
                                   "reset_users": result.reset_users,
                                   "partitions_rewritten": result.partitions_rewritten})
    return str(ctx.records(day).save(result))


def check_input(ctx: RunContext, day: date) -> str:
    """The run's day must be over (not in the future) and its raw input present, before any
    stage deletes or rewrites anything: a mistyped date must not purge real data. The audit
    log must verify (`pipeline.ledger.audit_log`); a changed purpose file, config or access
    matrix is logged in it."""
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
    lines = _count_lines(ctx, day, source)  # decompressed, as ingest reads them
    log_changes(ctx)  # the audit log verifies, and a changed contract or matrix is logged
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
    """Parse the day. A day of more than `scale.events_per_shard` lines is split into shards
    by a keyed hash of the user, in three maps the engine runs here or on the cluster: each
    byte range of the raw file is decoded where it runs and spilled (encrypted) by user shard
    and by event-id bucket; each bucket finds the re-delivered events; each shard is built
    from its spills without them. No more than a batch, then a shard, is ever in memory, and
    this process only adds up counts."""
    source = raw_events(ctx, day)
    if not source.is_file():
        raise MissingInputError(f"{source}: no raw events for {day}")
    ingested, quarantine = ctx.zone("ingested", "write"), ctx.zone("quarantine", "write")
    storage, records = ctx.storage, ctx.records(day)
    n = max(1, -(-_lines(ctx, day, source) // ctx.cfg.scale.events_per_shard))
    if n == 1:  # one piece, decoded and written where the engine runs it
        [(table, stats)] = run_map(ctx, partial(_ingest_whole, day), [source])
        storage.write(quarantine, day, table)
        records.save_stats(stats)
        return str(storage.partition(ingested, day))
    remove_tree(storage.spill_dir(ingested, day))  # a crashed run's
    ranges = byte_ranges(source, n, ctx.cfg.ingest)
    parts = run_map(ctx, partial(_split_range, day, n), ranges, rows=lambda p: p.lines)
    offsets = [0, *itertools.accumulate(p.lines for p in parts)][:-1]  # parts in range order
    repeated = pl.concat(run_map(ctx, partial(_repeated, day, offsets), range(n)))
    built = run_map(ctx, partial(_build_shard, day, n, offsets, repeated), range(n),
                    rows=lambda r: r[0])
    table, stats = split_stats(parts, offsets, sum(rows for rows, _ in built),
                               sum(dups for _, dups in built))
    storage.write(quarantine, day, table)
    written = storage.commit_shards(ingested, day, n)  # and removes the spills
    records.save_stats(stats)
    return str(written)


def _ingest_whole(day: date, ctx: RunContext, _source: DataPath
                  ) -> tuple[pl.DataFrame, StageStats]:
    """A day in one piece: parsed, re-deliveries dropped, written; (quarantine, stats)."""
    source, schema = raw_events(ctx, day), ctx.cfg.event_schema
    result = ingest_events(source, schema, source_name=str(source.relative_to(ctx.root)),
                           limits=ctx.cfg.ingest, day=day, processes=_decoders(ctx))
    ctx.storage.write(ctx.zone("ingested", "write"), day, result.table)
    return result.quarantine, result.stats


def _decoders(ctx: RunContext) -> int:
    """Processes that decode the raw file side by side: this machine's, where the run may
    start its own (not on a Dask worker, which is one of several on its machine)."""
    return ctx.cfg.scale.decode_processes if ctx.own_workers else 1


def _spill_file(ctx: RunContext, day: date, tag: str, r: int, batch: int) -> DataPath:
    return ctx.storage.spill_dir(ctx.zone("ingested"), day) / f"{tag}-r{r:05d}-{batch:06d}.parquet"


def _spilled(ctx: RunContext, day: date, tag: str) -> list[tuple[int, pl.DataFrame]]:
    """(range, rows) of every piece spilled under `tag`, in range and batch order."""
    zone, storage = ctx.zone("ingested"), ctx.storage
    paths = sorted(storage.spill_dir(zone, day).glob(f"{tag}-r*.parquet"))
    return [(int(p.name.split("-r")[1][:5]), storage.read_part(zone, day, p)) for p in paths]


def _split_range(day: date, n: int, ctx: RunContext, r: ByteRange) -> RangeSplit:
    """Map 1, one byte range: decode it and spill its rows by user shard, its event ids'
    hashes by bucket."""
    source, schema = raw_events(ctx, day), ctx.cfg.event_schema
    zone = ctx.zone("ingested", "write")

    def spill(tag: str, batch: int, rows: pl.DataFrame) -> None:
        ctx.storage.write_file(zone, day, _spill_file(ctx, day, tag, r.index, batch), rows)

    shard_of = user_shard_of(schema, ctx.user_col, ctx.key.derive("shard"), n)
    return split_range(source, schema, r, source_name=str(source.relative_to(ctx.root)), n=n,
                       shard_of=shard_of, spill=spill, limits=ctx.cfg.ingest, day=day,
                       processes=_decoders(ctx))


def _repeated(day: date, offsets: list[int], ctx: RunContext, bucket: int) -> pl.Series:
    """Map 2, one bucket of event ids: the lines that re-deliver an earlier line's event."""
    ctx.zone("ingested", "write")
    return repeated_lines(with_global_lines(_spilled(ctx, day, f"b{bucket:05d}"), offsets))


def _build_shard(day: date, n: int, offsets: list[int], repeated: pl.Series, ctx: RunContext,
                 shard: int) -> tuple[int, int]:
    """Map 3, one user shard: its rows in line order without re-deliveries, written as the
    shard; (rows written, re-deliveries dropped)."""
    zone = ctx.zone("ingested", "write")
    table, dropped = assembled_shard(
        with_global_lines(_spilled(ctx, day, f"s{shard:05d}"), offsets),
        ctx.cfg.event_schema, repeated)
    ctx.storage.write_file(zone, day, ctx.storage.shard_file(zone, day, shard, n), table)
    return table.height, dropped


def _count_lines(ctx: RunContext, day: date, source: DataPath) -> int:
    """Lines of the raw file as ingest reads them: a large uncompressed file's byte ranges are
    counted where the engine runs them, side by side."""
    limits = ctx.cfg.ingest
    ranges = byte_ranges(source, max(1, -(-source.stat().st_size // (1 << 28))), limits)
    if len(ranges) == 1 or ranges[0].end is None:  # small, or gzip (read from the start)
        return count_lines(source, limits)
    return sum(run_map(ctx, partial(_newlines, day), ranges)) + unterminated(source)


def _newlines(day: date, ctx: RunContext, r: ByteRange) -> int:
    return newlines_in(raw_events(ctx, day), r)


def _lines(ctx: RunContext, day: date, source: DataPath) -> int:
    """Lines of the day's raw file: as `check_input` counted them if the file is the one it
    saw (same size), else counted now."""
    seen = ctx.records(day).load(InputRecord)
    if seen is not None and seen.bytes == source.stat().st_size:
        return seen.lines
    return count_lines(source, ctx.cfg.ingest)


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
