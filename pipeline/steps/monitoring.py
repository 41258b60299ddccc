"""The monitor stage: what the run published, against what was published before
(`pipeline.monitor.drift`). Post-processing of released values and published rows only: no
budget is spent, no staging zone is read."""

from __future__ import annotations

from datetime import date

from pipeline.core.context import RunContext
from pipeline.core.records import MonitorRecord
from pipeline.core.storage import Shards
from pipeline.monitor.disparity import release_disparity
from pipeline.monitor.drift import category_counts, column_drift, feature_drift
from pipeline.transforms.features import Release


def monitor(ctx: RunContext, day: date) -> str:
    cfg, records = ctx.cfg.monitor, ctx.records(day)
    if not cfg.enabled:
        return str(records.save(MonitorRecord(features_note="monitoring is off (monitor.enabled)",
                                               columns_note="monitoring is off")))
    record = _release_drift(ctx, day).model_copy(update=_column_drift(ctx, day))
    return str(records.save(record))


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
    zone, storage, cfg = ctx.zone("published", "read"), ctx.storage, ctx.cfg.monitor
    if not storage.exists(zone, day):
        return {"columns_note": f"nothing published on {day}"}
    held = _held_before(ctx, "published", day, 1)
    if not held:
        return {"columns_note": "no earlier published day to compare with"}
    previous = held[0]
    before, now = (category_counts(Shards(storage, zone, d), max_categories=cfg.max_categories)
                   for d in (previous, day))
    return {"columns": column_drift(before, now, max_js=cfg.max_js_distance,
                                    max_psi=cfg.max_psi),
            "columns_against": str(previous)}
