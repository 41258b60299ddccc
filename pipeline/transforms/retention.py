"""Retention: partitions older than their area's window are deleted on every run.

Windows are in days and measured against the run's date (not the clock), so a rerun deletes
the same partitions. A partition is first renamed aside, then removed, so a reader never sees a
half-deleted one. The result lists what went, for the report.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

from pipeline.config import RetentionConfig
from pipeline.core.records import PurgedPartition
from pipeline.core.storage import dated_partitions


def areas(cfg: RetentionConfig) -> dict[str, int]:
    """Glob of partitioned areas under the data root -> retention in days."""
    return {"raw/events": cfg.raw_days, "quarantine/*": cfg.quarantine_days,
            "staging/*": cfg.staging_days, "pending/*": cfg.staging_days,
            "published/*": cfg.published_days}


def finish_interrupted(root: Path, cfg: RetentionConfig) -> list[str]:
    """Finish deletions a crash left half done: `.purging-date=D` folders renamed aside but
    not yet removed (they may hold raw personal data past its window). Returns them."""
    leftovers = sorted(p for pattern in areas(cfg) for area in root.glob(pattern)
                       for p in area.glob(".purging-date=*") if p.is_dir())
    for p in leftovers:
        shutil.rmtree(p)
    return [str(p.relative_to(root)) for p in leftovers]


def purge(root: Path, cfg: RetentionConfig, today: date) -> list[PurgedPartition]:
    """Delete every `date=D` partition with D older than its window; return what went."""
    purged = []
    for pattern, days in areas(cfg).items():
        oldest_kept = today - timedelta(days=days - 1)
        for area in sorted(root.glob(pattern)):
            for day, part in dated_partitions(area):
                if day >= oldest_kept:
                    continue
                size = sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
                doomed = part.with_name(f".purging-{part.name}")
                part.rename(doomed)
                shutil.rmtree(doomed)
                purged.append(PurgedPartition(area=str(area.relative_to(root)), date=str(day),
                                              bytes=size, retention_days=days))
    return purged
