"""Consent decisions as every stage reads them: from the consent log, never the landing file.

`imported` brings the landing file's new lines into the log and checks the old ones are still
there as they were (`pipeline.ledger.consent_log`); `decisions` parses what a checked log holds
against the consent schema. A stage that filters shards on workers checks there that the log
it reads holds the head its own process imported or verified (`LogHead`).
"""

from __future__ import annotations

import polars as pl

from pipeline.core.context import RunContext
from pipeline.core.errors import MissingInputError
from pipeline.ledger.consent_log import LogHead, SyncResult, VerifiedLog
from pipeline.transforms.consent import (
    PAUSED,
    REVOKED,
    all_epochs,
    pseudonym_epochs,
    users_whose_latest,
)
from pipeline.transforms.erasure import old_pseudonyms, pseudonyms_of, read_requests
from pipeline.transforms.ingest import IngestResult, decoded_lines, records_of

CONSENT_FILE = "consent.jsonl"


def imported(ctx: RunContext) -> SyncResult:
    """Import the landing file's new lines into the consent log (which the stage writes)."""
    landing = ctx.file("raw_consent", CONSENT_FILE, mode="read")
    if not landing.is_file():
        raise MissingInputError(f"{landing}: no consent records (without them nobody has "
                                "consented)")
    ctx.zone("erasure_requests", "read")
    return ctx.consent_log("write").sync(landing, erasing=read_requests(ctx.root),
                                         limits=ctx.cfg.ingest)


def decisions(ctx: RunContext, log: VerifiedLog) -> IngestResult:
    """Every decision the checked log holds, parsed against the consent schema (lines that
    do not fit are counted in the stats, never kept)."""
    return records_of(decoded_lines(log.lines(), ctx.cfg.consent_schema,
                                    source_name="consent log", limits=ctx.cfg.ingest),
                      ctx.cfg.consent_schema)


def verified(ctx: RunContext, expect: LogHead | None = None) -> IngestResult:
    """The decisions of the log as it is now, checked (against `expect`, where given)."""
    return decisions(ctx, ctx.consent_log("read").verify(expect))


def epochs(ctx: RunContext, consent: pl.DataFrame) -> pl.DataFrame:
    """(`account_id`, `epoch`) of this purpose's users who reset their profile."""
    return pseudonym_epochs(consent, ctx.cfg.purpose_spec.consent_purpose)


def stopped_pseudonyms(ctx: RunContext, consent: pl.DataFrame) -> list[str]:
    """Staging pseudonyms whose rows no release may read any more: users who paused or
    withdrew (in every epoch), and the pseudonyms reset users had before their reset."""
    purpose, keys = ctx.cfg.purpose_spec.consent_purpose, list(ctx.keys.keys)
    stopped = users_whose_latest(consent, purpose, (PAUSED, REVOKED))
    every = all_epochs(consent, purpose)
    out = set(pseudonyms_of(stopped, keys, ctx.cfg.purpose, every)) if stopped else set()
    out.update(old_pseudonyms(pseudonym_epochs(consent, purpose), every, keys,
                              ctx.cfg.purpose))
    return sorted(out)
