"""The table stages: each returns what to do to every shard of its input (`ShardWork`); the
engine runs it on each shard, here or on a Dask cluster, and writes the results to the stage's
zone and the stats to the run's records (`pipeline.run`). Thin adapters to `pipeline.transforms`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import date
from functools import partial

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.context import RunContext
from pipeline.core.details import ColumnFinding, ConsentDetails, PiiDetails
from pipeline.core.fs import remove_tree
from pipeline.core.keys import MasterKey
from pipeline.core.records import StageStats
from pipeline.core.shardwork import ShardFn, ShardWork, run_map
from pipeline.core.storage import Shards
from pipeline.ledger.consent_log import LogHead
from pipeline.steps.consents import epochs, imported, verified
from pipeline.transforms.consent import filter_by_consent
from pipeline.transforms.generalize.coarsen import Generalizer
from pipeline.transforms.minimize import aggregate, allowlisted, apply_allowlist, group_counts
from pipeline.transforms.pii.columns import scan_columns
from pipeline.transforms.pii.scrub import (
    TEXT_CACHE_ENTRIES,
    WORKERS_FROM_TEXTS,
    TextScrubber,
    distinct_texts,
    fast_analyzer,
    scrub_pii,
)
from pipeline.transforms.pii.text_cache import EarlierTexts
from pipeline.transforms.profile import (
    epoch_of,
    history_of,
    profile_stats,
    publish_profiles,
    shard_profiles,
)
from pipeline.transforms.pseudonymize import pseudonymize_columns


def consent(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """The landing file's new lines are imported into the consent log here, once; each shard
    is filtered by the log's decisions where it runs (`pipeline.steps.consents`)."""
    return ShardWork(open=partial(_consenting, head=imported(ctx).log.head))


@contextmanager
def _consenting(ctx: RunContext, head: LogHead | None) -> Iterator[ShardFn]:
    """The consent log's decisions, read and checked where the shards run (the log must hold
    the head imported above), and each shard filtered by them."""
    records = verified(ctx, head)
    rejected = records.stats.rows_in - records.stats.rows_out
    purpose = ctx.cfg.purpose_spec.consent_purpose

    def each(events: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
        kept, stats = filter_by_consent(events, records.table, purpose=purpose)
        stats.details = stats.details_of(ConsentDetails).model_copy(
            update={"consent_records_rejected": rejected})
        return kept, stats

    yield each


def detect_pii(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """Which untagged columns hold PII is decided on the first shard (a keyed-hash sample of
    users) and applied to all, so every shard keeps the same columns. A day in one piece is
    judged as it is scrubbed, and is read only once."""
    schema, pii = ctx.cfg.event_schema, ctx.cfg.pii
    findings = None
    if pii.text_cache:  # a rerun keeps what it analyses anew
        remove_tree(ctx.storage.partition_dir(ctx.zone("text_cache", "write"), day))
    if len(shards) > 1:
        with fast_analyzer(pii) as analyzer:
            findings = scan_columns(next(iter(shards)), schema, analyzer, pii,
                                    ctx.cfg.purpose_spec.closed_columns)
    return ShardWork(open=partial(_scrubbing, findings, day),
                     finish=partial(_with_token_key, ctx.key.key_id))


@contextmanager
def _scrubbing(findings: list[ColumnFinding] | None, day: date, ctx: RunContext
               ) -> Iterator[ShardFn]:
    """One scrubber (model, and worker processes if this process may start them and its first
    shard has enough distinct texts to be worth them) for the shards run here; with
    `pii.text_cache`, given earlier days' texts, and what it analysed kept after."""
    cfg, key, purpose = ctx.cfg, ctx.key, ctx.cfg.purpose
    with ExitStack() as stack:
        scrubbers: list[TextScrubber] = []

        def each(events: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
            if not scrubbers:
                workers = distinct_texts(events, cfg.event_schema) >= WORKERS_FROM_TEXTS
                earlier = earlier_texts(ctx, day) if cfg.pii.text_cache else None
                scrubbers.append(stack.enter_context(TextScrubber(
                    cfg.pii, key.token_key(purpose), with_workers=workers and ctx.own_workers,
                    earlier=earlier)))
            result = scrub_pii(events, cfg.event_schema, scrubbers[0],
                               pseudonym_key=key.pseudonym_key(purpose),
                               closed=cfg.purpose_spec.closed_columns, findings=findings)
            return result.table, result.stats

        yield each
        if scrubbers and scrubbers[0].fresh:  # only once every shard here succeeded
            keep_texts(ctx, day, scrubbers[0].fresh.table())


def earlier_texts(ctx: RunContext, day: date) -> EarlierTexts:
    """The text cache's entries of this key epoch from days before `day`, newest first, up
    to `TEXT_CACHE_ENTRIES`."""
    zone, storage, tables, held = ctx.zone("text_cache", "read"), ctx.storage, [], 0
    files = ((d, path) for d in sorted((d for d in storage.dates(zone) if d < day), reverse=True)
             for path in sorted(storage.partition_dir(zone, d).glob(f"{_epoch(ctx)}-*")))
    for d, path in files:
        if held >= TEXT_CACHE_ENTRIES:
            break  # no later day's folder is listed
        tables.append(storage.read_part(zone, d, path))
        held += tables[-1].height
    return EarlierTexts(ctx.key.token_key(ctx.cfg.purpose), tables)


def keep_texts(ctx: RunContext, day: date, table: pl.DataFrame) -> None:
    """Texts a scrubber analysed on `day`, a file of their own (each process's scrubber writes
    one; encrypted as the zone is)."""
    zone = ctx.zone("text_cache", "write")
    name = f"{_epoch(ctx)}-{uuid.uuid4().hex}.parquet.enc"
    ctx.storage.write_file(zone, day, ctx.storage.partition_dir(zone, day) / name, table)


def _epoch(ctx: RunContext) -> str:
    """The key epoch a cache file belongs to, as a file name's safe first part."""
    return "texts-" + re.sub(r"[^A-Za-z0-9_.]", "_", ctx.key.key_id)


def _with_token_key(key_id: str, parts: list[StageStats]) -> StageStats:
    stats = StageStats.merged(parts)
    stats.details = stats.details_of(PiiDetails).model_copy(update={"token_key_id": key_id})
    return stats


def pseudonymize(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """Users who reset their profile are pseudonymized in their new epoch: the consent log is
    checked here, and read again where the shards run (to the same head)."""
    return ShardWork(open=partial(_pseudonymizing, head=ctx.consent_log("read").verify().head))


@contextmanager
def _pseudonymizing(ctx: RunContext, head: LogHead | None) -> Iterator[ShardFn]:
    yield partial(pseudonymize_columns, schema=ctx.cfg.event_schema, master=ctx.key,
                  purpose=ctx.cfg.purpose, epochs=epochs(ctx, verified(ctx, head).table))


def generalize(ctx: RunContext, day: date, shards: Shards) -> ShardWork:
    """Two passes over the shards (see `Generalizer`): the k-anonymity plan over all users,
    here, then each shard generalized by it."""
    spec, kcfg = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
    g = Generalizer(ctx.cfg.generalize, quasi_identifiers=spec.event_quasi_identifiers,
                    user_col=ctx.user_col, k=kcfg.k, l=kcfg.l,
                    sensitive=spec.event_sensitive_attribute, order=kcfg.generalize_order)
    # pass 1's per-shard steps where the shards are; only small tables come back
    n = len(shards)
    g.use_devices(run_map(ctx, partial(_planning, g, "device_users", day), range(n)))
    g.plan_from(run_map(ctx, partial(_planning, g, "plan_rows", day), range(n)))
    return ShardWork.each(g.apply, finish=g.stats)


def _planning(g: Generalizer, step: str, day: date, ctx: RunContext, i: int
              ) -> pl.DataFrame | None:
    """`g.<step>` of shard `i` of the stage's input, where it runs."""
    zone = ctx.zone("pseudonymized", "read")
    table = ctx.storage.read_part(zone, day, ctx.storage.parts(zone, day)[i])
    return getattr(g, step)(table)  # type: ignore[no-any-return]


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
