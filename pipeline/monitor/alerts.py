"""Soft guardrails: what the monitor found that someone should look at, without blocking the
run. Each alert carries the measured value and its threshold and names only features, cohort
labels of the public release, PII types and quarantine reasons: never a value from the data.

- `drift`: the DP release or a published column moved beyond its noise (`pipeline.monitor.drift`);
- `disparity`: the worst group's share of unreliable DP values, or its median relative error,
  above `max_disparity_ratio` times the whole release's;
- `k_suppression`: the worst group's share of rows suppressed by k-anonymity above
  `max_k_suppression_ratio` times the overall share;
- `pii_spike`, `quarantine_spike`: a PII type found, or a quarantine reason's share of the
  day's lines, above `spike_factor` times its median over recent runs (a new upstream field
  carrying e-mail addresses, a producer sending malformed lines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Literal

from pipeline.config.settings import AlertsConfig
from pipeline.core.details import KGroupCost
from pipeline.monitor.model import Alert, ColumnDrift, Disparity, FeatureDrift


def drift_alerts(features: FeatureDrift | None, columns: Sequence[ColumnDrift], *,
                 max_js: float) -> list[Alert]:
    """The release's strongest drift finding (with how many there were), and each published
    column that drifted."""
    out = []
    if features is not None and features.findings:
        top = features.findings[0]
        out.append(Alert(guardrail="drift", subject=f"{top.value} ({top.where})",
                         measured=round(abs(top.z), 2),
                         threshold=f"significant at α = {features.alpha:g} "
                                   "(Benjamini-Hochberg over every test)",
                         note=f"{features.significant} significant test(s) against the release "
                              f"of {features.previous_date}; the strongest shown (calibrated |z|)"))
    out.extend(Alert(guardrail="drift", subject=f"published column {c.column}",
                     measured=round(c.jensen_shannon, 4), threshold=f"Jensen-Shannon <= {max_js:g}",
                     note=f"population stability index {c.psi:.3f}")
               for c in columns if c.drifted)
    return out


def disparity_alerts(disparity: Disparity | None, cfg: AlertsConfig) -> list[Alert]:
    limit = cfg.max_disparity_ratio
    if disparity is None or limit is None:
        return []
    out = []
    for what, ratio, group in (
            ("unreliable DP values", disparity.worst_unreliable_ratio,
             disparity.worst_unreliable_group),
            ("median relative error", disparity.worst_error_ratio, disparity.worst_error_group)):
        if ratio is not None and ratio > limit:
            out.append(Alert(guardrail="disparity", subject=f"{group}: {what}",
                             measured=ratio, threshold=f"<= {limit:g} x the whole release",
                             note="the worst group against the whole release"))
    return out


def suppression_alert(costs: Sequence[KGroupCost], cfg: AlertsConfig) -> list[Alert]:
    """The group of at least `min_group_rows` rows that lost the largest share of its rows to
    k-anonymity, against the overall share (`costs[0]`). Smaller groups are reported, not
    alerted on: a group of a few users cannot be published k-anonymous at all."""
    limit = cfg.max_k_suppression_ratio
    if limit is None or len(costs) < 2 or not costs[0].suppressed_share:
        return []
    overall = costs[0].suppressed_share
    large = [c for c in costs[1:] if isinstance(c.rows, int) and c.rows >= cfg.min_group_rows]
    worst = max(large, key=lambda c: c.suppressed_share, default=None)
    if worst is None or worst.suppressed_share / overall <= limit:
        return []
    return [Alert(guardrail="k_suppression",
                  subject=f"{worst.dimension}={worst.group}: rows suppressed",
                  measured=round(worst.suppressed_share / overall, 3),
                  threshold=f"<= {limit:g} x the overall share",
                  note=f"{worst.suppressed_share:.0%} of its {worst.rows:,} rows against "
                       f"{overall:.0%} overall; groups under {cfg.min_group_rows} rows are not "
                       "alerted on")]


def spike_alerts(guardrail: Literal["pii_spike", "quarantine_spike"],
                 today: Mapping[str, float], history: Sequence[Mapping[str, float]],
                 counts: Mapping[str, int], cfg: AlertsConfig, *, unit: str) -> list[Alert]:
    """Each key whose value today exceeds `spike_factor` x its median over `history` (absent
    counts as 0, so a key new in the recent runs is a spike), if it was found at least
    `spike_min_count` times today."""
    factor = cfg.spike_factor
    if factor is None or not history:
        return []
    out = []
    for key, value in sorted(today.items()):
        if counts.get(key, 0) < cfg.spike_min_count:
            continue
        base = median(h.get(key, 0.0) for h in history)
        if value > factor * base:
            out.append(Alert(guardrail=guardrail, subject=key,
                             measured=round(value, 6),
                             threshold=f"<= {factor:g} x median {base:.6g} {unit} over "
                                       f"{len(history)} run(s)",
                             note=f"{counts[key]:,} this run"))
    return out
