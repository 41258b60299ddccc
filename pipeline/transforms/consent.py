"""Consent: keep an event only if its user's latest decision for the purpose, at or before the
event's time, was `granted`, and the user has not withdrawn since (their latest decision of all
is not `revoked`): a withdrawal takes effect from the next run, reruns and backfills included.
No record means no consent.
"""

from __future__ import annotations

import polars as pl

from pipeline.core.details import ConsentDetails
from pipeline.core.records import StageStats


def filter_by_consent(events: pl.DataFrame, consent: pl.DataFrame, *, purpose: str,
                      user_col: str = "account_id", time_col: str = "event_time"
                      ) -> tuple[pl.DataFrame, StageStats]:
    """As-of join of each event to its user's last consent decision for `purpose`."""
    decisions = (consent.filter(pl.col("purpose") == purpose)
                 .select(pl.col("account_id").alias(user_col),
                         pl.col("recorded_at").alias("_decided_at"),
                         pl.col("status").alias("_status"))
                 .sort(user_col, "_decided_at"))
    ordered = events.with_row_index("_order").sort(user_col, time_col)
    joined = ordered.join_asof(decisions, left_on=time_col, right_on="_decided_at",
                               by=user_col, strategy="backward", check_sortedness=False)
    status = pl.col("_status")
    gone = pl.col(user_col).is_in(withdrawn_users(decisions, user_col))
    kept = joined.filter((status == "granted") & ~gone).sort("_order")
    n_none = joined.filter(status.is_null()).height
    n_revoked = joined.filter(status == "revoked").height
    n_withdrawn = joined.filter((status == "granted") & gone).height
    dropped = {k: v for k, v in {"no_consent": n_none, "consent_revoked": n_revoked,
                                 "consent_withdrawn_since": n_withdrawn}.items() if v}
    stats = StageStats(stage="consent", rows_in=events.height, rows_out=kept.height,
                       dropped=dropped, details=ConsentDetails(
                           purpose=purpose,
                           users_kept=kept.select(pl.col(user_col).n_unique()).item()))
    return kept.drop("_order", "_decided_at", "_status"), stats.check_balanced()


def withdrawn_users(decisions: pl.DataFrame, user_col: str) -> pl.Series:
    """Users whose latest decision (`_decided_at`, `_status`) is a withdrawal."""
    latest = decisions.sort("_decided_at").group_by(user_col).agg(pl.col("_status").last())
    return latest.filter(pl.col("_status") == "revoked")[user_col]
