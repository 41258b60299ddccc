"""What watches the published data. `reidentify`: the insider join attack on the day's table
before the gate (`pipeline.monitor.reidentify`), a hard guardrail. `monitor`: what the run
published against what was published before (`pipeline.monitor.drift`), what privacy cost each
group, and the soft guardrails' alerts; post-processing of released values and published rows
only: no budget is spent, no staging zone is read."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from pipeline.core.context import RunContext
from pipeline.core.details import GeneralizeDetails, PiiDetails
from pipeline.core.records import MonitorRecord, RunRecords
from pipeline.core.storage import Shards
from pipeline.monitor.alerts import (
    disparity_alerts,
    drift_alerts,
    spike_alerts,
    suppression_alert,
)
from pipeline.monitor.disparity import release_disparity
from pipeline.monitor.drift import (
    MIN_HISTORY,
    PublishedCounts,
    category_counts,
    column_drift,
    feature_drift,
)
from pipeline.monitor.reidentify import known_from_shard, reidentification
from pipeline.transforms.features import Release
from pipeline.transforms.profile import epoch_of


def reidentify(ctx: RunContext, day: date) -> str:
    """The day's pending table against an insider holding the generalized zone: one pass
    over its shards, each reduced to what the attacker derives from it."""
    cfg, spec, k = ctx.cfg.monitor.reidentification, ctx.cfg.purpose_spec, ctx.cfg.k_anonymity.k
    pending = pl.concat(list(Shards(ctx.storage, ctx.zone("pending", "read"), day)),
                        how="vertical_relaxed")
    known = []
    if spec.aggregate is None and spec.pseudonym_columns:
        epoch = epoch_of(day, spec.profile.epoch) if spec.profile else ""
        seed = int(day.strftime("%Y%m%d"))  # a rerun draws the same known events
        known = [known_from_shard(shard, spec, key=ctx.key, epoch=epoch, k=k,
                                  m=max(cfg.known_events), seed=seed)
                 for shard in Shards(ctx.storage, ctx.zone("generalized", "read"), day)]
    record = reidentification(pending, known, spec, k=k,
                              coarser=[list(e) for e in ctx.cfg.generalize.age_band_coarser_edges],
                              known_events=cfg.known_events, max_rate=cfg.max_rate)
    return str(ctx.records(day).save(record))


def monitor(ctx: RunContext, day: date) -> str:
    cfg, records = ctx.cfg.monitor, ctx.records(day)
    if not cfg.enabled:
        return str(records.save(MonitorRecord(features_note="monitoring is off (monitor.enabled)",
                                               columns_note="monitoring is off")))
    record = _release_drift(ctx, day).model_copy(update=_column_drift(ctx, day))
    record = record.model_copy(update=_alerts(ctx, day, record))
    return str(records.save(record))


def _alerts(ctx: RunContext, day: date, record: MonitorRecord) -> dict[str, object]:
    """The soft guardrails (`pipeline.monitor.alerts`) over what the run measured."""
    cfg, records = ctx.cfg.monitor, ctx.records(day)
    if not cfg.alerts.enabled:
        return {"alerts_note": "alerts are off (monitor.alerts.enabled)"}
    a = cfg.alerts
    out = drift_alerts(record.features, record.columns, max_js=cfg.max_js_distance) \
        if a.drift else []
    out += disparity_alerts(record.disparity, a)
    if (gen := records.stage_stats("generalize")) is not None:
        g = gen.details_of(GeneralizeDetails)
        out += suppression_alert(g.group_costs, a)
    pii, quarantine = _pii_found(records), _quarantine_shares(records)
    earlier = _recent_runs(ctx, day, a.baseline_runs)
    if pii is not None:
        out += spike_alerts("pii_spike", {k: float(v) for k, v in pii.items()},
                            [h for r in earlier if (h := _pii_found(r)) is not None],
                            pii, a, unit="found")
    if quarantine is not None:
        shares, counts = quarantine
        out += spike_alerts("quarantine_spike", shares,
                            [q[0] for r in earlier if (q := _quarantine_shares(r)) is not None],
                            counts, a, unit="of lines")
    return {"alerts": out, "alerts_note": "" if earlier else
            "no earlier run to compare PII and quarantine counts with"}


def _pii_found(records: RunRecords) -> dict[str, int] | None:
    stats = records.stage_stats("detect_pii")
    return None if stats is None else {k: int(v) for k, v in
                                       stats.details_of(PiiDetails).pii_found.items()}


def _quarantine_shares(records: RunRecords) -> tuple[dict[str, float], dict[str, int]] | None:
    """Each quarantine reason's share of the day's lines, and its count."""
    stats = records.stage_stats("ingest")
    if stats is None or not stats.rows_in:
        return None
    counts = {k: int(v) for k, v in stats.quarantined.items()}
    return {k: n / stats.rows_in for k, n in counts.items()}, counts


def _recent_runs(ctx: RunContext, day: date, n: int) -> list[RunRecords]:
    """The records of up to `n` earlier run dates that ran ingest, most recent first (looking
    back at most 3n days)."""
    out = []
    for back in range(1, 3 * n + 1):
        records = ctx.records(day - timedelta(days=back))
        if records.stage_stats("ingest") is not None:
            out.append(records)
            if len(out) == n:
                break
    return out


def _held_before(ctx: RunContext, zone: str, day: date, n: int) -> list[date]:
    """Up to `n` latest dates before `day` that hold a partition (a folder emptied by erasure
    setting a corrupt file aside holds none), oldest first. Walks back from `day` and stops
    once it has them, so a zone's long history is not listed date by date every run."""
    z, storage = ctx.zone(zone, "read"), ctx.storage
    found: list[date] = []
    for d in sorted((d for d in storage.dates(z) if d < day), reverse=True):
        if len(found) == n:
            break
        if storage.exists(z, d):
            found.append(d)
    return found[::-1]


def _release_drift(ctx: RunContext, day: date) -> MonitorRecord:
    if not ctx.cfg.features.enabled:  # another purpose's release may share the folder name
        return MonitorRecord(features_note=f"purpose {ctx.cfg.purpose} releases no features")
    zone, storage = ctx.zone("features", "read"), ctx.storage
    if not storage.exists(zone, day):
        return MonitorRecord(features_note=f"no release on {day}")
    fcfg, now = ctx.cfg.features, storage.read(zone, day)
    release = Release.of(fcfg)
    disparity = release_disparity(now, release.values())
    # the previous release, and up to `history_releases` before it
    dates = _held_before(ctx, "features", day, ctx.cfg.monitor.history_releases + 1)
    if not dates:
        return MonitorRecord(features_note="the first release: nothing to compare it with",
                             disparity=disparity)
    chain = [storage.read(zone, d) for d in dates]  # oldest first
    drift = feature_drift(chain[-1], now, release.variation(), kind=fcfg.mechanism.noise,
                          alpha=ctx.cfg.monitor.alpha,
                          history=list(zip(chain[:-1], chain[1:], strict=True)))
    return MonitorRecord(features=drift, disparity=disparity)


def _column_drift(ctx: RunContext, day: date) -> dict[str, object]:
    """The day's published columns against the previous published day's, judged against
    their day-to-day variation over the `history_releases` published days before (each
    day's counts are kept in its monitor record, so no earlier day is read again)."""
    zone, storage, cfg = ctx.zone("published", "read"), ctx.storage, ctx.cfg.monitor
    if not storage.exists(zone, day):
        return {"columns_note": f"nothing published on {day}"}
    now = category_counts(Shards(storage, zone, day), max_categories=cfg.max_categories)
    kept: dict[str, object] = {"published_counts": now.to_dict()}
    held = _held_before(ctx, "published", day, cfg.history_releases + 1)
    if not held:
        return {**kept, "columns_note": "no earlier published day to compare with"}
    chain = [_counts_of(ctx, d) for d in held]  # oldest first
    columns = column_drift(chain[-1], now, max_js=cfg.max_js_distance, max_psi=cfg.max_psi,
                           alpha=cfg.alpha, history=list(zip(chain[:-1], chain[1:],
                                                             strict=True)))
    note = ("" if all(c.p_value is not None for c in columns) else
            f"columns without {MIN_HISTORY} earlier day-to-day comparisons are measured, not "
            "judged: their usual variation is not known yet")
    return {**kept, "columns": columns, "columns_against": str(held[-1]), "columns_note": note}


def _counts_of(ctx: RunContext, d: date) -> PublishedCounts:
    """A published day's column counts: from its monitor record, else counted again."""
    record = ctx.records(d).load(MonitorRecord)
    if record is not None and record.published_counts:
        return PublishedCounts.from_dict(record.published_counts)
    return category_counts(Shards(ctx.storage, ctx.zone("published", "read"), d),
                           max_categories=ctx.cfg.monitor.max_categories)