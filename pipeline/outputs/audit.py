"""The audit bundle's index: every run on one page, with the privacy budget and the
privacy-health scorecard (`pipeline.outputs.scorecard`) over time.

Two copies, as sdcMicro keeps two reports: `reports/index.html` (internal, linking each run's
detailed report) and `reports/external/index.html` (linking the external reports, which hold no
key ids, paths or per-column detail, and coarsen small counts). Built from the runs' manifests
only, never from data. The budget plot is inline SVG: no script, nothing fetched.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from pipeline.core.fs import DataPath
from pipeline.core.records import Manifest
from pipeline.core.storage import atomic_write_bytes
from pipeline.outputs.access_matrix import matrix_versions, section
from pipeline.outputs.html import html_table, page
from pipeline.outputs.notice import NoticeVersion, notice_versions
from pipeline.outputs.scorecard import scorecard_section

if TYPE_CHECKING:
    from pipeline.access.policy import AccessPolicy

_W, _H, _PAD = 720, 260, 48


def load_manifests(reports: DataPath) -> list[Manifest]:
    return [Manifest.model_validate_json(p.read_text())
            for p in sorted(reports.glob("date=*/manifest.json"))]


def budget_plot(manifests: list[Manifest]) -> str:
    """Inline SVG: each release's cost (bars) and its window's spend (line) against the
    window's budget (dashed), per run date."""
    points = [(m.date, dp) for m in manifests
              if (dp := m.differential_privacy) is not None and dp.release_due]
    if not points:
        return "<p>No DP release yet.</p>"
    dp0 = points[-1][1]
    unit, budget = dp0.unit, dp0.window_budget
    top = max([budget, *(dp.window_spent for _, dp in points)]) * 1.1
    n = len(points)
    step = (_W - 2 * _PAD) / max(n, 1)

    def y(v: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * v / top

    parts = [f'<line x1="{_PAD}" y1="{y(budget):.1f}" x2="{_W - _PAD}" y2="{y(budget):.1f}" '
             f'stroke="#b00020" stroke-dasharray="6 4"/>',
             f'<text x="{_W - _PAD}" y="{y(budget) - 6:.1f}" text-anchor="end" fill="#b00020">'
             f'budget {unit} = {budget:g} per {dp0.window_days} days</text>',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" '
             'stroke="#333"/>',
             f'<text x="{_PAD - 6}" y="{_H - _PAD + 4}" text-anchor="end" font-size="11">0'
             '</text>',
             f'<text x="{_PAD - 6}" y="{y(budget) + 4:.1f}" text-anchor="end" font-size="11">'
             f'{budget:g}</text>']
    line = []
    for i, (day, dp) in enumerate(points):
        x = _PAD + step * (i + 0.5)
        width = min(step * 0.6, 28)
        parts.append(f'<rect x="{x - width / 2:.1f}" y="{y(dp.cost):.1f}" width="{width:.1f}" '
                     f'height="{_H - _PAD - y(dp.cost):.1f}" fill="#9ecae1">'
                     f'<title>{escape(day)}: {unit} {dp.cost:g} this release</title></rect>')
        parts.append(f'<circle cx="{x:.1f}" cy="{y(dp.window_spent):.1f}" r="3.5" '
                     f'fill="#08519c"><title>{escape(day)}: {unit} {dp.window_spent:g} spent '
                     'in the window</title></circle>')
        line.append(f"{x:.1f},{y(dp.window_spent):.1f}")
        if n <= 14 or i % max(n // 7, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{_H - _PAD + 16}" text-anchor="middle" '
                         f'font-size="11">{escape(day[5:])}</text>')
    parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#08519c" '
                 'stroke-width="2"/>')
    return (f'<svg role="img" aria-label="privacy budget spent over time" width="{_W}" '
            f'height="{_H}" viewBox="0 0 {_W} {_H}" font-family="system-ui,sans-serif">'
            f'<text x="{_PAD}" y="20">{unit} per release (bars) and spent in the window '
            f'(line)</text>{"".join(parts)}</svg>')


def _row(m: Manifest) -> tuple[object, ...]:
    ka, val, dp = m.k_anonymity, m.validation, m.differential_privacy
    n = m.run_totals()
    due = dp is not None and dp.release_due
    return (m.date, "yes" if m.published else "NO", m.funnel.rows_in, m.funnel.rows_out,
            n.quarantined, n.pii_replaced,
            "not run" if ka is None else "n/a (no rows)" if ka.k_achieved is None
            else f"{ka.k_achieved} / {ka.l_achieved if ka.l_required else '-'}",
            f"{val.passed if val else 0}/{len(val.checks) if val else 0}",
            f"{dp.unit} {dp.cost:g}" if dp and due else "-",
            f"{dp.window_spent} of {dp.window_budget}" if dp and due else "-",
            m.erasure.requests if m.erasure else 0)


def refused(m: Manifest) -> bool:
    """A request refused at `check_input` (a date not over yet, a day whose input never
    arrived): nothing ran, so it is not a run of the history, only a note under it."""
    o = m.outcomes.get("check_input")
    return o is not None and o.status == "failed"


def notices_section(versions: list[NoticeVersion], *, prefix: str = "") -> str:
    """Every version of the purpose's privacy notice, with what changed and its diff."""
    if not versions:
        return "<p>No privacy notice recorded yet.</p>"
    rows = [(f'<a href="{prefix}notices/v{v.version}/notice.html">version {v.version}</a>',
             escape(v.effective), escape(", ".join(v.changed_sections) or "first version"),
             f'<a href="{prefix}notices/v{v.version}/diff.md">diff</a>' if v.version > 1
             else "") for v in reversed(versions)]
    head = "".join(f"<th>{h}</th>" for h in ("Version", "In force from", "Sections changed",
                                             "Against the one before"))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _governance_links(prefix: str) -> str:
    links = []
    for name, title in (("records_of_processing", "Record of processing activities (GDPR Art. "
                                                  "30)"), ("dpia", "DPIA draft (Art. 35)")):
        links.append(f'<a href="{prefix}governance/{name}.html">{title}</a> '
                     f'(<a href="{prefix}governance/{name}.pdf">PDF</a>)')
    return ("<p>Generated by every run from the contracts, the config, the access matrix and "
            f"what the runs measured: {'; '.join(links)}.</p>")


def render_index(manifests: list[Manifest], *, external: bool,
                 notices: list[NoticeVersion] | None = None, access: str | None = None) -> str:
    refusals = [m.date for m in manifests if refused(m)]
    manifests = [m for m in manifests if not refused(m)]
    rows = [_row(m) for m in reversed(manifests)]
    links = " ".join(f'<a href="date={escape(m.date)}/report.html">{escape(m.date)}</a>'
                     for m in reversed(manifests))
    view = ("External view: aggregates only, counts under 10 coarsened, no key ids or paths."
            if external else 'Internal view. <a href="external/index.html">External view</a>.')
    blocked = [m.date for m in manifests if not m.published]
    head = (f"{len(manifests)} run(s); "
            + (f"publishing blocked on {', '.join(blocked)}." if blocked
               else "every run published."))
    body = f"""<h1>Privacy pipeline audit: {escape(manifests[-1].purpose) if manifests else ""}</h1>
<p>{escape(head)}</p><p class=view>{view}</p>
<h2>Privacy budget over time</h2>{budget_plot(manifests)}
<h2>Privacy health over time</h2>{scorecard_section(manifests)}
<h2>Runs</h2>
{html_table(rows, ("Date", "Published", "Rows in", "Rows published", "Quarantined",
                   "PII replaced", "k / ℓ", "Checks passed", "DP cost", "Window spent",
                   "Erasure requests"))}
<p>Run reports: {links}</p>
<h2>Privacy notice</h2>{notices_section(notices or [], prefix="../" if external else "")}
<h2>Access matrix</h2>{access or "<p>No access matrix configured.</p>"}
<h2>Records of processing and DPIA</h2>{_governance_links("../" if external else "")}
""" + (
        f"<p>Refused before running (not runs: nothing was read, deleted or charged): "
        f"{escape(', '.join(refusals))}; each date's report says why.</p>" if refusals else "")
    return page("Privacy pipeline audit: all runs", body, width=72)


def write_index(reports: DataPath, policy: AccessPolicy | None = None) -> DataPath:
    """Rewrite both indexes from the manifests under `reports` (and the access matrix in
    force, with its versions)."""
    manifests, notices = load_manifests(reports), notice_versions(reports)
    versions = matrix_versions(reports)
    atomic_write_bytes(reports / "index.html", render_index(
        manifests, external=False, notices=notices,
        access=section(policy, versions, external=False) if policy else None).encode())
    atomic_write_bytes(reports / "external" / "index.html",
                       render_index([m.external_view() for m in manifests],
                                    external=True, notices=notices,
                                    access=section(policy, versions, external=True,
                                                   prefix="../") if policy else None
                                    ).encode())
    return reports / "index.html"
