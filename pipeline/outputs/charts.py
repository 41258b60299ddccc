"""Charts for the reports, drawn with pygal as static SVG: no script kept, nothing fetched, no
random id or date inside, so a rerun writes the same page. Built from manifests only (never
from data): the external view's charts come from its coarsened counts.

- `run_charts(m, history)`: one run's funnel, PII per type over the runs so far, k-anonymity
  generalization levels per quasi-identifier, each DP feature's error, and the budget.
- `budget_chart(history)`: each release's cost and its window's spend against the budget.
- `line`, `stacked`, `svg`, `count`: the plumbing the scorecard shares.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pygal
from pygal.style import Style

from pipeline.core.records import Count, Manifest
from pipeline.outputs.document import Chart

STYLE = Style(background="white", plot_background="white", font_family="system-ui,sans-serif",
              colors=("#08519c", "#b00020", "#31a354", "#ff7f00", "#6a51a3", "#636363",
                      "#e7298a", "#1b9e77", "#a6761d", "#66a61e"),
              title_font_size=15, legend_font_size=11, label_font_size=10)


def count(c: Count | None) -> int:
    """A count, or 0 where the external view coarsened it ("<10")."""
    return c if isinstance(c, int) else 0


def svg(chart: pygal.graph.graph.Graph, name: str) -> Chart:
    """The chart as static SVG, stable from run to run."""
    text = chart.render(is_unicode=True)
    text = re.sub(r"<script.*?</script>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"chart-[0-9a-f-]{36}", f"chart-{name}", text)
    return Chart(title=str(chart.config.title or name), svg=text)


def _options(title: str, n_series: int, long_names: bool) -> dict:
    return dict(js=[], disable_xml_declaration=True, width=760, height=320,
                explicit_size=True, style=STYLE, title=title, legend_at_bottom=True,
                legend_at_bottom_columns=2 if n_series > 3 or long_names else max(n_series, 1),
                print_values=False, truncate_legend=-1, truncate_label=-1)


def line(title: str, dates: list[str], series: dict[str, list[float | None]], *,
         y_title: str = "", percent: bool = False, kind: type = pygal.Line,
         **options: object) -> pygal.graph.graph.Graph:
    """One value per run date and series; a series named `limit…` or `k required…` or
    `budget…` is drawn dashed, without dots."""
    many = len(dates) > 14
    chart = kind(**_options(title, len(series), any(len(n) > 28 for n in series)),
                 y_title=y_title, x_label_rotation=30, show_minor_x_labels=not many,
                 allow_interruptions=True,
                 value_formatter=(lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:,.4g}"),
                 **options)
    chart.x_labels = dates
    if many:
        chart.x_labels_major_every = max(len(dates) // 7, 1)
    for name, values in series.items():
        limit = name.startswith(("limit", "k required", "budget"))
        chart.add(name, values, **({"stroke_style": {"dasharray": "6, 4", "width": 2},
                                    "show_dots": False} if limit else {}))
    return chart


def stacked(title: str, dates: list[str], per_run: list[dict[str, float]], *,
            percent: bool) -> pygal.graph.graph.Graph:
    keys = sorted({k for d in per_run for k in d})
    return line(title, dates, {k: [d.get(k, 0) for d in per_run] for k in keys},
                percent=percent, kind=pygal.StackedBar)


def _bars(title: str, labels: list[str], series: dict[str, list[float | None]], *,
          horizontal: bool = False, value_format: str = ",", **options: object
          ) -> pygal.graph.graph.Graph:
    kind = pygal.HorizontalBar if horizontal else pygal.Bar
    chart = kind(**_options(title, len(series), False),
                 value_formatter=lambda v: format(v, value_format), **options)
    chart.x_labels = labels
    for name, values in series.items():
        chart.add(name, values)
    return chart


def funnel_chart(m: Manifest) -> Chart:
    """Where the day's rows went: in, each quarantine and drop reason, out."""
    f = m.funnel
    steps = [("rows in", count(f.rows_in))]
    steps += [(f"quarantined: {r}", count(n)) for r, n in sorted(f.quarantined.items())]
    steps += [(f"dropped: {r}", count(n)) for r, n in sorted(f.dropped.items())]
    steps.append(("published", count(f.rows_out)))
    steps.reverse()  # pygal draws a horizontal bar chart's first label at the bottom
    chart = _bars("Row funnel: where every raw line went", [s for s, _ in steps],
                  {"rows": [n for _, n in steps]}, horizontal=True, value_format=",.0f")
    chart.config.height = 120 + 26 * len(steps)
    chart.config.show_legend = False
    return svg(chart, "funnel")


def pii_chart(history: Sequence[Manifest]) -> Chart:
    """Personal data replaced in free text, per entity type, over the runs so far."""
    return svg(stacked("PII replaced in free text, per type, over runs",
                       [m.date for m in history],
                       [{k: count(v) for k, v in (m.pii.found or {}).items()} for m in history],
                       percent=False), "pii_over_runs")


def k_levels_chart(m: Manifest) -> Chart | None:
    """Rows per generalization level of each quasi-identifier (0 = as fine as configured)."""
    ka = m.k_anonymity
    loss = (ka.information_loss or {}) if ka else {}
    if not loss:
        return None
    qis = sorted(loss)
    levels = sorted({lv for info in loss.values() for lv in info.rows_per_level},
                    key=lambda lv: (len(str(lv)), str(lv)))
    chart = pygal.StackedBar(**_options("k-anonymity: rows per generalization level of each "
                                        "quasi-identifier", len(levels), False),
                             value_formatter=lambda v: f"{v:,.0f}")
    chart.x_labels = qis
    for lv in levels:
        chart.add(f"level {lv}", [count(loss[q].rows_per_level.get(lv)) for q in qis])
    return svg(chart, "k_levels")


def feature_error_chart(m: Manifest) -> Chart | None:
    """Each DP feature's expected 95% error (the plan) next to the release's median bound."""
    errors = sorted(m.feature_errors or [], key=lambda e: e.label)
    if not errors:
        return None
    chart = _bars("DP error per feature: 95% error bound, planned and released (log scale)",
                  [e.label for e in errors], {
                      "expected (plan)": [e.expected_error95 or None for e in errors],
                      "median of the release": [e.median_error95 or None for e in errors]},
                  horizontal=True, value_format=".3g", logarithmic=True)
    chart.config.height = 140 + 34 * len(errors)
    return svg(chart, "feature_errors")


def budget_chart(history: Sequence[Manifest]) -> Chart | None:
    """Per release date: its cost, the window's spend, and the window's budget (dashed)."""
    points = [(m.date, dp) for m in history
              if (dp := m.differential_privacy) is not None and dp.release_due]
    if not points:
        return None
    last = points[-1][1]
    return svg(line(f"Privacy budget: {last.unit} per release and spent in the "
                    f"{last.window_days}-day window", [d for d, _ in points], {
                        f"{last.unit} this release": [dp.cost for _, dp in points],
                        f"{last.unit} spent in the window": [dp.window_spent
                                                             for _, dp in points],
                        f"budget: {last.unit} = {last.window_budget:g} per "
                        f"{last.window_days} days": [dp.window_budget for _, dp in points]},
                    y_title=last.unit, include_x_axis=True), "budget")


def run_charts(m: Manifest, history: Sequence[Manifest]) -> dict[str, Chart]:
    """The run report's charts, by the section they illustrate; `history`: the runs up to
    and including this one, oldest first."""
    out: dict[str, Chart | None] = {
        "funnel": funnel_chart(m), "pii": pii_chart(history) if history else None,
        "k_levels": k_levels_chart(m), "feature_errors": feature_error_chart(m),
        "budget": budget_chart(history)}
    return {k: v for k, v in out.items() if v is not None}
