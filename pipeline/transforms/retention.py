"""Retention: partitions older than their area's window are deleted on every run.

Windows are in days and measured against the run's date (not the clock), so a rerun deletes
the same partitions. A partition is first renamed aside, then removed, so a reader never sees a
half-deleted one. The result lists what went, for the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import date, timedelta

from pipeline.config import RetentionConfig
from pipeline.core.fs import DataPath, is_local, remove_tree
from pipeline.core.records import PurgedPartition
from pipeline.core.storage import dated_partitions
from pipeline.stages import ZONES, Zone


def areas(cfg: RetentionConfig, zones: Iterable[Zone] | None = None) -> dict[str, int]:
    """Glob of partitioned areas under the data root (every purpose's) -> retention in days,
    from the zones (default: all of `ZONES`) that declare a retention class."""
    return {z.path.format(purpose="*", feature_set="*"): getattr(cfg, f"{z.retention}_days")
            for z in (ZONES.values() if zones is None else zones) if z.retention}


STALE_TEMP_SECONDS = 3600  # older than any write in progress; younger may be another run's


def finish_interrupted(root: DataPath, cfg: RetentionConfig, *, now: float | None = None,
                       zones: Iterable[Zone] | None = None) -> list[str]:
    """Finish what a crash left half done: `.purging-date=D` folders renamed aside but not yet
    removed (they may hold raw personal data past its window), and atomic-write temporary
    files older than an hour (a killed writer's; never renamed into place, never read).
    Returns them."""
    leftovers = sorted(p for pattern in areas(cfg, zones) for area in root.glob(pattern)
                       for p in area.glob(".purging-date=*") if p.is_dir())
    for p in leftovers:
        remove_tree(p)
    cutoff = (time.time() if now is None else now) - STALE_TEMP_SECONDS
    temps = sorted(p for p in root.rglob(".*.tmp") if p.is_file()  # only local writes use them
                   and p.stat().st_mtime < cutoff) if is_local(root) else []
    for p in temps:
        p.unlink(missing_ok=True)
    return [str(p.relative_to(root)) for p in (*leftovers, *temps)]


def purge(root: DataPath, cfg: RetentionConfig, today: date, *,
          zones: Iterable[Zone] | None = None) -> list[PurgedPartition]:
    """Delete every `date=D` partition (of `zones`, every purpose's) with D older than its
    window; return what went."""
    purged = []
    for pattern, days in areas(cfg, zones).items():
        oldest_kept = today - timedelta(days=days - 1)
        for area in sorted(root.glob(pattern)):
            for day, part in dated_partitions(area):
                if day >= oldest_kept:
                    continue
                size = sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
                if is_local(root):  # out of readers' way at once, then removed
                    doomed = part.with_name(f".purging-{part.name}")
                    part.rename(doomed)
                    part = doomed
                remove_tree(part)  # an object store has no rename: a rerun finishes it
                purged.append(PurgedPartition(area=str(area.relative_to(root)), date=str(day),
                                              bytes=size, retention_days=days))
    return purged
