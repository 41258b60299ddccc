"""What one run of one date works with: config, keys, storage and records.

The key ring is loaded once, on first use, and never logged; stages get it from here rather
than loading it themselves. Dates are parsed once, at the boundary (`parse_day`): inside, a
run's day is a `datetime.date`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.core.errors import ConfigError, KeyUnavailableError
from pipeline.core.fs import DataPath
from pipeline.core.keys import KeyRing, MasterKey, check_fingerprints, load_key_ring
from pipeline.core.records import RunRecords
from pipeline.core.storage import Storage
from pipeline.stages import STAGING, Zone

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> date:
    """A run date from the command line, the DAG or a caller: YYYY-MM-DD only (Python also
    reads `20261101` and week dates, which would name a partition differently)."""
    try:
        if not _DAY.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"date {text!r} is not YYYY-MM-DD") from None


@dataclass
class RunContext:
    """Config, key and storage for one run; the key is loaded once and never logged."""

    cfg: PipelineConfig
    run_date: date | None = None  # retired keys are readable relative to this date
    # Which run a stage's outcome belongs to (Airflow's run id, or one per CLI run), so the
    # gate never counts a success left by an earlier run of the same date.
    run_id: str = field(default_factory=lambda: f"cli__{datetime.now(UTC).isoformat()}")
    # May this process start worker processes of its own (the PII scrubber's)? Not inside a
    # Dask worker, whose parallelism is the cluster's.
    own_workers: bool = True
    # The operator accepts a low-volume day on purpose (`run --accept-low-volume`, or the
    # Airflow run's conf): see `pipeline.transforms.guardrails`.
    accept_low_volume: bool = False

    @cached_property
    def keys(self) -> KeyRing:
        ring = load_key_ring(self.cfg.keys)
        check_fingerprints(ring, self.root / "keys" / "fingerprints.json")
        return ring

    @property
    def key(self) -> MasterKey:
        """The active key: everything written now is keyed with it."""
        return self.keys.active

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.cfg.paths.root, encryption_key=self.key.staging_key(),
                       key_id=self.key.key_id, read_key=self._retired_staging_key)

    def _retired_staging_key(self, key_id: str) -> bytes:
        if self.run_date is None:
            raise KeyUnavailableError(f"reading data under retired key id {key_id!r} needs "
                                      "the run's date")
        return self.keys.for_reading(key_id, on=self.run_date).staging_key()

    @property
    def root(self) -> DataPath:
        """The data root (local, or in an object store)."""
        return self.cfg.paths.root

    @property
    def local(self) -> Path:
        """Where what must be a local file goes (`paths.local_root`)."""
        return self.cfg.paths.local

    @property
    def user_col(self) -> str:
        return self.cfg.purpose_spec.user_col

    def zone(self, name: str) -> Zone:
        return self.cfg.zone(name)

    def staging(self) -> list[Zone]:
        """The zones that still hold personal data (encrypted), resolved for this purpose."""
        return [self.zone(z.name) for z in STAGING]

    def records(self, day: date) -> RunRecords:
        return RunRecords(self.root / self.zone("runs").path, day)
