"""What one run of one date works with: config, keys, storage and records.

The key ring is loaded once, on first use, and never logged; stages get it from here rather
than loading it themselves. Dates are parsed once, at the boundary (`parse_day`): inside, a
run's day is a `datetime.date`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import PipelineConfig
from pipeline.core.errors import ConfigError, KeyUnavailableError
from pipeline.core.fs import DataPath, is_local
from pipeline.core.guard import Access, GuardedRecords, GuardedStorage, Mode, Touched
from pipeline.core.keys import (
    KeyRing,
    MasterKey,
    check_fingerprints,
    check_purpose,
    load_key_ring,
)
from pipeline.core.layout import Layout
from pipeline.core.locks import LocalLocks, Locks, ObjectStoreLocks, PostgresLocks
from pipeline.core.records import RunRecords
from pipeline.core.storage import Storage, dated_partitions
from pipeline.stages import STAGING, Stage, Zone

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.access.policy import AccessPolicy, Decision
    from pipeline.ledger.audit_log import AuditEntry, AuditLog, Outcome
    from pipeline.ledger.consent_log import ConsentLog
    from pipeline.ledger.store import PrivacyLedger

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
    """Config, key and storage for one run; the key is loaded once and never logged.

    The engine runs each stage with `for_stage(stage)`: that context's zones, paths, storage
    and run records are held to the stage's row of the stage table (`pipeline.core.guard`),
    and what the stage touched is noted in `touched`, which every such context shares."""

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
    stage: Stage | None = None  # the stage this context runs (set by `for_stage`)
    touched: dict[str, Touched] = field(default_factory=dict)  # stage -> what it touched

    def for_stage(self, stage: Stage) -> RunContext:
        """This context for running `stage`: the same key and caches, held to its row."""
        out = copy.copy(self)
        out.stage = stage
        return out

    @property
    def access(self) -> Access | None:
        if self.stage is None:
            return None
        return Access(self.stage, self.touched.setdefault(self.stage.name, set()))

    @cached_property
    def keys(self) -> KeyRing:
        ring = load_key_ring(self.cfg.keys)
        check_purpose(ring, self.cfg.purpose, purpose_key_only=self.cfg.keys.purpose_key_only)
        check_fingerprints(ring, self.root / "keys" / "fingerprints.json")
        return ring

    @property
    def key(self) -> MasterKey:
        """The active key: everything written now is keyed with it."""
        return self.keys.active

    @cached_property
    def unguarded_storage(self) -> Storage:
        """Storage with no stage's row to hold it to (the engine's own, and commands')."""
        return Storage(self.cfg.paths.root, encryption_key=self.key.staging_key(),
                       key_id=self.key.key_id, read_key=self._retired_staging_key)

    @property
    def storage(self) -> Storage:
        access = self.access
        return (self.unguarded_storage if access is None
                else GuardedStorage(self.unguarded_storage, access))

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
    def locks(self) -> Locks:
        """The data root's and run dates' locks (`scale.lock`): on this host's filesystem, or
        Postgres advisory locks that hold across machines."""
        if self.cfg.scale.lock == "postgres":
            from pipeline.ledger.store import ledger_dsn

            if self.cfg.budget.ledger_dsn_env is None:
                raise ConfigError("scale.lock: postgres takes the ledger's database; set "
                                  "budget.ledger_dsn_env")
            return PostgresLocks(ledger_dsn(self.cfg.budget), str(self.root))
        if self.cfg.scale.lock == "object_store":
            if is_local(self.root):
                raise ConfigError("scale.lock: object_store takes a data root in an object "
                                  "store (paths.data_root: s3://...); a local root has `local`")
            return ObjectStoreLocks(self.root)
        return LocalLocks(self.local)

    @property
    def layout(self) -> Layout:
        return Layout(self.root, self.local)

    @property
    def user_col(self) -> str:
        return self.cfg.purpose_spec.user_col

    def zone(self, name: str, mode: Mode | None = None) -> Zone:
        """Zone `name` for this purpose; in a stage, one its row declares (for `mode`)."""
        if (access := self.access) is not None:
            access.zone(name, mode)
        return self.cfg.zone(name)

    def area(self, name: str, mode: Mode | None = None) -> DataPath:
        """A zone's folder under the data root (see `Layout`)."""
        return self.layout.area(self.zone(name, mode))

    def local_area(self, name: str, mode: Mode | None = None) -> Path:
        """A zone's folder under the local root (see `Layout`)."""
        return self.layout.local_area(self.zone(name, mode))

    def file(self, name: str, filename: str, day: date | None = None,
             mode: Mode | None = None) -> DataPath:
        """A named file of a zone, or of its partition for `day`."""
        return self.layout.file(self.zone(name, mode), filename, day)

    def partition_dir(self, name: str, day: date, mode: Mode | None = None) -> DataPath:
        return self.layout.partition_dir(self.zone(name, mode), day)

    def staging(self) -> list[Zone]:
        """The zones that still hold personal data (encrypted), resolved for this purpose."""
        return [self.zone(z.name) for z in STAGING]

    def records(self, day: date) -> RunRecords:
        records = RunRecords(self.layout.area(self.cfg.zone("runs")), day)
        access = self.access
        return records if access is None else GuardedRecords(records, access)

    def ledger(self) -> PrivacyLedger:
        """The privacy ledger (a SQLite file under the local root, or Postgres): in a stage,
        one whose row declares the `ledger` zone."""
        from pipeline.ledger.store import PrivacyLedger

        self.zone("ledger")
        return PrivacyLedger.from_config(self.cfg.budget, self.local, self.keys)

    def consent_log(self, mode: Mode | None = None) -> ConsentLog:
        """The consent log (`pipeline.ledger.consent_log`): in a stage, one whose row declares
        the `consent_log` zone (for `mode`: importing writes it)."""
        from pipeline.ledger.consent_log import ConsentLog, RecordCipher

        cipher = RecordCipher(self.key.key_id, self.key.staging_key(),
                              self._retired_staging_key)
        return ConsentLog.from_config(self.cfg.budget, self.local_area("consent_log", mode),
                                      self.keys, cipher)

    @cached_property
    def policy(self) -> AccessPolicy | None:
        """The access matrix (`paths.access_policy`), if one is configured."""
        from pipeline.access.policy import load_policy

        path = self.cfg.paths.access_policy
        return None if path is None else load_policy(path)

    @cached_property
    def actor(self) -> str:
        """Who this run or command acts as (`pipeline.access.identity`)."""
        from pipeline.access.identity import caller

        return caller(self.policy)

    def authorize(self, action: str) -> Decision:
        """The actor may do `action` for this purpose, or AccessDeniedError (the refusal is
        logged in the audit log first). Without an access matrix, refused."""
        from pipeline.access.policy import decide, load_policy, refusal

        policy = self.policy or load_policy(None)
        decision = decide(policy, self.actor, self.cfg.purpose, action)
        if not decision.allowed:
            self.audit(action, outcome="denied", role="none")
            raise refusal(decision)
        return decision

    def audit_log(self, mode: Mode | None = None) -> AuditLog:
        """The audit log (`pipeline.ledger.audit_log`): in a stage, one whose row declares
        the `audit_log` and `audit_heads` zones (for `mode`: appending writes them)."""
        from pipeline.ledger.audit_log import AuditLog

        return AuditLog.from_config(self.cfg.budget, self.local_area("audit_log", mode),
                                    self.keys, self.area("audit_heads", mode))

    def audit(self, action: str, *, detail: dict[str, object] | None = None,
              subject: str | None = None, outcome: Outcome = "done",
              role: str | None = None,
              unless: Callable[[list[AuditEntry]], bool] | None = None) -> None:
        """Append a sensitive action to the audit log, as the actor and the role the matrix
        gives them for it (`unassigned` without a matrix: a library call); `unless`: see
        `AuditLog.append`."""
        from pipeline.ledger.audit_log import AuditEntry

        if role is None:
            role = (self.policy.role_for(self.actor, self.cfg.purpose, action)
                    if self.policy else None) or "unassigned"
        self.audit_log("write").append(AuditEntry(
            purpose=self.cfg.purpose, actor=self.actor, role=role, action=action,
            outcome=outcome, subject=subject, detail=detail or {}), unless=unless)

    def record_dates(self) -> list[date]:
        """The dates that have run records."""
        return [d for d, _ in dated_partitions(self.layout.area(self.cfg.zone("runs")))]
