"""Run the stages for one date, one at a time (the DAG) or all in order (the CLI).

Each stage reads the partition the previous stage wrote, writes its own, and records its row
accounting in `runs/date=D/<stage>.json`. Only paths cross stage boundaries, so an Airflow task
passes a path through XCom, never data. Rerunning a stage for a date overwrites its partition;
the DP stage returns the ledger's stored release instead of drawing new noise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date as Date
from datetime import timedelta
from functools import cached_property
from pathlib import Path

from pipeline.config import PipelineConfig, load_config
from pipeline.core.errors import (
    ConfigError,
    KeyUnavailableError,
    PipelineError,
    ValidationFailedError,
)
from pipeline.core.keys import KeyRing, MasterKey, load_key_ring
from pipeline.core.records import StageStats
from pipeline.core.storage import (
    Storage,
    Zone,
    atomic_write_bytes,
    atomic_write_json,
    parquet_bytes,
)

log = logging.getLogger("pipeline")

INGESTED = Zone("staging/ingested", sensitive=True)
CONSENTED = Zone("staging/consented", sensitive=True)
SCRUBBED = Zone("staging/scrubbed", sensitive=True)
PSEUDONYMIZED = Zone("staging/pseudonymized", sensitive=True)
GENERALIZED = Zone("staging/generalized", sensitive=True)
QUARANTINE = Zone("quarantine/events", sensitive=False)


@dataclass
class RunContext:
    """Config, key and storage for one run; the key is loaded once and never logged."""

    cfg: PipelineConfig

    run_date: Date | None = None  # retired keys are readable relative to this date

    @cached_property
    def keys(self) -> KeyRing:
        return load_key_ring(self.cfg.keys)

    @property
    def key(self) -> MasterKey:
        """The active key: everything written now is keyed with it."""
        return self.keys.active

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.cfg.paths.data_root, encryption_key=self.key.staging_key(),
                       key_id=self.key.key_id, read_key=self._retired_staging_key)

    def _retired_staging_key(self, key_id: str) -> bytes:
        if self.run_date is None:
            raise KeyUnavailableError(f"reading data under retired key id {key_id!r} needs "
                                      "the run's date")
        return self.keys.for_reading(key_id, on=self.run_date).staging_key()

    @property
    def root(self) -> Path:
        return self.cfg.paths.data_root

    @property
    def user_col(self) -> str:
        return self.cfg.purpose_spec.pseudonym_columns[0]

    def published_zone(self) -> Zone:
        return Zone(f"published/{self.cfg.purpose}", sensitive=False)

    def features_zone(self) -> Zone:
        from pipeline.transforms.features import features_zone

        return features_zone(self.cfg.features)

    def run_dir(self, date: str) -> Path:
        return self.root / "runs" / f"date={date}"

    def save_stats(self, date: str, stats: StageStats) -> None:
        atomic_write_json(self.run_dir(date) / f"{stats.stage}.json", stats.to_dict())
        log.info("%s %s: rows in %d, out %d, dropped %s, quarantined %s", date, stats.stage,
                 stats.rows_in, stats.rows_out, stats.dropped or "{}", stats.quarantined or "{}")

    def load_stats(self, date: str) -> dict[str, StageStats]:
        out = {}
        for path in sorted(self.run_dir(date).glob("*.json")):
            data = json.loads(path.read_text())
            if "stage" in data:
                out[data["stage"]] = StageStats.from_dict(data)
        return out


def erase(ctx: RunContext, date: str) -> str:
    """Apply erasure requests and consent withdrawals to every stored partition (see
    `pipeline.transforms.erasure`); published partitions left short of k or ℓ are suppressed
    again."""
    from pipeline.transforms.erasure import (
        ErasureResult,
        erase_from_zone,
        erase_raw_lines,
        pseudonyms_of,
        read_requests,
        withdrawn,
    )
    from pipeline.transforms.generalize.kanon import short_of
    from pipeline.transforms.ingest import read_records

    result = ErasureResult()
    ids = read_requests(ctx.root)
    result.requests = len(ids)
    keys = ctx.keys.keys  # active and retired: pseudonyms under any of them are the user
    purpose = ctx.cfg.purpose
    consent_path = ctx.root / "raw" / "consent" / "consent.jsonl"
    if ids:
        for raw in sorted((ctx.root / "raw" / "events").glob("date=*/events.jsonl")):
            result.removed["raw/events"] += erase_raw_lines(raw, ids)
        result.removed["raw/consent"] += erase_raw_lines(consent_path, ids)
        pseudonyms = pseudonyms_of(ids, keys, purpose)
        for zone in STAGING_ZONES:
            erase_from_zone(ctx.storage, zone, ids, pseudonyms, result)
    gone = []
    if consent_path.is_file():
        consent = read_records(consent_path, ctx.cfg.consent_schema,
                               source_name=str(consent_path)).table
        gone = withdrawn(consent, ctx.cfg.purpose_spec.consent_purpose)
    result.withdrawn_users = len(gone)
    spec, k = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
    if ids or gone:
        erase_from_zone(ctx.storage, ctx.published_zone(), [],
                        pseudonyms_of([*ids, *gone], keys, purpose),
                        result, short=short_of(spec.quasi_identifiers, ctx.user_col, k.k,
                                               l=k.l, sensitive=spec.sensitive_attribute))
    path = ctx.run_dir(date) / "erasure.json"
    atomic_write_json(path, result.to_dict())
    return str(path)


def retention(ctx: RunContext, date: str) -> str:
    """Delete partitions past their retention window; record what went."""
    from pipeline.transforms.retention import purge

    path = ctx.run_dir(date) / "retention.json"
    atomic_write_json(path, {"purged": purge(ctx.root, ctx.cfg.retention,
                                             Date.fromisoformat(date)),
                             "windows_days": ctx.cfg.retention.model_dump()})
    return str(path)


def ingest(ctx: RunContext, date: str) -> str:
    from pipeline.transforms.ingest import ingest_events

    source = ctx.root / "raw" / "events" / f"date={date}" / "events.jsonl"
    if not source.is_file():
        raise PipelineError(f"{source}: no raw events for {date}")
    result = ingest_events(source, ctx.cfg.event_schema,
                           source_name=str(source.relative_to(ctx.root)))
    ctx.storage.write(QUARANTINE, date, result.quarantine)
    ctx.save_stats(date, result.stats)
    return str(ctx.storage.write(INGESTED, date, result.table))


def consent(ctx: RunContext, date: str) -> str:
    from pipeline.transforms.consent import filter_by_consent
    from pipeline.transforms.ingest import read_records

    path = ctx.root / "raw" / "consent" / "consent.jsonl"
    if not path.is_file():
        raise PipelineError(f"{path}: no consent records (without them nobody has consented)")
    records = read_records(path, ctx.cfg.consent_schema, source_name=str(path))
    kept, stats = filter_by_consent(ctx.storage.read(INGESTED, date), records.table,
                                    purpose=ctx.cfg.purpose_spec.consent_purpose)
    stats.details["consent_records_rejected"] = records.stats.rows_in - records.stats.rows_out
    ctx.save_stats(date, stats)
    return str(ctx.storage.write(CONSENTED, date, kept))


def detect_pii(ctx: RunContext, date: str) -> str:
    from pipeline.transforms.pii.scrub import (
        WORKERS_FROM_TEXTS,
        TextScrubber,
        distinct_texts,
        scrub_pii,
    )

    events, schema = ctx.storage.read(CONSENTED, date), ctx.cfg.event_schema
    with TextScrubber(ctx.cfg.pii, ctx.key.token_key(ctx.cfg.purpose),
                      with_workers=distinct_texts(events, schema) >= WORKERS_FROM_TEXTS) as s:
        result = scrub_pii(events, schema, s, pseudonym_key=ctx.key.pseudonym_key(ctx.cfg.purpose))
    result.stats.details["token_key_id"] = ctx.key.key_id
    ctx.save_stats(date, result.stats)
    return str(ctx.storage.write(SCRUBBED, date, result.table))


def pseudonymize(ctx: RunContext, date: str) -> str:
    from pipeline.transforms.pseudonymize import pseudonymize as hmac_columns

    table, stats = hmac_columns(ctx.storage.read(SCRUBBED, date), ctx.cfg.event_schema, ctx.key,
                                purpose=ctx.cfg.purpose)
    ctx.save_stats(date, stats)
    return str(ctx.storage.write(PSEUDONYMIZED, date, table))


def generalize(ctx: RunContext, date: str) -> str:
    from pipeline.transforms.generalize.coarsen import generalize as coarsen

    spec, kcfg = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity
    table, stats = coarsen(ctx.storage.read(PSEUDONYMIZED, date), ctx.cfg.generalize,
                           quasi_identifiers=spec.quasi_identifiers, user_col=ctx.user_col,
                           k=kcfg.k, l=kcfg.l, sensitive=spec.sensitive_attribute,
                           order=kcfg.generalize_order)
    ctx.save_stats(date, stats)
    return str(ctx.storage.write(GENERALIZED, date, table))


def minimize(ctx: RunContext, date: str) -> str:
    from pipeline.transforms.minimize import minimize as allowlist

    table, stats = allowlist(ctx.storage.read(GENERALIZED, date), ctx.cfg.purpose_spec)
    ctx.save_stats(date, stats)
    return str(ctx.storage.write(ctx.published_zone(), date, table))


def validate(ctx: RunContext, date: str) -> str:
    """Run the suite; raise ValidationFailedError (after saving the outcome) on failure."""
    from pipeline.transforms.pii.scrub import fast_analyzer
    from pipeline.transforms.validate.suite import validate_table

    with fast_analyzer(ctx.cfg.pii) as detector:
        outcome = validate_table(ctx.storage.read(ctx.published_zone(), date),
                                 ctx.cfg.purpose_spec, k=ctx.cfg.k_anonymity.k,
                                 l=ctx.cfg.k_anonymity.l, gx_root=ctx.root / "validation",
                                 run_name=f"{ctx.cfg.purpose}-{date}", detector=detector)
    path = ctx.run_dir(date) / "validation.json"
    atomic_write_json(path, outcome.to_dict())
    if not outcome.success:
        failed = ", ".join(f"{c.expectation}({c.column or 'table'})" for c in outcome.failures)
        raise ValidationFailedError(f"{date}: minimization suite failed: {failed}; "
                                    "publishing is blocked")
    return str(path)


def _require_validated(ctx: RunContext, date: str) -> None:
    path = ctx.run_dir(date) / "validation.json"
    if not path.is_file() or not json.loads(path.read_text()).get("success"):
        raise ValidationFailedError(f"{date}: no passing validation for this partition; "
                                    "refusing to release or publish")


def features(ctx: RunContext, date: str) -> str:
    """Release DP features through the ledger: charged once, returned as stored on reruns.

    A weekly feature set is released on the week's last day (Sunday) from the week's published
    partitions, all of which must have passed validation; on other days nothing is released."""
    from pipeline.ledger.store import PrivacyLedger, Release, WindowBudget

    fcfg = ctx.cfg.features
    day = Date.fromisoformat(date)
    first = release_period_start(fcfg.period, day)
    if first is None:
        atomic_write_json(ctx.run_dir(date) / "ledger.json", {
            "release_due": False, "period": "week",
            "next_release": str(day + timedelta(days=6 - day.weekday()))})
        return ""
    days = [str(first + timedelta(days=i)) for i in range((day - first).days + 1)]
    for d in days:
        _require_validated(ctx, d)
    ledger = PrivacyLedger.from_config(ctx.cfg.budget, ctx.root)
    budget = WindowBudget.from_config(ctx.cfg.budget)
    stored = ledger.get(ctx.cfg.purpose, fcfg.feature_set, date)
    reused = stored is not None
    if stored is None:
        import polars as pl

        from pipeline.transforms.features import release_features

        planned = Release(purpose=ctx.cfg.purpose, feature_set=fcfg.feature_set,
                          release_date=date, period_start=days[0], epsilon=fcfg.epsilon,
                          rho=fcfg.rho_cost, delta=fcfg.delta, mechanism="", library="",
                          payload=b"")
        ledger.check_budget(planned, budget)  # fail before any work
        events = pl.concat([ctx.storage.read(ctx.published_zone(), d) for d in days])
        rel, stats = release_features(events, fcfg, age_bands=ctx.cfg.generalize.age_bands,
                                      user_col=ctx.user_col, release_date=date)
        stored = ledger.record(replace(planned, delta=rel.delta, mechanism=rel.mechanism,
                                       library=rel.library, payload=parquet_bytes(rel.table)),
                               budget)
        ctx.save_stats(date, stats)
    window = ledger.window_spend(ctx.cfg.purpose, day, budget)
    atomic_write_json(ctx.run_dir(date) / "ledger.json", {
        "release_due": True, "purpose": stored.purpose, "feature_set": stored.feature_set,
        "date": stored.release_date, "period": [stored.period_start, stored.period_end],
        "epsilon": stored.epsilon, "rho": stored.rho, "delta": stored.delta,
        "mechanism": stored.mechanism, "library": stored.library,
        "recorded_at": stored.created_at, "payload_sha256": stored.payload_sha256,
        "reused_stored_release": reused, "ledger": ledger.where,
        "accounting": budget.accounting, "window_days": budget.days,
        "window_budget": budget.limit, "window_spent": window.spent,
        "window_delta_budget": budget.delta, "window_delta_spent": window.delta,
        **({"window_as_epsilon": budget.as_epsilon(window.spent),
            "window_as_epsilon_delta": budget.conversion_delta}
           if budget.accounting == "zcdp" else {})})
    path = ctx.storage.partition(ctx.features_zone(), date)
    atomic_write_bytes(path, stored.payload)
    return str(path)


def release_period_start(period: str, day: Date) -> Date | None:
    """First day of the data a release on `day` covers; None when no release is due."""
    if period == "day":
        return day
    return day - timedelta(days=6) if day.weekday() == 6 else None


def publish(ctx: RunContext, date: str) -> str:
    from pipeline.outputs.feast import publish as to_feast

    _require_validated(ctx, date)
    ledger = json.loads((ctx.run_dir(date) / "ledger.json").read_text())
    info = to_feast(ctx.cfg, date) if ledger["release_due"] else {
        "materialized": False,
        "reason": f"no release due on {date}: features are released {ledger['period']}ly"}
    path = ctx.run_dir(date) / "publish.json"
    atomic_write_json(path, info)
    return str(path)


def report(ctx: RunContext, date: str) -> str:
    from pipeline.outputs.report import write_report

    return str(write_report(ctx, date))


STAGES: dict[str, Callable[[RunContext, str], str]] = {
    "erase": erase, "retention": retention, "ingest": ingest, "consent": consent,
    "detect_pii": detect_pii, "pseudonymize": pseudonymize, "generalize": generalize,
    "minimize": minimize, "validate": validate, "features": features,
    "publish": publish, "report": report,
}


STAGING_ZONES = (INGESTED, CONSENTED, SCRUBBED, PSEUDONYMIZED, GENERALIZED)
# Stages whose output depends on the key (tokens, pseudonyms) and everything after them that is
# not a DP release: the ledger's stored release holds cohorts, not pseudonyms, and stays.
REKEYED_STAGES = ("detect_pii", "pseudonymize", "generalize", "minimize", "validate", "report")


def rekey(date: str, config_path: str | Path) -> dict[str, object]:
    """After a rotation: re-encrypt a date's staging partitions under the active key and redo
    the keyed stages, so nothing for that date depends on a retired key any more."""
    date = check_date(date)
    ctx = RunContext(load_config(config_path), run_date=Date.fromisoformat(date))
    reencrypted = {}
    for zone in STAGING_ZONES:
        old = ctx.storage.written_key_id(zone, date)
        if old is not None and old != ctx.key.key_id:
            ctx.storage.write(zone, date, ctx.storage.read(zone, date))
            reencrypted[zone.name] = old
    for name in REKEYED_STAGES:
        STAGES[name](ctx, date)
    info: dict[str, object] = {"date": date, "active_key_id": ctx.key.key_id,
                               "reencrypted": reencrypted, "stages_rerun": list(REKEYED_STAGES)}
    atomic_write_json(ctx.run_dir(date) / "rekey.json", info)
    return info


def check_date(date: str) -> str:
    try:
        return Date.fromisoformat(date).isoformat()
    except ValueError:
        raise ConfigError(f"date {date!r} is not YYYY-MM-DD") from None


def run_stage(stage: str, date: str, config_path: str | Path) -> str:
    """Run one stage for one date; what a DAG task calls. Returns the path it wrote."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    date = check_date(date)
    ctx = RunContext(load_config(config_path), run_date=Date.fromisoformat(date))
    return STAGES[stage](ctx, date)


def run_all(date: str, config_path: str | Path) -> tuple[RunContext, bool]:
    """Every stage in order. A failed validation skips features and publish; the report is
    written either way. Returns (context, published?)."""
    date = check_date(date)
    ctx = RunContext(load_config(config_path), run_date=Date.fromisoformat(date))
    _ = ctx.key  # no key: stop before touching any data
    published = True
    for name, stage in STAGES.items():
        if name in ("features", "publish") and not published:
            continue
        try:
            stage(ctx, date)
        except ValidationFailedError as exc:
            log.error("%s", exc)
            published = False
    return ctx, published


def output_paths(ctx: RunContext, date: str) -> dict[str, Path]:
    """Where a run's outputs for `date` land (for the CLI and README)."""
    return {"report": ctx.root / "reports" / f"date={date}" / "report.html",
            "manifest": ctx.root / "reports" / f"date={date}" / "manifest.json",
            "features": ctx.storage.partition(ctx.features_zone(), date),
            "published": ctx.storage.partition(ctx.published_zone(), date),
            "feature_repo": ctx.root / "feature_repo"}


