"""Input guardrails: is this day's input what a normal day looks like, before anything is
charged to the privacy ledger or published?

Every stage can run cleanly on a day that lost its input upstream: a renamed field sends every
line to quarantine, an empty or truncated file parses to nothing, and the DP release of zero
users is pure noise that still costs ε. Row accounting balances on such a day (0 in = 0 out);
only a comparison with what is normal catches it. Four checks, each measured and recorded:

- `min_rows_in`: raw lines read (an empty, BOM-only or truncated file);
- `min_users_after_consent`: distinct users left after consent (a consent feed gone stale);
- `max_quarantine_share`: lines that did not fit the schema (a renamed or retyped field);
- `volume_vs_recent`: valid rows within a factor of the median of the last published days
  (half a day lost, or a day sent twice).

The first, second and fourth are about volume, and an operator may accept them for a day
known to be small; the third means a broken feed and is never accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from pipeline.config import GuardrailsConfig
from pipeline.core.records import GuardrailCheck, GuardrailRecord

LOW_VOLUME = ("min_rows_in", "min_users_after_consent", "volume_vs_recent")


@dataclass(frozen=True)
class DayInput:
    """What ingest and consent measured of one day."""

    rows_in: int
    rows_valid: int
    rows_quarantined: int
    users_after_consent: int


def check_guardrails(day: DayInput, cfg: GuardrailsConfig, *,
                     history: list[tuple[str, int]], accept_low_volume: bool = False
                     ) -> GuardrailRecord:
    """The day against `cfg`. `history`: (date, valid rows) of earlier days that passed the
    guardrails unaided and were published, most recent first."""
    share = day.rows_quarantined / day.rows_in if day.rows_in else 0.0
    checks = [
        GuardrailCheck(name="min_rows_in", measured=day.rows_in, limit=f">= {cfg.min_rows_in:,}",
                       passed=day.rows_in >= cfg.min_rows_in),
        GuardrailCheck(name="min_users_after_consent", measured=day.users_after_consent,
                       limit=f">= {cfg.min_users_after_consent:,}",
                       passed=day.users_after_consent >= cfg.min_users_after_consent),
        GuardrailCheck(name="max_quarantine_share", measured=share,
                       limit=f"<= {cfg.max_quarantine_share:.0%}",
                       passed=share <= cfg.max_quarantine_share,
                       note=f"{day.rows_quarantined:,} of {day.rows_in:,} lines quarantined"),
    ]
    baseline: list[tuple[str, int]] = []
    mid = None
    if (v := cfg.volume) is not None:
        baseline = history[:v.baseline_days]
        if len(baseline) >= v.min_history:
            mid = float(median(n for _, n in baseline))
            low, high = mid / v.factor, mid * v.factor
            checks.append(GuardrailCheck(
                name="volume_vs_recent", measured=day.rows_valid,
                limit=f"{low:,.0f}..{high:,.0f} (median {mid:,.0f} of {len(baseline)} "
                      f"published days, x/÷ {v.factor:g})",
                passed=low <= day.rows_valid <= high))
        else:
            checks.append(GuardrailCheck(
                name="volume_vs_recent", measured=None, limit=f"needs {v.min_history} "
                f"published days in the last {v.lookback_days}", passed=True,
                note=f"not applicable yet ({len(baseline)} published day(s) to compare with)"))
    if accept_low_volume:
        checks = [c.model_copy(update={"accepted": True})
                  if not c.passed and c.name in LOW_VOLUME else c for c in checks]
    return GuardrailRecord(
        rows_in=day.rows_in, rows_valid=day.rows_valid, rows_quarantined=day.rows_quarantined,
        users_after_consent=day.users_after_consent,
        baseline_dates=[d for d, _ in baseline] if mid is not None else [],
        baseline_median=mid, checks=checks, accept_low_volume=accept_low_volume,
        passed=all(c.passed or c.accepted for c in checks))
