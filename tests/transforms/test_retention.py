from datetime import date
from pathlib import Path

from pipeline.config import RetentionConfig
from pipeline.core.records import PurgedPartition
from pipeline.transforms.retention import purge


def _partition(root: Path, area: str, day: str) -> None:
    part = root / area / f"date={day}"
    part.mkdir(parents=True)
    (part / "part.parquet").write_bytes(b"x" * 10)


def test_when_partitions_pass_their_window_then_they_are_deleted_and_listed(
        tmp_path: Path) -> None:
    cfg = RetentionConfig(raw_days=3, quarantine_days=3, staging_days=1, published_days=10)
    for day in ("2026-10-01", "2026-11-08", "2026-11-10"):
        for area in ("raw/events", "quarantine/p/events", "staging/p/ingested",
                     "published/p"):
            _partition(tmp_path, area, day)
    purged = purge(tmp_path, cfg, date(2026, 11, 10))
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("date=*"))
    assert left == ["published/p/date=2026-11-08", "published/p/date=2026-11-10",
                    "quarantine/p/events/date=2026-11-08", "quarantine/p/events/date=2026-11-10",
                    "raw/events/date=2026-11-08", "raw/events/date=2026-11-10",
                    "staging/p/ingested/date=2026-11-10"]
    assert len(purged) == 5 and {p.bytes for p in purged} == {10}
    assert PurgedPartition(area="staging/p/ingested", date="2026-11-08", bytes=10,
                           retention_days=1) in purged
    assert purge(tmp_path, cfg, date(2026, 11, 10)) == []  # a rerun deletes nothing more
    assert not list(tmp_path.rglob(".purging-*"))
