"""Typed run records: what each stage says about its run, kept in `runs/{purpose}/date=D/`.

These are the interface between the stages and everything that reports on them (the run
report, the audit index, the CLI): they read attributes, never string keys, so renaming a field
breaks type checking and tests instead of a report, silently. Records hold counts, key ids,
privacy parameters and check outcomes, never a value from the data.

Row accounting: every stage says how many rows came in, went out, and why the rest left; the
run report adds these up and refuses a funnel that does not balance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny, field_validator, model_validator

from pipeline.core.details import (
    STAGE_DETAILS,
    SUM,
    D,
    Details,
    FeatureErrorDetail,
    NoDetails,
    PiiDetails,
    ProfileDetails,
    PseudonymizeDetails,
    errors_by_label,
)
from pipeline.core.details import ColumnFinding as ColumnFinding
from pipeline.core.details import ColumnScan as ColumnScan
from pipeline.core.details import KAnonymitySummary as KAnonymitySummary
from pipeline.core.errors import PipelineError
from pipeline.core.fs import DataPath
from pipeline.core.layout import partition_name
from pipeline.core.storage import atomic_write_json
from pipeline.ledger.budget import PrivacyBudget, release_budget
from pipeline.monitor.model import Alert, ColumnDrift, Disparity, FeatureDrift

Count = int | str  # a count, or "<10" once coarsened for the external view
R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """A run record; `file` names it under `runs/date=D/`."""

    model_config = ConfigDict(extra="forbid")
    file: ClassVar[str] = ""

    @classmethod
    def name(cls) -> str:
        """The record's name in the stage table (`pipeline.stages.RECORDS`): its file's stem."""
        return cls.file.removesuffix(".json")


class StageStats(Record):
    """Rows in, out and removed (by reason) of a stage, and its typed details
    (`pipeline.core.details`; which model is the stage's is `STAGE_DETAILS`)."""

    stage: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    details: SerializeAsAny[Details] = NoDetails()

    @model_validator(mode="before")
    @classmethod
    def _typed_details(cls, data: Any) -> Any:
        """A record read back from JSON: its details as the stage's model."""
        if isinstance(data, dict) and isinstance(data.get("details"), dict):
            kind = STAGE_DETAILS.get(str(data.get("stage")), NoDetails)
            return {**data, "details": kind.model_validate(data["details"])}
        return data

    def details_of(self, kind: type[D]) -> D:
        """The details, as the stage's model (a programming error if they are another's)."""
        if not isinstance(self.details, kind):
            raise TypeError(f"stage {self.stage}: details are {type(self.details).__name__}, "
                            f"not {kind.__name__}")
        return self.details

    @classmethod
    def merged(cls, parts: Sequence[StageStats]) -> StageStats:
        """One stage's stats over the shards it ran on: counts add up (shards hold disjoint
        users); the details merge field by field, as their model declares (`Merge`)."""
        first = parts[0]
        return cls(stage=first.stage, rows_in=sum(p.rows_in for p in parts),
                   rows_out=sum(p.rows_out for p in parts),
                   dropped=SUM.apply([p.dropped for p in parts]),
                   quarantined=SUM.apply([p.quarantined for p in parts]),
                   details=type(first.details).merged([p.details for p in parts]))

    def check_balanced(self) -> StageStats:
        removed = sum(self.dropped.values()) + sum(self.quarantined.values())
        if self.rows_in != self.rows_out + removed:
            raise PipelineError(
                f"stage {self.stage}: rows do not add up: in={self.rows_in} out={self.rows_out} "
                f"dropped+quarantined={removed}")
        return self


class StageOutcome(Record):
    """How a stage ended in a run: written `running` when it starts, so a stage killed
    mid-way (SIGKILL, timeout) is told apart from one that finished. `message` is a
    `PipelineError`'s (which never holds a data value) or withheld."""

    stage: str
    run_id: str
    status: Literal["running", "succeeded", "failed"]
    started_at: str
    finished_at: str | None = None
    error: str | None = None  # the exception's class name
    message: str | None = None
    retryable: bool = False
    # seconds of the stage spent in maps (`pipeline.core.shardwork.run_map`): on a cluster,
    # the workers' share; the rest ran in the stage's own process
    mapped_s: float | None = None


class CheckResult(BaseModel):
    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    unexpected_count: int | None = None


class ValidationRecord(Record):
    """The publish gate's outcome (`pipeline.transforms.validate`)."""

    file: ClassVar[str] = "validation.json"
    success: bool
    checks: list[CheckResult] = []
    data_docs_index: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    @property
    def passed(self) -> int:
        return sum(c.success for c in self.checks)


class AttackRate(BaseModel):
    """One attack of the re-identification check: people tried, and singled out rightly."""

    attack: str  # pseudonym reuse | all events | m known events
    targets: int
    singled_out: int

    @property
    def rate(self) -> float:
        return self.singled_out / self.targets if self.targets else 0.0


class ReidentificationRecord(Record):
    """The day's table, before it is published, against the insider join attack
    (`pipeline.monitor.reidentify`): a hard guardrail, checked by the gate (`validate`)."""

    file: ClassVar[str] = "reidentification.json"
    applicable: bool
    note: str = ""
    k: int
    limit: float  # 1/k, or a stricter configured rate
    published_pseudonyms: int = 0
    attacks: list[AttackRate] = []
    worst_attack: str = ""
    rate: float = 0.0
    passed: bool

    def describe(self) -> str:
        if not self.applicable:
            return f"re-identification: not applicable ({self.note})"
        return (f"re-identification: {self.rate:.1%} of people singled out ({self.worst_attack})"
                f", limit {self.limit:.1%} (1/k, k = {self.k}) "
                + ("ok" if self.passed else "BREACHED"))


class MonitorRecord(Record):
    """Drift of what the run published (`pipeline.monitor`): the DP release against the one
    before it, the published columns against the previous published day, or why not."""

    file: ClassVar[str] = "monitor.json"
    features: FeatureDrift | None = None
    features_note: str = ""  # why the release was not compared
    disparity: Disparity | None = None  # what DP costs each group in the day's release
    columns: list[ColumnDrift] = []
    columns_against: str | None = None  # the previous published day
    columns_note: str = ""
    # the day's published categorical columns, counted: what later days compare with
    published_counts: dict[str, dict[str, int]] = {}
    alerts: list[Alert] = []  # soft guardrails breached: the notifiers are told
    alerts_note: str = ""

    @property
    def drifted(self) -> bool:
        return (self.features is not None and self.features.drifted) or any(
            c.drifted for c in self.columns)


class LedgerRecord(Record):
    """What the features stage released (or why nothing was due), and the budget window."""

    file: ClassVar[str] = "ledger.json"
    release_due: bool
    period: str  # "day" or "week"
    next_release: str | None = None  # when nothing was due
    reason: str | None = None  # why nothing was due, when not the period
    purpose: str = ""
    feature_set: str = ""
    date: str = ""
    covers: tuple[str, str] | None = None  # first and last day of data
    epsilon: float | None = None  # None for a zCDP release
    rho: float = 0.0
    delta: float = 0.0
    mechanism: str = ""
    library: str = ""
    recorded_at: str = ""
    payload_sha256: str = ""
    reused_stored_release: bool = False
    ledger: str | None = None  # where the ledger lives (never a DSN); None in external views
    accounting: str = ""
    unit: str = ""  # ε or ρ, as the accountant adds up
    cost: float = 0.0  # this release, in `unit`
    window_days: int = 0
    window_budget: float = 0.0
    window_spent: float = 0.0
    window_delta_budget: float = 0.0
    window_delta_spent: float = 0.0
    window_as_epsilon: float | None = None  # zCDP stated as (ε, δ)-DP
    window_as_epsilon_delta: float | None = None

    @property
    def budget(self) -> PrivacyBudget:
        """What the release cost, as a budget value."""
        return release_budget(epsilon=self.epsilon, rho=self.rho, delta=self.delta)


class ErasureRecord(Record):
    """Counts only: an erasure report must not name the people it erased."""

    file: ClassVar[str] = "erasure.json"
    requests: int = 0
    withdrawn_users: int = 0
    paused_users: int = 0  # nothing of theirs is deleted; nothing new is used
    reset_users: int = 0  # their derived data from before the reset is erased
    removed: dict[str, Count] = {}  # area -> rows or lines removed
    partitions_rewritten: int = 0
    set_aside: list[str] = []  # unreadable partitions moved to quarantine/corrupt/
    not_touched: dict[str, str] = {
        "quarantine": "holds file, line, reason and field only, never a value",
        "features and ledger": "DP cohort aggregates over many users: anonymous",
        "feature store": "cohort features only (entity cohort_id), no per-user rows"}

    def add_removed(self, area: str, n: int) -> None:
        self.removed[area] = int(self.removed.get(area, 0)) + n


class PurgedPartition(BaseModel):
    area: str
    date: str
    bytes: int
    retention_days: int


class RetentionRecord(Record):
    file: ClassVar[str] = "retention.json"
    purged: list[PurgedPartition] = []
    interrupted_finished: list[str] = []  # purges a crash had left half done
    windows_days: dict[str, int] = {}


class InputRecord(Record):
    """The day's input, checked before anything runs or is deleted."""

    file: ClassVar[str] = "input.json"
    source: str
    bytes: int
    lines: int


class GuardrailCheck(BaseModel):
    """One input guardrail: what was measured, the limit, and whether it held. `accepted`:
    breached, but the operator accepted a low-volume day on purpose."""

    name: str  # min_rows_in | min_users_after_consent | max_quarantine_share | volume_vs_recent
    measured: float | None  # None: not applicable (no history yet)
    limit: str  # as a reader reads it: ">= 100", "<= 20%", "within 3x of median 3,040"
    passed: bool
    accepted: bool = False
    note: str = ""

    def measured_text(self) -> str:
        if self.measured is None:
            return "n/a"
        return (f"{self.measured:.1%}" if self.name == "max_quarantine_share"
                else f"{self.measured:,.0f}")

    def describe(self) -> str:
        value = self.measured_text()
        state = "ok" if self.passed else ("accepted by operator" if self.accepted
                                          else "BREACHED")
        return f"{self.name}: {value} (limit {self.limit}) {state}" + (
            f"; {self.note}" if self.note else "")


class GuardrailRecord(Record):
    """The day's input against the purpose's guardrails (`pipeline.transforms.guardrails`),
    checked before anything is charged or published. Counts only."""

    file: ClassVar[str] = "guardrails.json"
    rows_in: int
    rows_valid: int  # parsed and fitting the schema
    rows_quarantined: int
    users_after_consent: int
    baseline_dates: list[str] = []  # the published days the volume check compared with
    baseline_median: float | None = None
    checks: list[GuardrailCheck] = []
    accept_low_volume: bool = False  # the operator's override was on for this run
    passed: bool  # every check held, or was accepted

    @property
    def breached(self) -> list[GuardrailCheck]:
        return [c for c in self.checks if not c.passed and not c.accepted]

    @property
    def accepted(self) -> list[GuardrailCheck]:
        return [c for c in self.checks if c.accepted]


class PublishRecord(Record):
    file: ClassVar[str] = "publish.json"
    materialized: bool = True
    reason: str | None = None
    # The release materialized, and whether it differs from what this date had before: a
    # rerun that changes nothing emits no Asset event.
    features_sha256: str | None = None
    changed: bool = False
    feature_repo: str | None = None
    feature_view: str | None = None
    online_store: str | None = None
    offline_source: str | None = None
    # Serving moves only forward: cohorts written online, and those left alone because the
    # online store holds a later day's value (a re-run or backfill of an older date).
    online_written: int | None = None
    online_kept_newer: int | None = None


class RekeyRecord(Record):
    file: ClassVar[str] = "rekey.json"
    date: str
    active_key_id: str
    reencrypted: dict[str, str]
    stages_rerun: list[str]


class Funnel(BaseModel):
    rows_in: int
    rows_out: int
    dropped: dict[str, Count]
    quarantined: dict[str, Count]
    balanced: bool
    last_stage: str | None  # None when ingest did not run


class RowsInOut(BaseModel):
    rows_in: int
    rows_out: int


class PiiSummary(BaseModel):
    found: dict[str, Count] | None = None
    found_by_column: dict[str, dict[str, int]] | None = None
    dropped_columns: list[str] | None = None
    column_scan: ColumnScan | None = None
    token_key_id: str | None = None

    @classmethod
    def from_stats(cls, stats: StageStats | None) -> PiiSummary:
        if stats is None:
            return cls()
        d = stats.details_of(PiiDetails)
        return cls(found=dict(d.pii_found), found_by_column=d.pii_found_by_column,
                   dropped_columns=d.dropped_columns, column_scan=d.column_scan,
                   token_key_id=d.token_key_id)


class Totals(BaseModel):
    dropped: Count
    quarantined: Count
    pii_replaced: Count


class GovernedBy(BaseModel):
    """What a run was made under, as hashes and versions (`pipeline.access.changes`)."""

    code_version: str
    config_sha256: str
    purpose_sha256: str
    access_matrix_sha256: str | None = None
    access_matrix_version: int | None = None


class Manifest(BaseModel):
    """One run's report (`reports/{purpose}/date=D/manifest.json`), built from the records above."""

    model_config = ConfigDict(extra="forbid")
    date: str
    purpose: str
    run_id: str | None = None
    # How each stage ended in that run; a stage missing here did not run in it.
    outcomes: dict[str, StageOutcome] = {}
    funnel: Funnel
    stages: dict[str, RowsInOut]
    pii: PiiSummary
    pseudonymization: PseudonymizeDetails | None
    k_anonymity: KAnonymitySummary | None
    # A profile purpose: k over each user's whole profile (`pipeline.transforms.profile`)
    profiles: ProfileDetails | None = None
    guardrails: GuardrailRecord | None = None  # the day's input against the guardrails
    validation: ValidationRecord | None
    erasure: ErasureRecord | None
    retention: RetentionRecord | None
    differential_privacy: LedgerRecord | None
    # per feature: expected_error95 (the planner's) and median_error95 (the release's bounds)
    feature_errors: list[FeatureErrorDetail] | None = None

    _old_errors = field_validator("feature_errors", mode="before")(errors_by_label)
    published: bool
    feature_store: PublishRecord | None
    notice_version: int | None = None  # the purpose's privacy notice in force (`notice`)
    monitoring: MonitorRecord | None = None  # drift of what was published
    # the join attack on the day's table before the gate (a hard guardrail)
    reidentification: ReidentificationRecord | None = None
    governed_by: GovernedBy | None = None  # the contracts, config, matrix and code it ran under
    totals: Totals | None = None  # set in the external view, whose funnel counts are coarse

    def run_totals(self) -> Totals:
        """Rows dropped and quarantined, and PII values replaced, over the run."""
        if self.totals is not None:
            return self.totals
        f = self.funnel
        return Totals(dropped=sum(int(n) for n in f.dropped.values()),
                      quarantined=sum(int(n) for n in f.quarantined.values()),
                      pii_replaced=sum(int(n) for n in (self.pii.found or {}).values()))


    def external_view(self, small: int = 10) -> Manifest:
        """The manifest for readers outside the team: no key ids, paths, observed values or
        per-column detail, and counts below `small` shown as "<small" (small cells can single a
        person out), in the spirit of sdcMicro's external report."""

        def coarse(n: Count) -> Count:
            return f"<{small}" if isinstance(n, int) and 0 < n < small else n

        def coarse_all(counts: dict[str, Count]) -> dict[str, Count]:
            return {k: coarse(n) for k, n in counts.items()}

        n = self.run_totals()
        ext = self.model_copy(deep=True)
        ext.totals = Totals(dropped=coarse(n.dropped), quarantined=coarse(n.quarantined),
                            pii_replaced=coarse(n.pii_replaced))
        ext.funnel.dropped, ext.funnel.quarantined = (coarse_all(self.funnel.dropped),
                                                      coarse_all(self.funnel.quarantined))
        ext.pii = PiiSummary(found=coarse_all(self.pii.found or {}),
                             dropped_columns=self.pii.dropped_columns)
        ext.pseudonymization = PseudonymizeDetails(
            algorithm=self.pseudonymization.algorithm if self.pseudonymization else None)
        if ka := ext.k_anonymity:
            ka.rows_suppressed, ka.users_suppressed, ka.groups_suppressed = (
                None if c is None else coarse(c)
                for c in (ka.rows_suppressed, ka.users_suppressed, ka.groups_suppressed))
            ka.group_costs = [g.model_copy(update={"rows": coarse(g.rows)})
                              for g in ka.group_costs or []]
        if ext.validation:
            ext.validation = ValidationRecord(
                success=ext.validation.success,
                checks=[c.model_copy(update={"observed": None, "unexpected_count": None})
                        for c in ext.validation.checks])
        if ext.guardrails:  # which checks held, not the day's exact counts
            g = ext.guardrails
            ext.guardrails = g.model_copy(update={
                "rows_in": 0, "rows_valid": 0, "rows_quarantined": 0, "users_after_consent": 0,
                "baseline_median": None,
                "checks": [c.model_copy(update={"measured": None, "note": "",
                                                "limit": c.limit.split(" (")[0]})
                           for c in g.checks]})
        if ext.erasure:
            ext.erasure.removed = coarse_all(ext.erasure.removed)
        if ext.retention:
            ext.retention.purged = [p.model_copy(update={"bytes": 0})
                                    for p in ext.retention.purged]
        if ext.differential_privacy:
            ext.differential_privacy.ledger = None
        if ext.monitoring:  # the release's drift (public values), not the published columns'
            ext.monitoring = ext.monitoring.model_copy(update={
                "columns": [], "published_counts": {}, "alerts": [a for a in ext.monitoring.alerts
                                          if not a.subject.startswith("published column")]})
        if ext.reidentification:  # rates, not how many people a small day had
            ext.reidentification = ext.reidentification.model_copy(update={
                "published_pseudonyms": 0, "attacks": []})
        ext.feature_store = None
        ext.run_id = None
        ext.outcomes = {n: o.model_copy(update={"message": None, "run_id": ""})
                        for n, o in ext.outcomes.items()}  # messages name paths
        return ext


class RunRecords:
    """The records of one run date, in `runs/{purpose}/date=D/`: written atomically, read
    back typed."""

    def __init__(self, area: DataPath, day: date) -> None:
        self.area, self.day = area, day
        self.dir = area / partition_name(day)

    def save(self, record: Record) -> DataPath:
        path = self.dir / record.file
        atomic_write_json(path, record.model_dump(mode="json"))
        return path

    def load(self, kind: type[R]) -> R | None:
        path = self.dir / kind.file
        return kind.model_validate_json(path.read_text()) if path.is_file() else None

    def save_stats(self, stats: StageStats) -> DataPath:
        path = self.dir / f"{stats.stage}.json"
        atomic_write_json(path, stats.model_dump(mode="json"))
        return path

    def save_outcome(self, outcome: StageOutcome) -> DataPath:
        path = self.dir / "outcomes" / f"{outcome.stage}.json"
        atomic_write_json(path, outcome.model_dump(mode="json"))
        return path

    def outcomes(self) -> dict[str, StageOutcome]:
        return {p.stem: StageOutcome.model_validate_json(p.read_text())
                for p in sorted((self.dir / "outcomes").glob("*.json"))}

    def stage_stats(self, stage: str) -> StageStats | None:
        """One stage's row counts and details, if it has run for the date."""
        path = self.dir / f"{stage}.json"
        return StageStats.model_validate_json(path.read_text()) if path.is_file() else None

    def stats(self) -> dict[str, StageStats]:
        out = {}
        for path in sorted(self.dir.glob("*.json")):
            data = json.loads(path.read_text())
            if "stage" in data:
                out[data["stage"]] = StageStats.model_validate(data)
        return out
