"""Finding one person's data: what they sent (raw lines, consent records) and every table a
purpose derived from it, read shard by shard through the project's own storage (decrypting
staging, under retired keys too), matched by what identifies them there.

How each place identifies a person: raw lines and the first staging zones by their account id
(as erasure finds them, by meaning however it is escaped); later staging zones by their
pseudonym under each key of the ring; a profile purpose's published rows by the pseudonym of
each epoch; the quarantine by the raw lines' locations (it holds nothing else).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

import msgspec
import polars as pl

from pipeline.core.context import RunContext
from pipeline.core.errors import KeyUnavailableError, StorageError
from pipeline.core.storage import Shards
from pipeline.stages import Zone
from pipeline.transforms.consent import all_epochs, pseudonym_epochs
from pipeline.transforms.erasure import REQUESTS, lines_holding, pseudonyms_of
from pipeline.transforms.profile import epoch_of, epoch_pseudonyms
from pipeline.transforms.pseudonymize import EPOCH, pseudonym_expr

EVENTS_FILE, CONSENT_FILE = "events.jsonl", "consent.jsonl"


@dataclass(frozen=True)
class RawLine:
    """One raw line of the person's: where it is, and the record (None: unreadable, too long
    or not JSON)."""

    file: str  # relative to the data root
    line: int
    record: dict | None


def raw_lines(ctx: RunContext, account_ids: Sequence[str], zone: str, filename: str
              ) -> Iterator[RawLine]:
    """The person's lines in every file `filename` of `zone` (every date's, or the zone's
    one file), read as ingest reads them."""
    area = ctx.area(zone)
    paths = sorted(area.glob(f"date=*/{filename}")) or [area / filename]
    limit = ctx.cfg.ingest.max_line_bytes
    for path in paths:
        for number, line in lines_holding(path, account_ids, max_line_bytes=limit):
            yield RawLine(str(path.relative_to(ctx.root)), number, _decoded(line))


def _decoded(line: bytes | None) -> dict | None:
    if line is None:
        return None
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def accounts_with(ctx: RunContext, field: str, value: str) -> list[str]:
    """Account ids of raw events whose `field` equals `value` (case-insensitive): how a
    request made by e-mail finds its accounts."""
    found = set()
    for raw in raw_lines(ctx, [value, value.lower()], "raw_events", EVENTS_FILE):
        record = raw.record or {}
        if str(record.get(field, "")).casefold() == value.casefold() and \
                isinstance(record.get("account_id"), str):
            found.add(record["account_id"])
    return sorted(found)


def consent_decisions(ctx: RunContext) -> pl.DataFrame:
    """Every decision the consent log holds, checked (`pipeline.ledger.consent_log`)."""
    from pipeline.steps.consents import decisions

    return decisions(ctx, ctx.consent_log().verify()).table


def erasure_requested(ctx: RunContext, account_ids: Sequence[str]) -> list[str]:
    """When erasure of these accounts was requested (the request file is the one place their
    raw id is kept after erasure, to honour the request at every run)."""
    ctx.zone("erasure_requests")
    return sorted(str((_decoded(line) or {}).get("requested_at", "unknown"))
                  for _, line in lines_holding(ctx.root / REQUESTS, account_ids))


@dataclass(frozen=True)
class Identity:
    """How one purpose's tables name the person: their account ids (before pseudonymization)
    and their pseudonyms under every key of the ring."""

    account_ids: tuple[str, ...]
    pseudonyms: tuple[str, ...]
    by_key: dict[str, str]  # key id -> pseudonym (one account: the first)

    @classmethod
    def of(cls, ctx: RunContext, account_ids: Sequence[str],
           consent: pl.DataFrame | None = None) -> Identity:
        """`consent`: the consent log's decisions; a user who reset their profile has a
        pseudonym per epoch (`pipeline.transforms.consent`), the current one in `by_key`."""
        purpose, cp = ctx.cfg.purpose, ctx.cfg.purpose_spec.consent_purpose
        every = all_epochs(consent, cp) if consent is not None else None
        current = (pseudonym_epochs(consent, cp).filter(pl.col("account_id") == account_ids[0])
                   if consent is not None and account_ids else None)
        first = pl.DataFrame({"account_id": list(account_ids[:1]), EPOCH: [
            current["epoch"][0] if current is not None and current.height else None]
            * len(account_ids[:1])}, schema={"account_id": pl.String, EPOCH: pl.String})
        by_key = {k.key_id: first.select(pseudonym_expr("account_id", k.pseudonym_key(purpose))
                                         ).item() for k in ctx.keys.keys} if account_ids else {}
        return cls(tuple(account_ids),
                   tuple(pseudonyms_of(account_ids, ctx.keys.keys, purpose, every)), by_key)

    def published_names(self, ctx: RunContext, day: date) -> list[str]:
        """What the person is called in a published partition of `day`: their pseudonyms, or
        for a profile purpose the epoch's."""
        profile = ctx.cfg.purpose_spec.profile
        if profile is None:
            return list(self.pseudonyms)
        return epoch_pseudonyms(list(self.pseudonyms), ctx.keys.keys, ctx.cfg.purpose,
                                [epoch_of(day, profile.epoch)])


@dataclass(frozen=True)
class Found:
    """The person's rows of one partition shard, and where they came from."""

    zone: str
    day: date
    rows: pl.DataFrame


@dataclass(frozen=True)
class Unreadable:
    zone: str
    day: date
    why: str


def rows_in(ctx: RunContext, zone: Zone, who: Identity) -> Iterator[Found | Unreadable]:
    """The person's rows in every partition of `zone`, shard by shard."""
    storage = ctx.storage
    for day in storage.dates(zone):
        names = who.published_names(ctx, day) if zone.name in ("published", "pending") \
            else list(who.pseudonyms)
        try:
            if not storage.exists(zone, day):
                continue
            for shard in Shards(storage, zone, day):
                rows = shard.filter(_theirs(shard, who.account_ids, names))
                if rows.height:
                    yield Found(zone.name, day, rows)
        except (StorageError, KeyUnavailableError) as exc:
            yield Unreadable(zone.name, day, f"{type(exc).__name__}: {exc}")


def _theirs(table: pl.DataFrame, account_ids: Sequence[str], names: Sequence[str]) -> pl.Expr:
    match = pl.lit(False)
    if "account_id" in table.columns:
        match |= pl.col("account_id").is_in(list(account_ids))
    for column in [c for c in table.columns if c.endswith("_pseudonym")]:
        match |= pl.col(column).is_in(list(names))
    return match


def quarantined(ctx: RunContext, lines: Sequence[RawLine]) -> Iterator[Found | Unreadable]:
    """The quarantine entries of the person's raw lines: (file, line, reason, field), as
    stored (the quarantine holds no value)."""
    where = pl.DataFrame({"source_file": [r.file for r in lines],
                          "line_number": [r.line for r in lines]},
                         schema={"source_file": pl.String, "line_number": pl.Int64})
    if where.is_empty():
        return
    zone = ctx.zone("quarantine")
    for found in _all_rows(ctx, zone):
        if isinstance(found, Unreadable):
            yield found
            continue
        rows = found.rows.join(where, on=["source_file", "line_number"], how="semi")
        if rows.height:
            yield Found(found.zone, found.day, rows)


def _all_rows(ctx: RunContext, zone: Zone) -> Iterator[Found | Unreadable]:
    storage = ctx.storage
    for day in storage.dates(zone):
        try:
            for shard in Shards(storage, zone, day) if storage.exists(zone, day) else ():
                yield Found(zone.name, day, shard)
        except StorageError as exc:
            yield Unreadable(zone.name, day, f"{type(exc).__name__}: {exc}")

