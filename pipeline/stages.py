"""The pipeline, declared: every stage, what it reads and writes, in the order it runs.

This file is the one place the stage graph lives. The CLI (`run`, `stage`), the Airflow DAG,
`rekey`, the report's row funnel and the tests all derive their lists from `STAGES`; adding a
stage is one row here and one function in `pipeline.steps`. Each row declares every zone and
run record the stage touches: the table is checked when imported (names known, the daily
order the one its reads and writes give: `dataflow_order`), and the engine holds each stage to
its row while it runs (`pipeline.core.guard`). Standard library only, so the DAG file can import
it without paying for polars, pydantic or Great Expectations.

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
    and those with a `retention` class are purged after that many days (config `retention`).
    `local` areas live under `paths.local_root` (files that must be local: a SQLite ledger, the
    Feast registry, Great Expectations projects)."""

    name: str
    path: str  # under the data root; may hold {purpose} or {feature_set}
    sensitive: bool = False  # encrypted at rest (AES-GCM under the staging key)
    partitioned: bool = True
    retention: str | None = None  # raw | quarantine | staging | published
    local: bool = False
    # Derived data that names nobody (`text_cache`): not staging, which erasure searches and
    # subject access lists; an erasure that removed anyone clears it whole.
    cache: bool = False

    def resolve(self, *, purpose: str, feature_set: str) -> Zone:
        return Zone(self.name, self.path.format(purpose=purpose, feature_set=feature_set),
                    self.sensitive, self.partitioned, self.retention, self.local, self.cache)


# Everything a run writes is under its purpose (or its purpose's feature set): two purposes'
# runs never share a partition, a validation project or a record. Only the landing side's raw
# input, the ledger and the audit log (one chain per purpose inside each), the consent log (its
# records name their purpose) and the Feast repo are common.
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
    # scrubbed free texts by their MAC, across days (`pii.text_cache`)
    Zone("text_cache", "cache/{purpose}/pii_texts", sensitive=True, retention="staging",
         cache=True),
    # a Great Expectations project per date
    Zone("validation", "validation/{purpose}", local=True),
    Zone("ledger", "ledger", partitioned=False, local=True),  # the privacy ledger (or Postgres)
    # consent decisions imported from raw/consent, MAC-chained (or in the ledger's Postgres)
    Zone("consent_log", "consent_log", partitioned=False, local=True),
    # sensitive actions, a MAC chain per purpose (or in the ledger's Postgres), and each
    # purpose's last entry kept in the data root, another store (`pipeline.ledger.audit_log`)
    Zone("audit_log", "audit_log", partitioned=False, local=True),
    Zone("audit_heads", "audit", partitioned=False),
    Zone("features", "features/{feature_set}"),  # DP releases: Feast's offline source
    # Feast registry, SQLite online store
    Zone("feature_store", "feature_repo", partitioned=False, local=True),
    Zone("reports", "reports/{purpose}"),
    Zone("runs", "runs/{purpose}"),  # each stage's typed record (`pipeline.core.records`)
)}
STAGING = tuple(z for z in ZONES.values() if z.sensitive and not z.cache)
# Written by the landing side into `raw/events/date=D/` once the day's input is complete (as
# Hadoop and Spark jobs do); a run waits for it, so a partial day is never processed.
INPUT_MARKER = "_SUCCESS"


class Kind(Enum):
    """How the engine runs a stage (see `pipeline.run`)."""

    # reads one zone's partition shard by shard (a large day is split by user: see
    # `scale.events_per_shard`), writes one zone's partition in as many shards
    TABLE = "table"
    TASK = "task"  # does its own reading and writing (several zones, the ledger, Feast)


# The run records a stage may read or write (`runs/{purpose}/date=D/<name>.json`): one per
# record kind of `pipeline.core.records`, one per stage's row counts and details, and the
# engine's `outcomes` of every stage (which only the engine writes).
RECORDS = ("input", "erasure", "retention", "guardrails", "validation", "ledger", "publish",
           "monitor", "reidentification", "rekey", "outcomes", "ingest", "consent",
           "detect_pii", "pseudonymize", "generalize", "minimize", "features")
STAGING_NAMES = tuple(z.name for z in STAGING)


@dataclass(frozen=True)
class Stage:
    """One stage of the daily run, and everything it touches.

    `target` names the function in `pipeline.steps` the engine calls. `reads` and `writes` are
    the zones it touches for the run's date, `records_read` and `records_written` the run
    records; `history` the zones and records (`runs/<name>`) it reads for other dates (a week's
    partitions, earlier releases, past days' volumes), which order nothing. The engine holds a
    stage to exactly these (`pipeline.core.guard`): touching anything else stops it. A `TABLE`
    stage's shards come from `source` and go to `sink`.

    `funnel` stages account for every row (rows in = out + dropped + quarantined) and make up
    the report's funnel; `keyed` stages write what depends on the key (tokens, pseudonyms) and
    are redone by `rekey`; `gated` stages run only once the day passed validation and its input
    the guardrails (the engine checks, before calling them); `alerts`: the stage's record
    may hold soft guardrail alerts, which the DAG sends to the notifiers; `always` stages run
    whatever happened before them (in the DAG, trigger rule `all_done`), so the report says why;
    `maintenance` stages run in their own DAG, serialized against the daily runs; `announces`:
    the stage's success is what consumers are told of (the DAG's Asset event). `scratch`: zones
    in whose `_spill` folder (of the run's date) the stage may park pieces while it runs,
    encrypted as the zone is, and removes them before it ends; never the zone's partitions.
    """

    name: str
    target: str
    kind: Kind
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    does: str
    records_read: tuple[str, ...] = ()
    records_written: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    scratch: tuple[str, ...] = ()
    source: str | None = None  # a TABLE stage's input zone
    sink: str | None = None  # a TABLE stage's output zone
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
    announces: bool = False
    alerts: bool = False  # the stage's record may hold soft guardrail alerts to notify

    def may_read(self, zone: str) -> bool:
        return zone in self.reads or zone in self.writes or zone in self.history

    def may_read_record(self, record: str) -> bool:
        return (record in self.records_read or record in self.records_written
                or f"runs/{record}" in self.history)


# Gated stages read what the gate reads (`pipeline.core.gates`).
_GATE = ("validation", "guardrails", "outcomes")

_STAGES = (
    Stage("check_input", "check_input", Kind.TASK, reads=("raw_events",),
          writes=("audit_log", "audit_heads"), records_written=("input",),
          does="the day is over and its raw input is there, before anything is deleted; the "
               "audit log verifies, and a changed contract or access matrix is logged"),
    Stage("erase", "erase", Kind.TASK,
          reads=("erasure_requests", "raw_events", "raw_consent", "consent_log",
                 *STAGING_NAMES, "published"),
          writes=("raw_events", "raw_consent", "consent_log", *STAGING_NAMES, "published",
                  "text_cache", "audit_log", "audit_heads"),
          records_written=("erasure",), maintenance=True,
          does="remove erased users everywhere, withdrawn users from what is published, and "
               "reset users' earlier profile"),
    Stage("retention", "retention", Kind.TASK, reads=(),
          writes=("raw_events", "quarantine", *STAGING_NAMES, "published", "text_cache"),
          records_written=("retention",), maintenance=True,
          does="delete partitions past their retention window"),
    Stage("ingest", "ingest", Kind.TASK, reads=("raw_events",),
          writes=("ingested", "quarantine"), records_read=("input",),
          records_written=("ingest",), funnel=True,
          does="parse raw lines against the event schema; misfits to quarantine"),
    Stage("consent", "consent", Kind.TABLE,
          reads=("ingested", "raw_consent", "erasure_requests", "consent_log"),
          writes=("consented", "consent_log"), records_written=("consent",),
          source="ingested", sink="consented", funnel=True,
          does="import new consent records into the consent log; keep events of users "
               "who consented to the purpose"),
    Stage("guardrails", "guardrails", Kind.TASK, reads=(), writes=(),
          records_read=("ingest", "consent"), records_written=("guardrails",),
          history=("runs/guardrails", "runs/validation"),
          does="the day's rows, users and quarantine share look like a normal day's, "
               "before anything is charged or published"),
    Stage("detect_pii", "detect_pii", Kind.TABLE, reads=("consented",),
          writes=("scrubbed", "text_cache"), history=("text_cache",),  # earlier days' texts
          records_written=("detect_pii",), source="consented", sink="scrubbed",
          funnel=True, keyed=True,
          does="drop direct identifiers, check untagged columns, tokenize PII in free text"),
    Stage("pseudonymize", "pseudonymize", Kind.TABLE, reads=("scrubbed", "consent_log"),
          writes=("pseudonymized",), records_written=("pseudonymize",), source="scrubbed",
          sink="pseudonymized", funnel=True, keyed=True,
          does="HMAC-SHA256 identifiers under the purpose's key"),
    Stage("generalize", "generalize", Kind.TABLE, reads=("pseudonymized",),
          writes=("generalized",), records_written=("generalize",), source="pseudonymized",
          sink="generalized", funnel=True, keyed=True,
          does="coarsen quasi-identifiers; enforce k-anonymity and l-diversity"),
    Stage("minimize", "minimize", Kind.TABLE, reads=("generalized",), writes=("pending",),
          records_written=("minimize",), history=("published",), source="generalized",
          sink="pending", funnel=True, keyed=True,
          does="keep only the purpose's allowlisted columns, each within its domain"),
    Stage("reidentify", "reidentify", Kind.TASK, reads=("pending", "generalized"), writes=(),
          records_written=("reidentification",), keyed=True,
          does="the insider join attack on the day's table before it is published, with the "
               "staging zone as the attacker's knowledge: at most 1/k singled out"),
    Stage("validate", "validate", Kind.TASK, reads=("pending",),
          writes=("validation", "published"),
          records_read=("guardrails", "outcomes", "reidentification"),
          records_written=("validation",), keyed=True,
          does="Great Expectations suite: the publish gate; promotes what passes"),
    Stage("features", "features", Kind.TASK,
          reads=("generalized", "ledger", "features", "consent_log"),
          writes=("ledger", "features", "audit_log", "audit_heads"),
          records_read=(*_GATE, "ledger"),
          records_written=("ledger", "features"),
          history=("generalized", "features", "runs/validation", "runs/guardrails",
                   "runs/outcomes", "runs/ledger"),
          scratch=("generalized",),  # a week regrouped by user (`steps.publishing`)
          gated=True, serial=True,
          does="user-level DP cohort features, charged to the privacy ledger once"),
    Stage("publish", "publish", Kind.TASK, reads=("features",), writes=("feature_store",),
          records_read=(*_GATE, "ledger", "publish"), records_written=("publish",),
          gated=True, serial=True, announces=True,
          does="apply and materialize the features in Feast"),
    Stage("monitor", "monitor", Kind.TASK, reads=("features", "published"), writes=(),
          records_read=(*_GATE, "generalize", "detect_pii", "ingest"),
          records_written=("monitor",),
          history=("features", "published", "runs/detect_pii", "runs/ingest", "runs/monitor"),
          gated=True,
          alerts=True,
          does="drift of the DP release against the one before (tested against both "
               "releases' noise) and of the published columns against the day before; the "
               "soft guardrails' alerts"),
    Stage("report", "report", Kind.TASK, reads=(), writes=("reports",),
          records_read=tuple(r for r in RECORDS if r not in ("input", "rekey")),
          history=("reports",), keyed=True, always=True, serial=True,
          does="manifest, run report and the audit index"),
)
STAGES = {s.name: s for s in _STAGES}
FUNNEL = tuple(s.name for s in _STAGES if s.funnel)
KEYED = tuple(s.name for s in _STAGES if s.keyed)
DAILY = tuple(s.name for s in _STAGES if not s.maintenance)  # a daily DAG's tasks, in order
MAINTENANCE = tuple(s.name for s in _STAGES if s.maintenance)


def dataflow_order(stages: tuple[Stage, ...]) -> list[str]:
    """The daily stages in an order where each comes after every other stage that writes
    what it reads for the run's date (Kahn's topological sort, ties in table order), as
    kedro orders its nodes. Maintenance stages rewrite every date in their own DAG, under the
    data root's exclusive lock: they order no day's dataflow. Raises ValueError on a cycle."""
    daily = [s for s in stages if not s.maintenance]
    made = {z: {s.name for s in daily if z in s.writes} for z in ZONES}
    made.update({f"runs/{r}": {s.name for s in daily if r in s.records_written}
                 for r in RECORDS})
    needs = {s.name: {w for r in (*s.reads, *(f"runs/{r}" for r in s.records_read))
                      for w in made.get(r, set()) if w != s.name} for s in daily}
    order: list[str] = []
    while len(order) < len(daily):
        ready = [s.name for s in daily if s.name not in order and needs[s.name] <= set(order)]
        if not ready:
            stuck = sorted(n for n in needs if n not in order)
            raise ValueError(f"pipeline.stages: the stages {stuck} read what each other write "
                             "for the same date: no order runs them")
        order.append(ready[0])
    return order


def _check(stages: tuple[Stage, ...]) -> None:
    """The table is consistent, or the import fails naming what is wrong: every name a known
    zone or record, a TABLE stage's source and sink among its reads and writes, `outcomes`
    written by no stage (the engine writes them), and the table's order the dataflow's."""
    for s in stages:
        unknown = [z for z in (*s.reads, *s.writes) if z not in ZONES]
        unknown += [r for r in (*s.records_read, *s.records_written) if r not in RECORDS]
        unknown += [h for h in s.history if h.removeprefix("runs/") not in
                    (RECORDS if h.startswith("runs/") else ZONES)]
        if unknown:
            raise ValueError(f"pipeline.stages: stage {s.name} names unknown zones or records "
                             f"{unknown}")
        if (s.kind is Kind.TABLE) != (s.source is not None and s.sink is not None) or (
                s.kind is Kind.TABLE and (s.source not in s.reads or s.sink not in s.writes)):
            raise ValueError(f"pipeline.stages: stage {s.name}: a TABLE stage, and only one, "
                             "has a source among its reads and a sink among its writes")
        if "outcomes" in s.records_written:
            raise ValueError(f"pipeline.stages: stage {s.name}: outcomes are the engine's")
    declared = [s.name for s in stages if not s.maintenance]
    if dataflow_order(stages) != declared:
        raise ValueError(f"pipeline.stages: the daily stages are listed as {declared}, but "
                         f"what they read and write orders them {dataflow_order(stages)}")


_check(_STAGES)
