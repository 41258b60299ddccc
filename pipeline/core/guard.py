"""A stage held to its row of the stage table (`pipeline.stages.Stage`): the storage and run
records a stage's context hands out (`RunContext.for_stage`) check every zone and record it
reads or writes against what the row declares, and record what was touched, so a test can hold
the declarations to what the stages do. Touching anything undeclared raises
`UndeclaredAccessError` before the access happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import polars as pl

from pipeline.core.errors import UndeclaredAccessError
from pipeline.core.fs import DataPath
from pipeline.core.records import R, Record, RunRecords, StageOutcome, StageStats
from pipeline.core.storage import Storage
from pipeline.stages import Stage, Zone

Mode = Literal["read", "write"]
Touched = set[tuple[str, Mode]]  # ("zone", mode) and ("runs/record", mode)


@dataclass
class Access:
    """What one stage may touch, and what it did."""

    stage: Stage
    touched: Touched

    def zone(self, name: str, mode: Mode | None = None) -> None:
        """Check (and note) a touch of zone `name`; `mode` None: a path was formed, to be
        read or written (allowed if either is declared)."""
        s = self.stage
        ok = (s.may_read(name) or name in s.writes) if mode is None else (
            name in s.writes if mode == "write" else s.may_read(name))
        if not ok:
            raise UndeclaredAccessError(
                f"stage {s.name} {mode or 'touched'} zone {name!r}, which its row in "
                "pipeline.stages does not declare; declare it (reads, writes or history) or "
                "stop touching it")
        self.touched.add((name, mode or "read"))

    def record(self, name: str, mode: Mode) -> None:
        s = self.stage
        ok = name in s.records_written if mode == "write" else s.may_read_record(name)
        if not ok:
            raise UndeclaredAccessError(
                f"stage {s.name} {mode} run record {name!r}, which its row in "
                "pipeline.stages does not declare (records_read, records_written or "
                "history)")
        self.touched.add((f"runs/{name}", mode))


class GuardedStorage(Storage):
    """`Storage` whose reads and writes of a zone are checked against the stage's row."""

    def __init__(self, inner: Storage, access: Access) -> None:
        super().__init__(inner.root, inner.encryption_key, inner.key_id, inner.read_key)
        object.__setattr__(self, "_access", access)

    def _check(self, zone: Zone, mode: Mode) -> None:
        self._access.zone(zone.name, mode)  # type: ignore[attr-defined]

    def dates(self, zone: Zone) -> list[date]:
        self._check(zone, "read")
        return super().dates(zone)

    def parts(self, zone: Zone, day: date) -> list[DataPath]:
        self._check(zone, "read")
        return super().parts(zone, day)

    def read_part(self, zone: Zone, day: date, path: DataPath) -> pl.DataFrame:
        self._check(zone, "read")
        return super().read_part(zone, day, path)

    def write_file(self, zone: Zone, day: date, path: DataPath, df: pl.DataFrame) -> None:
        scratch = (zone.name in self._access.stage.scratch  # type: ignore[attr-defined]
                   and str(path.parent) == str(self.spill_dir(zone, day)))
        if not scratch:
            self._check(zone, "write")
        super().write_file(zone, day, path, df)

    def commit_shards(self, zone: Zone, day: date, n: int) -> DataPath:
        self._check(zone, "write")
        return super().commit_shards(zone, day, n)

    def set_aside(self, zone: Zone, day: date) -> DataPath:
        self._check(zone, "write")
        return super().set_aside(zone, day)

    def write(self, zone: Zone, day: date, df: pl.DataFrame) -> DataPath:
        self._check(zone, "write")
        return super().write(zone, day, df)


class GuardedRecords(RunRecords):
    """`RunRecords` whose loads and saves are checked against the stage's row."""

    def __init__(self, inner: RunRecords, access: Access) -> None:
        super().__init__(inner.area, inner.day)
        self._access = access

    def save(self, record: Record) -> DataPath:
        self._access.record(record.name(), "write")
        return super().save(record)

    def load(self, kind: type[R]) -> R | None:
        self._access.record(kind.name(), "read")
        return super().load(kind)

    def save_stats(self, stats: StageStats) -> DataPath:
        self._access.record(stats.stage, "write")
        return super().save_stats(stats)

    def stage_stats(self, stage: str) -> StageStats | None:
        self._access.record(stage, "read")
        return super().stage_stats(stage)

    def stats(self) -> dict[str, StageStats]:
        out = super().stats()
        for stage in out:
            self._access.record(stage, "read")
        return out

    def outcomes(self) -> dict[str, StageOutcome]:
        self._access.record("outcomes", "read")
        return super().outcomes()

    def save_outcome(self, outcome: StageOutcome) -> DataPath:
        raise UndeclaredAccessError(f"stage {self._access.stage.name} wrote an outcome: "
                                    "outcomes are the engine's")
