"""Consent: which of a user's events a purpose may use, from their decisions for it.

Four statuses, each a line in the consent log with the time it was recorded:
- `granted`: events from then on may be used;
- `revoked`: withdrawal. Nothing of the user is used from the next run on (reruns and
  backfills of earlier days included), and their rows leave what later releases read;
- `paused`: personalization stops from the next run (reruns included), nothing is deleted;
  only a new `granted` resumes it, and events recorded while paused are never used;
- `reset`: the profile starts again. The user's derived data for the purpose is erased (as an
  erasure request would, raw data kept for other purposes), events before the reset are never
  used again, and events after it carry pseudonyms of a new epoch (`pseudonym_epochs`), so the
  old profile cannot be linked to the new one. A reset keeps consent: it grants from then on.

An event is used only if the user's decision at or before its time grants (`granted`, `reset`),
their latest decision of all does not stop (`revoked`, `paused`), and it is not older than
their latest reset. No record means no consent.
"""

from __future__ import annotations

import polars as pl

from pipeline.core.details import ConsentDetails
from pipeline.core.records import StageStats

GRANTED, REVOKED, PAUSED, RESET = "granted", "revoked", "paused", "reset"
STATUSES = (GRANTED, REVOKED, PAUSED, RESET)
GRANTING = (GRANTED, RESET)
STOPPING = (REVOKED, PAUSED)
# Dropped-row reasons, in the order the report lists them.
REASONS = ("no_consent", "consent_revoked", "consent_paused", "consent_withdrawn_since",
           "consent_paused_since", "before_reset")


def decisions_for(consent: pl.DataFrame, purpose: str, user_col: str = "account_id"
                  ) -> pl.DataFrame:
    """The purpose's decisions as (`user_col`, `_decided_at`, `_status`), in time order."""
    return (consent.filter(pl.col("purpose") == purpose)
            .select(pl.col("account_id").alias(user_col),
                    pl.col("recorded_at").alias("_decided_at"),
                    pl.col("status").alias("_status"))
            .sort(user_col, "_decided_at", maintain_order=True))


def latest_decisions(decisions: pl.DataFrame, user_col: str) -> pl.DataFrame:
    """Per user: their latest status (`_latest`) and latest reset time (`_reset_at`, or
    null)."""
    return decisions.group_by(user_col).agg(
        pl.col("_status").sort_by("_decided_at").last().alias("_latest"),
        pl.col("_decided_at").filter(pl.col("_status") == RESET).max().alias("_reset_at"))


def filter_by_consent(events: pl.DataFrame, consent: pl.DataFrame, *, purpose: str,
                      user_col: str = "account_id", time_col: str = "event_time"
                      ) -> tuple[pl.DataFrame, StageStats]:
    """As-of join of each event to its user's last decision for `purpose` (module
    docstring); every event not used is counted under its reason."""
    decisions = decisions_for(consent, purpose, user_col)
    latest = latest_decisions(decisions, user_col)
    ordered = events.with_row_index("_order").sort(user_col, time_col)
    joined = (ordered.join_asof(decisions, left_on=time_col, right_on="_decided_at",
                                by=user_col, strategy="backward", check_sortedness=False)
              .join(latest, on=user_col, how="left"))
    status, now = pl.col("_status"), pl.col("_latest")
    granting = status.is_in(GRANTING)
    before_reset = pl.col("_reset_at").is_not_null() & (pl.col(time_col)
                                                       < pl.col("_reset_at"))
    reason = (pl.when(status.is_null()).then(pl.lit("no_consent"))
              .when(status == REVOKED).then(pl.lit("consent_revoked"))
              .when(status == PAUSED).then(pl.lit("consent_paused"))
              .when(granting & (now == REVOKED)).then(pl.lit("consent_withdrawn_since"))
              .when(granting & (now == PAUSED)).then(pl.lit("consent_paused_since"))
              .when(granting & before_reset).then(pl.lit("before_reset"))
              .when(granting).then(pl.lit(None, dtype=pl.String))
              .otherwise(pl.lit("no_consent")))  # a status the schema does not know
    joined = joined.with_columns(reason.alias("_reason"))
    kept = joined.filter(pl.col("_reason").is_null()).sort("_order")
    counts = dict(joined.filter(pl.col("_reason").is_not_null())
                  .group_by("_reason").len().iter_rows())
    dropped = {r: int(counts[r]) for r in REASONS if counts.get(r)}
    stats = StageStats(stage="consent", rows_in=events.height, rows_out=kept.height,
                       dropped=dropped, details=ConsentDetails(
                           purpose=purpose,
                           users_kept=kept.select(pl.col(user_col).n_unique()).item(),
                           users_paused=_count(latest, PAUSED),
                           users_reset=latest.filter(pl.col("_reset_at").is_not_null()
                                                     ).height))
    return (kept.drop("_order", "_decided_at", "_status", "_latest", "_reset_at", "_reason"),
            stats.check_balanced())


def _count(latest: pl.DataFrame, status: str) -> int:
    return latest.filter(pl.col("_latest") == status).height


def users_whose_latest(consent: pl.DataFrame, purpose: str, statuses: tuple[str, ...]
                       ) -> list[str]:
    """Accounts whose latest decision for `purpose` is one of `statuses`."""
    latest = latest_decisions(decisions_for(consent, purpose), "account_id")
    return sorted(latest.filter(pl.col("_latest").is_in(statuses))["account_id"].to_list())


def current_status(consent: pl.DataFrame, purpose: str) -> str:
    """One person's latest decision for `purpose` (`none` without one)."""
    latest = latest_decisions(decisions_for(consent, purpose), "account_id")
    return str(latest["_latest"][0]) if latest.height else "none"


def pseudonym_epochs(consent: pl.DataFrame, purpose: str) -> pl.DataFrame:
    """(`account_id`, `epoch`) of every user who reset their profile for `purpose`: the time
    of their latest reset, which their pseudonyms are made with from then on (a user without
    a reset keeps the plain pseudonym)."""
    latest = latest_decisions(decisions_for(consent, purpose), "account_id")
    return (latest.filter(pl.col("_reset_at").is_not_null())
            .select("account_id", epoch=epoch_text(pl.col("_reset_at")))
            .sort("account_id"))


def all_epochs(consent: pl.DataFrame, purpose: str) -> pl.DataFrame:
    """(`account_id`, `epoch`) of every reset, earlier ones included: a user's pseudonyms in
    every epoch they have had (for erasure and subject access)."""
    decisions = decisions_for(consent, purpose)
    return (decisions.filter(pl.col("_status") == RESET)
            .select("account_id", epoch=epoch_text(pl.col("_decided_at")))
            .unique().sort("account_id", "epoch"))


def epoch_text(recorded_at: pl.Expr) -> pl.Expr:
    """A reset's time as its epoch's name (UTC, microseconds): the same text wherever it is
    made, so the pseudonym is the same."""
    return (recorded_at.dt.convert_time_zone("UTC")
            .dt.strftime("reset:%Y-%m-%dT%H:%M:%S%.6fZ"))
