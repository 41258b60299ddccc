"""The audit bundle's index: every run on one page, with the privacy budget over time.

Two copies, as sdcMicro keeps two reports: `reports/index.html` (internal, linking each run's
detailed report) and `reports/external/index.html` (linking the external reports, which hold no
key ids, paths or per-column detail, and coarsen small counts). Built from the runs' manifests
only, never from data. The budget plot is inline SVG: no script, nothing fetched.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from pipeline.core.storage import atomic_write_bytes
from pipeline.outputs.report import external_view, html_table, release_cost, totals

_W, _H, _PAD = 720, 260, 48


def load_manifests(reports: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text())
            for p in sorted(reports.glob("date=*/manifest.json"))]


def budget_plot(manifests: list[dict[str, Any]]) -> str:
    """Inline SVG: each release's cost (bars) and its window's spend (line) against the
    window's budget (dashed), per run date."""
    points = [(m["date"], m["differential_privacy"]) for m in manifests
              if (m.get("differential_privacy") or {}).get("release_due")]
    if not points:
        return "<p>No DP release yet.</p>"
    dp0 = points[-1][1]
    unit = release_cost(dp0)[0]
    budget = float(dp0["window_budget"])
    top = max([budget, *(float(dp["window_spent"]) for _, dp in points)]) * 1.1
    n = len(points)
    step = (_W - 2 * _PAD) / max(n, 1)

    def y(v: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * v / top

    parts = [f'<line x1="{_PAD}" y1="{y(budget):.1f}" x2="{_W - _PAD}" y2="{y(budget):.1f}" '
             f'stroke="#b00020" stroke-dasharray="6 4"/>',
             f'<text x="{_W - _PAD}" y="{y(budget) - 6:.1f}" text-anchor="end" fill="#b00020">'
             f'budget {unit} = {budget:g} per {dp0["window_days"]} days</text>',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" '
             'stroke="#333"/>',
             f'<text x="{_PAD - 6}" y="{_H - _PAD + 4}" text-anchor="end" font-size="11">0'
             '</text>',
             f'<text x="{_PAD - 6}" y="{y(budget) + 4:.1f}" text-anchor="end" font-size="11">'
             f'{budget:g}</text>']
    line = []
    for i, (day, dp) in enumerate(points):
        cost = release_cost(dp)[1]
        x = _PAD + step * (i + 0.5)
        width = min(step * 0.6, 28)
        spent = float(dp["window_spent"])
        parts.append(f'<rect x="{x - width / 2:.1f}" y="{y(cost):.1f}" width="{width:.1f}" '
                     f'height="{_H - _PAD - y(cost):.1f}" fill="#9ecae1">'
                     f'<title>{escape(day)}: {unit} {cost:g} this release</title></rect>')
        parts.append(f'<circle cx="{x:.1f}" cy="{y(spent):.1f}" r="3.5" fill="#08519c">'
                     f'<title>{escape(day)}: {unit} {spent:g} spent in the window</title>'
                     '</circle>')
        line.append(f"{x:.1f},{y(spent):.1f}")
        if n <= 14 or i % max(n // 7, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{_H - _PAD + 16}" text-anchor="middle" '
                         f'font-size="11">{escape(day[5:])}</text>')
    parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#08519c" '
                 'stroke-width="2"/>')
    return (f'<svg role="img" aria-label="privacy budget spent over time" width="{_W}" '
            f'height="{_H}" viewBox="0 0 {_W} {_H}" font-family="system-ui,sans-serif">'
            f'<text x="{_PAD}" y="20">{unit} per release (bars) and spent in the window '
            f'(line)</text>{"".join(parts)}</svg>')


def _row(m: dict[str, Any]) -> tuple[Any, ...]:
    f, ka = m["funnel"], m.get("k_anonymity") or {}
    val, dp = m.get("validation") or {}, m.get("differential_privacy") or {}
    checks, n = val.get("checks", []), totals(m)
    cost = "{} {:g}".format(*release_cost(dp)) if dp.get("release_due") else "-"
    return (m["date"], "yes" if m["published"] else "NO", f["rows_in"], f["rows_out"],
            n["quarantined"], n["pii_replaced"],
            f"{ka.get('k_achieved')} / {ka.get('l_achieved')}",
            f"{sum(c['success'] for c in checks)}/{len(checks)}", cost,
            f"{dp.get('window_spent', '-')} of {dp.get('window_budget', '-')}"
            if dp.get("release_due") else "-",
            (m.get("erasure") or {}).get("requests", 0))


def render_index(manifests: list[dict[str, Any]], *, external: bool) -> str:
    rows = [_row(m) for m in reversed(manifests)]
    links = " ".join(f'<a href="date={escape(m["date"])}/report.html">{escape(m["date"])}</a>'
                     for m in reversed(manifests))
    view = ("External view: aggregates only, counts under 10 coarsened, no key ids or paths."
            if external else 'Internal view. <a href="external/index.html">External view</a>.')
    blocked = [m["date"] for m in manifests if not m["published"]]
    head = (f"{len(manifests)} run(s); "
            + (f"publishing blocked on {', '.join(blocked)}." if blocked
               else "every run published."))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Privacy pipeline audit: all runs</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#1a1a1a}}
table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}} th{{background:#f2f2f2}}
.view{{color:#555;font-size:.9rem}}
</style></head><body>
<h1>Privacy pipeline audit: {escape(manifests[-1]["purpose"]) if manifests else ""}</h1>
<p>{escape(head)}</p><p class=view>{view}</p>
<h2>Privacy budget over time</h2>{budget_plot(manifests)}
<h2>Runs</h2>
{html_table(rows, ("Date", "Published", "Rows in", "Rows published", "Quarantined",
               "PII replaced", "k / ℓ", "Checks passed", "DP cost", "Window spent",
               "Erasure requests"))}
<p>Run reports: {links}</p>
</body></html>
"""


def write_index(reports: Path) -> Path:
    """Rewrite both indexes from the manifests under `reports`."""
    manifests = load_manifests(reports)
    atomic_write_bytes(reports / "index.html", render_index(manifests, external=False).encode())
    atomic_write_bytes(reports / "external" / "index.html",
                       render_index([external_view(m) for m in manifests],
                                    external=True).encode())
    return reports / "index.html"
