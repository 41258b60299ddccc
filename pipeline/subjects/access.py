"""Subject access and portability (GDPR Art. 15 and 20): everything a deployment holds of one
person, or derived from their data, in one archive they can read and take with them.

For one account (or the accounts an e-mail address was seen with), across every purpose given:
- the raw events still held (within retention) and the consent history, as received;
- per purpose: the person's pseudonyms under each key of the ring; their rows in every staging
  zone (decrypted through the project's storage, under retired keys too), the pending and the
  published zone; the quarantine entries of their raw lines (locations, as stored); the
  k-anonymous group and the public cohort they fell into each day; the DP releases their
  events went into, with the cohorts, the cost and what that means for them;
- when each of those is deleted (retention per zone), and what an erasure request would remove.

The archive is a folder (and a zip of it): each table as CSV and JSON (`archive.Archive`), a
README in plain language, and `what_shapes_my_personalization.html`. Tables are read shard by
shard and only the person's rows are kept, so a large day costs one shard of memory. The
request is logged by the person's pseudonym, never their account id
(`<local root>/subject_access/requests.jsonl`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from pipeline.config import PipelineConfig
from pipeline.core.context import RunContext
from pipeline.core.errors import NotFoundError
from pipeline.core.fs import atomic_write_bytes
from pipeline.stages import STAGING
from pipeline.subjects.archive import Archive
from pipeline.subjects.explain import (
    cohorts,
    deletion_dates,
    groups,
    releases,
)
from pipeline.subjects.find import (
    CONSENT_FILE,
    EVENTS_FILE,
    Found,
    Identity,
    RawLine,
    Unreadable,
    accounts_with,
    consent_decisions,
    erasure_requested,
    quarantined,
    raw_lines,
    rows_in,
)
from pipeline.subjects.model import PurposeFindings, SubjectAccess
from pipeline.subjects.page import readme, render_page
from pipeline.transforms.consent import current_status

ZONES_HELD = (*(z.name for z in STAGING), "published")


def subject_access(configs: Sequence[PipelineConfig], *, account_id: str | None = None,
                   email: str | None = None, out: Path | None = None) -> SubjectAccess:
    """Write the archive for one person (see the module docstring). `configs`: one per
    purpose, sharing a data root (the first's is where the raw data is read)."""
    if not configs:
        raise NotFoundError("no purpose to look in")
    now = datetime.now(UTC)
    first = RunContext(configs[0], run_date=now.date())
    ids = _accounts(first, account_id, email)
    decisions = consent_decisions(first)
    subject = Identity.of(first, ids).by_key.get(first.key.key_id, "none")
    folder = out or (first.local / "subject_access" / f"subject-{subject[:16]}-"
                                                      f"{now.strftime('%Y%m%dT%H%M%S')}")
    archive = Archive(folder)
    try:
        raw = list(raw_lines(first, ids, "raw_events", EVENTS_FILE)) if ids else []
        _add_raw(archive, "raw_events", raw)
        consent = list(raw_lines(first, ids, "raw_consent", CONSENT_FILE)) if ids else []
        _add_raw(archive, "consent_history", consent)
        erased = erasure_requested(first, ids or ([account_id] if account_id else []))
        found = [_purpose(RunContext(cfg, run_date=now.date()), ids, raw, archive, decisions)
                 for cfg in configs]
        result = SubjectAccess(folder, folder.with_suffix(".zip"),
                               folder / "what_shapes_my_personalization.html",
                               now.isoformat(timespec="seconds"), len(raw), len(consent),
                               [c.record for c in consent if c.record is not None],
                               erased, found, {})
        archive.write_text("summary.json", json.dumps(_summary(result, archive), indent=2))
    finally:
        archive.close()
    result.tables = archive.counts()
    archive.write_text("README.md", readme(result))
    archive.write_text(result.page.name, render_page(result))
    archive.zip()
    _log(first, subject, result)
    for cfg, found_in in zip(configs, result.purposes, strict=True):
        # each purpose's audit chain, under the person's pseudonym in that purpose
        ctx = RunContext(cfg, run_date=now.date())
        ctx.audit("subject_access",
                  subject=found_in.pseudonyms.get(ctx.key.key_id, subject)[:16],
                  detail={"rows": sum(found_in.rows.values()), "tables": len(result.tables),
                          "held_anything": result.holds_anything})
    return result


def _accounts(ctx: RunContext, account_id: str | None, email: str | None) -> list[str]:
    if account_id:
        return [account_id]
    if not email:
        raise NotFoundError("subject access needs an account id or an e-mail address")
    fields = [n for n, f in ctx.cfg.event_schema.fields.items()
              if "mail" in n.lower() and f.type == "string"]
    if not fields:
        raise NotFoundError("the event schema holds no e-mail field to look the person up by; "
                            "ask for their account id")
    return sorted({a for f in fields for a in accounts_with(ctx, f, email)})


def _add_raw(archive: Archive, name: str, lines: Sequence[RawLine]) -> None:
    """The person's raw lines as received: where each is, and its fields as they came (a line
    that is not a JSON object is listed by location only)."""
    rows = [{"file": r.file, "line": r.line,
             **({k: v if isinstance(v, str | int | float | bool) or v is None
                 else json.dumps(v, ensure_ascii=False) for k, v in r.record.items()}
                if r.record is not None else {"_unreadable": True})} for r in lines]
    frame = (pl.from_dicts(rows, infer_schema_length=None, strict=False) if rows
             else pl.DataFrame({"file": [], "line": []}, schema={"file": pl.String,
                                                                  "line": pl.Int64}))
    archive.add(name, frame.select(pl.all().cast(pl.String)) if rows else frame)


def _purpose(ctx: RunContext, ids: Sequence[str], raw: Sequence[RawLine], archive: Archive,
             decisions: pl.DataFrame) -> PurposeFindings:
    """One purpose's tables of the person, written to `<purpose>/...` as found."""
    purpose = ctx.cfg.purpose
    who = Identity.of(ctx, ids, decisions)
    out = PurposeFindings(purpose, ctx.cfg.purpose_spec.description or "", who.by_key,
                          status=current_status(decisions.filter(pl.col("account_id").is_in(
                              list(ids))), ctx.cfg.purpose_spec.consent_purpose))
    archive.add(f"{purpose}/pseudonyms", pl.DataFrame(
        {"key_id": list(who.by_key), "pseudonym": list(who.by_key.values())},
        schema={"key_id": pl.String, "pseudonym": pl.String}))
    generalized: dict[date, list[pl.DataFrame]] = {}
    published: dict[date, list[pl.DataFrame]] = {}
    for name in ZONES_HELD if ids else ():
        for found in rows_in(ctx, ctx.zone(name), who):
            _take(out, archive, found)
            if isinstance(found, Found) and name == "generalized":
                generalized.setdefault(found.day, []).append(found.rows)
            if isinstance(found, Found) and name == "published":
                published.setdefault(found.day, []).append(found.rows)
    for found in quarantined(ctx, raw):
        _take(out, archive, found)
    gen = {d: pl.concat(v, how="diagonal_relaxed") for d, v in generalized.items()}
    pub = {d: pl.concat(v, how="diagonal_relaxed") for d, v in published.items()}
    held_generalized = set(ctx.storage.dates(ctx.zone("generalized")))
    out.groups = groups(ctx, pub, gen)
    out.cohorts = cohorts(ctx, gen)
    out.profiles = (pl.concat([t.with_columns(date=pl.lit(str(d))) for d, t in
                               sorted(pub.items())], how="diagonal_relaxed")
                    if pub and ctx.cfg.purpose_spec.profile else None)
    out.releases = releases(ctx, gen, held_generalized)
    out.held.setdefault("raw_events", set()).update(_raw_days(raw))
    out.deletions = deletion_dates(ctx, out.held)
    archive.add(f"{purpose}/groups", out.groups)
    archive.add(f"{purpose}/cohorts", out.cohorts)
    archive.add(f"{purpose}/releases", pl.DataFrame(
        [{"date": r.date, "feature_set": r.feature_set, "cost": r.cost, "covers": r.covers,
          "cohorts": ", ".join(r.cohorts) if r.cohorts is not None else None,
          "what_it_means": r.sentence} for r in out.releases],
        schema={"date": pl.String, "feature_set": pl.String, "cost": pl.String,
                "covers": pl.String, "cohorts": pl.String, "what_it_means": pl.String}))
    archive.add(f"{purpose}/deletion_dates", out.deletions)
    return out


def _take(out: PurposeFindings, archive: Archive, found: Found | Unreadable) -> None:
    if isinstance(found, Unreadable):
        out.unreadable.append(f"{found.zone} {found.day}: {found.why}")
        return
    archive.add(f"{out.purpose}/{found.zone}/date={found.day}", found.rows)
    out.rows[found.zone] = out.rows.get(found.zone, 0) + found.rows.height
    out.held.setdefault(found.zone, set()).add(found.day)


def _raw_days(lines: Sequence[RawLine]) -> set[date]:
    days = set()
    for r in lines:
        part = next((p for p in r.file.split("/") if p.startswith("date=")), None)
        if part:
            days.add(date.fromisoformat(part[5:]))
    return days


def _summary(result: SubjectAccess, archive: Archive) -> dict:
    return {"requested_at": result.requested_at, "raw_event_lines": result.raw_lines,
            "consent_records": result.consent_records,
            "erasure_requested": result.erasure_requested,
            "purposes": {p.purpose: {"rows": p.rows, "unreadable": p.unreadable,
                                     "releases": len(p.releases)}
                         for p in result.purposes},
            "tables": archive.counts()}


def _log(ctx: RunContext, subject: str, result: SubjectAccess) -> None:
    """One line per request, naming the person by pseudonym only."""
    log = ctx.local / "subject_access" / "requests.jsonl"
    line = {"requested_at": result.requested_at, "subject_pseudonym": subject,
            "key_id": ctx.key.key_id, "purposes": [p.purpose for p in result.purposes],
            "held_anything": result.holds_anything, "tables": len(result.tables)}
    previous = log.read_bytes() if log.is_file() else b""
    atomic_write_bytes(log, previous + (json.dumps(line) + "\n").encode())

