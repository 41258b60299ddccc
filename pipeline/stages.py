"""The pipeline, declared: every stage, what it reads and writes, in the order it runs.

This file is the one place the stage graph lives. The CLI (`run`, `stage`), the Airflow DAG,
`rekey`, the report's row funnel and the tests all derive their lists from `STAGES`; adding a
stage is one row here and one function in `pipeline.steps`. Standard library only, so the DAG
file can import it without paying for polars, pydantic or Great Expectations.

Zones are folders under `paths.data_root`, one `date=D` partition per run date (`{purpose}` and
`{feature_set}` are filled from config). Sensitive zones still hold personal data and are
encrypted at rest; everything a consumer reads (`published`, `features`) is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Zone:
    """An area of the data root; `partitioned` areas hold one `date=D` folder per run date,
    and those with a `retention` class are purged after that many days (config `retention`)."""

    name: str
    path: str  # under the data root; may hold {purpose} or {feature_set}
    sensitive: bool = False  # encrypted at rest (AES-GCM under the staging key)
    partitioned: bool = True
    retention: str | None = None  # raw | quarantine | staging | published

    def resolve(self, *, purpose: str, feature_set: str) -> Zone:
        return Zone(self.name, self.path.format(purpose=purpose, feature_set=feature_set),
                    self.sensitive, self.partitioned, self.retention)


# Everything a run writes is under its purpose (or its purpose's feature set): two purposes'
# runs never share a partition, a validation project or a record. Only the landing side's raw
# input, the ledger (one chain per purpose inside it) and the Feast repo are common.
ZONES = {z.name: z for z in (
    Zone("raw_events", "raw/events", retention="raw"),  # the landing side (or `generate`)
    Zone("raw_consent", "raw/consent", partitioned=False),
    Zone("erasure_requests", "raw/erasure", partitioned=False),
    # file, line, reason, field: never a value
    Zone("quarantine", "quarantine/{purpose}/events", retention="quarantine"),
    *(Zone(name, f"staging/{{purpose}}/{name}", sensitive=True, retention="staging")
      for name in ("ingested", "consented", "scrubbed", "pseudonymized", "generalized")),
    # Minimized but not yet validated: encrypted, and promoted to `published` only by a
    # passing validation, so nothing unvalidated is ever where consumers read.
    Zone("pending", "pending/{purpose}", sensitive=True, retention="staging"),
    # the purpose's minimized table
    Zone("published", "published/{purpose}", retention="published"),
    Zone("validation", "validation/{purpose}"),  # a Great Expectations project per date
    Zone("ledger", "ledger", partitioned=False),  # the privacy ledger (or Postgres)
    Zone("features", "features/{feature_set}"),  # DP releases: Feast's offline source
    Zone("feature_store", "feature_repo", partitioned=False),  # Feast registry, SQLite store
    Zone("reports", "reports/{purpose}"),
    Zone("runs", "runs/{purpose}"),  # each stage's typed record (`pipeline.core.records`)
)}
STAGING = tuple(z for z in ZONES.values() if z.sensitive)
# Written by the landing side into `raw/events/date=D/` once the day's input is complete (as
# Hadoop and Spark jobs do); a run waits for it, so a partial day is never processed.
INPUT_MARKER = "_SUCCESS"


class Kind(Enum):
    """How the engine runs a stage (see `pipeline.run`)."""

    # reads one zone's partition shard by shard (a large day is split by user: see
    # `scale.events_per_shard`), writes one zone's partition in as many shards
    TABLE = "table"
    TASK = "task"  # does its own reading and writing (several zones, the ledger, Feast)


@dataclass(frozen=True)
class Stage:
    """One stage of the daily run.

    `target` names the function in `pipeline.steps` the engine calls. `funnel` stages account
    for every row (rows in = out + dropped + quarantined) and make up the report's funnel;
    `keyed` stages write what depends on the key (tokens, pseudonyms) and are redone by
    `rekey`; `gated` stages run only after validation passed; `always` stages run whatever
    happened before them (in the DAG, trigger rule `all_done`), so the report says why;
    `maintenance` stages run in their own DAG, serialized against the daily runs.
    """

    name: str
    target: str
    kind: Kind
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    does: str
    funnel: bool = False
    keyed: bool = False
    gated: bool = False
    always: bool = False
    # Rewrites every date's partitions (not only the run's): scheduled in the maintenance DAG,
    # and holds the data root's lock exclusively while daily stages hold it shared.
    maintenance: bool = False
    # Writes a store every date shares (the ledger, the Feast registry, the audit index): in
    # the DAG, one run's instance at a time when a backfill runs dates side by side.
    serial: bool = False


_STAGES = (
    Stage("check_input", "check_input", Kind.TASK, reads=("raw_events",), writes=(),
          does="the day is over and its raw input is there, before anything is deleted"),
    Stage("erase", "erase", Kind.TASK,
          reads=("erasure_requests", "raw_consent"),
          writes=("raw_events", "raw_consent", *(z.name for z in STAGING), "published"),
          maintenance=True,
          does="remove erased users everywhere, and withdrawn users from what is published"),
    Stage("retention", "retention", Kind.TASK, reads=(),
          writes=("raw_events", "quarantine", *(z.name for z in STAGING), "published"),
          maintenance=True, does="delete partitions past their retention window"),
    Stage("ingest", "ingest", Kind.TASK, reads=("raw_events",),
          writes=("ingested", "quarantine"), funnel=True,
          does="parse raw lines against the event schema; misfits to quarantine"),
    Stage("consent", "consent", Kind.TABLE, reads=("ingested", "raw_consent"),
          writes=("consented",), funnel=True,
          does="keep events of users who consented to the purpose"),
    Stage("guardrails", "guardrails", Kind.TASK, reads=(), writes=(),
          does="the day's rows, users and quarantine share look like a normal day's, "
               "before anything is charged or published"),
    Stage("detect_pii", "detect_pii", Kind.TABLE, reads=("consented",), writes=("scrubbed",),
          funnel=True, keyed=True,
          does="drop direct identifiers, check untagged columns, tokenize PII in free text"),
    Stage("pseudonymize", "pseudonymize", Kind.TABLE, reads=("scrubbed",),
          writes=("pseudonymized",), funnel=True, keyed=True,
          does="HMAC-SHA256 identifiers under the purpose's key"),
    Stage("generalize", "generalize", Kind.TABLE, reads=("pseudonymized",),
          writes=("generalized",), funnel=True, keyed=True,
          does="coarsen quasi-identifiers; enforce k-anonymity and l-diversity"),
    Stage("minimize", "minimize", Kind.TABLE, reads=("generalized",), writes=("pending",),
          funnel=True, keyed=True,
          does="keep only the purpose's allowlisted columns, each within its domain"),
    Stage("validate", "validate", Kind.TASK, reads=("pending",),
          writes=("validation", "published"), keyed=True,
          does="Great Expectations suite: the publish gate; promotes what passes"),
    Stage("features", "features", Kind.TASK, reads=("generalized", "ledger"),
          writes=("ledger", "features"), gated=True, serial=True,
          does="user-level DP cohort features, charged to the privacy ledger once"),
    Stage("publish", "publish", Kind.TASK, reads=("features",), writes=("feature_store",),
          gated=True, serial=True, does="apply and materialize the features in Feast"),
    Stage("report", "report", Kind.TASK, reads=(), writes=("reports",), keyed=True,
          always=True, serial=True, does="manifest, run report and the audit index"),
)
STAGES = {s.name: s for s in _STAGES}
FUNNEL = tuple(s.name for s in _STAGES if s.funnel)
KEYED = tuple(s.name for s in _STAGES if s.keyed)
DAILY = tuple(s.name for s in _STAGES if not s.maintenance)  # a daily DAG's tasks, in order
MAINTENANCE = tuple(s.name for s in _STAGES if s.maintenance)
