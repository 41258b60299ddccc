"""The privacy-health scorecard: every run's privacy indicators over time, as charts and one
table, for the audit index. Built from the runs' manifests only (never from data), so the
external index draws it from the external manifests (small counts coarsened, shown as 0).

Charts are pygal's static SVG (no script kept, nothing fetched), inline in the page:
k and ℓ achieved, suppression and information loss, PII found per type, quarantine rate by
reason, consent and withdrawals, re-identification against 1/k, and the drift and disparity
results. The privacy budget has its own chart above it (`charts.budget_chart`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pygal

from pipeline.core.records import Manifest
from pipeline.outputs.charts import count as _n
from pipeline.outputs.charts import line as _line
from pipeline.outputs.charts import stacked as _stacked
from pipeline.outputs.charts import svg as _svg
from pipeline.outputs.document import Chart, Part, Table


def _series(ms: Sequence[Manifest], f: Callable[[Manifest], float | None]) -> list[float | None]:
    return [f(m) for m in ms]


def charts(ms: Sequence[Manifest]) -> list[Chart]:
    """Each chart over the runs `ms` (oldest first)."""
    dates = [m.date for m in ms]
    if not ms:
        return []
    k_req = next((m.k_anonymity.k_required for m in reversed(ms)
                  if m.k_anonymity and m.k_anonymity.k_required), None)
    out = [("k_l", _line("k and ℓ achieved (the smallest group; dashed: k required)", dates, {
        "k achieved": _series(ms, lambda m: m.k_anonymity.k_achieved if m.k_anonymity else None),
        "ℓ achieved": _series(ms, lambda m: m.k_anonymity.l_achieved if m.k_anonymity else None),
        "k required": [k_req] * len(ms)}, y_title="distinct users / values"))]
    out.append(("suppression", _line(
        "Suppression and information loss", dates, {
            "rows suppressed (k-anonymity)": _series(
                ms, lambda m: m.k_anonymity.share_rows_suppressed if m.k_anonymity else None),
            "generalization (0 finest, 1 coarsest)": _series(ms, _generalization),
            "profiles: users suppressed": _series(ms, _profile_suppression)},
        percent=True)))
    out.append(("pii", _stacked("PII found in free text, per type", dates,
                                [{k: _n(v) for k, v in (m.pii.found or {}).items()} for m in ms],
                                percent=False)))
    out.append(("quarantine", _stacked("Quarantine rate by reason (share of lines read)", dates,
                                       [_quarantine_rates(m) for m in ms], percent=True)))
    out.append(("consent", _line("Consent and withdrawals", dates, {
        "users kept after consent": _series(ms, lambda m: m.guardrails.users_after_consent
                                            if m.guardrails else None),
        "events of withdrawn consent": _series(ms, lambda m: sum(_n(m.funnel.dropped.get(r))
                                               for r in ("consent_revoked",
                                                         "consent_withdrawn_since"))),
        "events without consent": _series(ms, lambda m: _n(m.funnel.dropped.get("no_consent"))),
        "erasure requests": _series(ms, lambda m: m.erasure.requests if m.erasure else None),
        "users withdrawn (published rows removed)": _series(
            ms, lambda m: m.erasure.withdrawn_users if m.erasure else None)})))
    out.append(("reidentification", _line(
        "Re-identification: share of people singled out by the insider join attack", dates, {
            "worst attack": _series(ms, lambda m: m.reidentification.rate
                                    if m.reidentification else None),
            "limit (1/k)": _series(ms, lambda m: m.reidentification.limit
                                   if m.reidentification else None)}, percent=True)))
    out.append(("drift", _line("Drift: significant tests in the DP release, published columns "
                               "drifted, alerts", dates, {
        "DP release tests": _series(ms, lambda m: m.monitoring.features.significant
                                    if m.monitoring and m.monitoring.features else None),
        "published columns": _series(ms, lambda m: sum(c.drifted for c in m.monitoring.columns)
                                     if m.monitoring else None),
        "soft guardrail alerts": _series(ms, lambda m: len(m.monitoring.alerts)
                                         if m.monitoring else None)}, kind=pygal.Bar)))
    out.append(("disparity", _line("What privacy costs the worst group (ratio to overall; 1 = "
                                   "no disparity)", dates, {
        "DP values unreliable": _series(ms, lambda m: _disp(m, "worst_unreliable_ratio")),
        "DP median relative error": _series(ms, lambda m: _disp(m, "worst_error_ratio")),
        "k-anonymity suppression": _series(ms, lambda m: m.k_anonymity.worst_suppression_ratio
                                           if m.k_anonymity else None)})))
    return [_svg(chart, name) for name, chart in out]


def _generalization(m: Manifest) -> float | None:
    ka = m.k_anonymity
    if ka is None or not ka.group_costs:
        return None
    return ka.group_costs[0].generalization


def _profile_suppression(m: Manifest) -> float | None:
    pr = m.profiles
    if pr is None:
        return None
    total = pr.users_published + pr.users_suppressed
    return pr.users_suppressed / total if total else None


def _quarantine_rates(m: Manifest) -> dict[str, float]:
    rows = m.funnel.rows_in
    return {k: _n(v) / rows for k, v in m.funnel.quarantined.items()} if rows else {}


def _disp(m: Manifest, field: str) -> float | None:
    d = m.monitoring.disparity if m.monitoring else None
    return getattr(d, field) if d is not None else None


def table(ms: Sequence[Manifest]) -> Table:
    """One row per run, newest first: the indicators the charts draw, as numbers."""
    rows = []
    for m in reversed(ms):
        ka, r, mon = m.k_anonymity, m.reidentification, m.monitoring
        rows.append((
            m.date,
            "-" if ka is None or ka.k_achieved is None else
            f"{ka.k_achieved} / {ka.l_achieved if ka.l_required else '-'}",
            "-" if ka is None or ka.share_rows_suppressed is None
            else f"{ka.share_rows_suppressed:.1%}",
            "-" if r is None else ("n/a" if not r.applicable else
                                   f"{r.rate:.1%} of ≤ {r.limit:.0%}"
                                   + ("" if r.passed else " BREACHED")),
            "-" if mon is None or mon.features is None else str(mon.features.significant),
            "-" if mon is None or mon.disparity is None or mon.disparity.worst_error_ratio is None
            else f"{mon.disparity.worst_error_ratio:.2f}× ({mon.disparity.worst_error_group})",
            "-" if ka is None or ka.worst_suppression_ratio is None
            else f"{ka.worst_suppression_ratio:.2f}× ({ka.worst_suppression_group})",
            "-" if mon is None else "; ".join(f"{a.guardrail}: {a.subject}"
                                              for a in mon.alerts) or "none"))
    return Table(("Date", "k / ℓ", "Suppressed", "Re-identified (limit 1/k)", "Drift tests",
                  "Worst group error", "Worst group suppression", "Alerts"), tuple(rows))


def scorecard_section(ms: Sequence[Manifest]) -> tuple[Part, ...]:
    """The audit index's section: charts, then the table."""
    if not ms:
        return ("No run yet.",)
    return ("Each run's privacy indicators over time. Hard guardrails (validation, "
            "re-identification above 1/k, the budget window) block publishing; soft ones "
            "(drift, disparity, spikes of PII or quarantine) alert the notifiers.",
            *charts(ms), table(ms))
