"""Where every zone and partition is: the one place a path under the data roots is formed (the
role of dagster's IO manager). A zone lives under the data root (local or an object store), or
under `paths.local_root` when it must be a local file (`Zone.local`: a SQLite ledger, the Feast
registry, Great Expectations projects); a partition is its zone's `date=YYYY-MM-DD` folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline.core.fs import DataPath
from pipeline.stages import Zone


def partition_name(day: date) -> str:
    """A date partition's folder name (`date=YYYY-MM-DD`)."""
    return f"date={day}"


@dataclass(frozen=True)
class Layout:
    """Paths of zones, partitions and files under the data root and the local root."""

    root: DataPath
    local: Path | None = None  # without one, only data-root zones have a place

    def area(self, zone: Zone) -> DataPath:
        """The folder of a zone under the data root (every date's partitions, or its files)."""
        if zone.local:
            raise ValueError(f"zone {zone.name} is under the local root: use local_area")
        return self.root / zone.path

    def local_area(self, zone: Zone) -> Path:
        """The folder of a zone under the local root."""
        if not zone.local or self.local is None:
            raise ValueError(f"zone {zone.name}: not under a local root")
        return self.local / zone.path

    def partition_dir(self, zone: Zone, day: date) -> DataPath:
        return self.area(zone) / partition_name(day)

    def file(self, zone: Zone, name: str, day: date | None = None) -> DataPath:
        """A named file of the zone (of its partition for `day`)."""
        return (self.area(zone) if day is None else self.partition_dir(zone, day)) / name

    def set_aside(self, path: DataPath) -> DataPath:
        """Where an unreadable file or folder under the data root is moved, out of every
        reader's way: `quarantine/corrupt/` with its path kept."""
        return self.root / "quarantine" / "corrupt" / path.relative_to(self.root)
