"""One model for every document the pipeline writes for people (run reports, the audit index,
the records of processing, the DPIA), rendered two ways from the same parts: HTML through
Jinja2 templates (`pipeline/outputs/templates`, autoescaped: a value can never become markup)
and PDF through ReportLab, with the charts drawn from the same static SVG (svglib).

A section is a list of parts: a paragraph (a plain string), a `Table`, a `Chart` (pygal's
static SVG), a `Link`, a `Note` (a paragraph with a tone) or `Raw` (HTML a trusted builder
escaped already, shown in HTML only). Nothing is fetched and no script runs: the pages open
offline, from any folder they are copied to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from html import escape
from io import BytesIO
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup


@dataclass(frozen=True)
class Link:
    text: str
    href: str
    after: str = ""  # plain text after the link, in the same paragraph


@dataclass(frozen=True)
class Table:
    head: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def render(self) -> Markup:
        return Markup(html_table(list(self.rows), self.head))


@dataclass(frozen=True)
class Chart:
    title: str
    svg: str  # static SVG made by `pipeline.outputs.charts` (no script)

    def __post_init__(self) -> None:
        if "<script" in self.svg:
            raise ValueError(f"chart {self.title!r} holds a script")


@dataclass(frozen=True)
class Note:
    text: str
    tone: str = ""  # "ok", "bad" or "view"


@dataclass(frozen=True)
class Links:
    items: tuple[Link, ...]


@dataclass(frozen=True)
class Raw:
    """HTML its builder escaped already (an access matrix, notice rows with links)."""

    html: str
    text: str = ""  # what the PDF shows instead


Part = str | Table | Chart | Link | Note | Links | Raw


@dataclass(frozen=True)
class Section:
    title: str
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Document:
    title: str  # the page's <title> and the PDF's
    heading: str
    sections: tuple[Section, ...]
    intro: tuple[Part, ...] = ()
    width: int = field(default=60)  # the page's width in rem


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("pipeline.outputs", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    for name, kind in (("table", Table), ("chart", Chart), ("link", Link), ("note", Note),
                       ("links", Links), ("raw", Raw)):
        env.tests[name] = lambda v, kind=kind: isinstance(v, kind)
    env.globals["cell"] = _cell
    return env


def _cell(c: Any) -> Markup:
    if isinstance(c, Link):
        return Markup('<td><a href="{}">{}</a></td>').format(c.href, c.text)
    if isinstance(c, Raw):
        return Markup("<td>") + Markup(c.html) + Markup("</td>")
    if isinstance(c, bool):
        return Markup("<td>{}</td>").format("yes" if c else "no")
    if isinstance(c, int | float):
        return Markup('<td class="n">{}</td>').format(number(c))
    return Markup("<td>{}</td>").format(c)


def number(v: int | float) -> str:
    """A count with thousands separators; other numbers as `g` would show them."""
    return f"{v:,}" if isinstance(v, int) else f"{v:,.6g}" if abs(v) >= 1000 else f"{v:g}"


def html_table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    """A table: every cell escaped (a `Link` or `Raw` cell as HTML), numbers right-aligned
    with thousands separators. Plain `str`, for builders that join HTML fragments."""
    return str(_env().get_template("table.html.j2").render(head=head, rows=rows))


def page(title: str, body: str, *, width: int = 60) -> str:
    """A whole page around `body`, HTML its builder escaped already."""
    return _env().get_template("base.html.j2").render(title=title, width=width,
                                                      body=Markup(body))


def render_html(doc: Document) -> str:
    return _env().get_template("document.html.j2").render(doc=doc, title=doc.title,
                                                          width=doc.width)


def render_pdf(doc: Document) -> bytes:
    """The same document as an A4 PDF (ReportLab's platypus; charts through svglib)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        TableStyle,
    )
    from reportlab.platypus import Table as PdfTable

    styles = getSampleStyleSheet()
    cell = styles["BodyText"].clone("cell", fontSize=7.5, leading=9.5)
    width = A4[0] - 32 * mm
    out = BytesIO()
    pdf = SimpleDocTemplate(out, pagesize=A4, title=doc.title, author="privacy-pipeline",
                            leftMargin=16 * mm, rightMargin=16 * mm, topMargin=16 * mm,
                            bottomMargin=16 * mm, invariant=True)

    def para(text: str, style: Any = styles["BodyText"]) -> Any:
        return Paragraph(escape(text.translate(_PDF_CHARS)), style)

    def flow(p: Part) -> list[Any]:
        if isinstance(p, Table):
            if not p.rows and not p.head:
                return []
            n = max(len(p.head), 1)
            data = [[Paragraph(f"<b>{escape(str(h).translate(_PDF_CHARS))}</b>", cell)
                     for h in p.head]] + [
                [Paragraph(escape(_pdf_text(v).translate(_PDF_CHARS)), cell) for v in row]
                for row in p.rows]
            t = PdfTable(data, colWidths=[width / n] * n, repeatRows=1)
            t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                                   ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f2f2f2")),
                                   ("VALIGN", (0, 0), (-1, -1), "TOP")]))
            return [t, Spacer(1, 2 * mm)]
        if isinstance(p, Chart):
            return [KeepTogether([_drawing(p.svg, width)])]
        if isinstance(p, Link):
            return [para(f"{p.text} ({p.href})" + (f" {p.after}" if p.after else ""))]
        if isinstance(p, Note):
            return [para(p.text, styles["Italic"] if p.tone == "view" else styles["BodyText"])]
        if isinstance(p, Links):
            return []
        if isinstance(p, Raw):
            return [para(p.text)] if p.text else []
        return [para(p)]

    story: list[Any] = [para(doc.heading, styles["Title"])]
    for p in doc.intro:
        story += flow(p)
    for s in doc.sections:
        story.append(para(s.title, styles["Heading2"]))
        for p in s.parts:
            story += flow(p)
    pdf.build(story)
    return out.getvalue()


# what ReportLab's standard fonts cannot draw, spelled so they can
_PDF_CHARS = str.maketrans({"ℓ": "l", "≤": "<=", "≥": ">=", "−": "-"})


def _pdf_text(v: Any) -> str:
    if isinstance(v, Link):
        return v.text
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return number(v)
    return str(v)


def _drawing(svg: str, width: float) -> Any:
    """pygal's SVG as a ReportLab drawing, scaled to the text width."""
    from svglib.svglib import svg2rlg

    drawing = svg2rlg(BytesIO(svg.encode()))
    if drawing is None:
        raise ValueError("svglib could not read a chart")
    scale = min(width / drawing.width, 1.0)
    drawing.width, drawing.height = drawing.width * scale, drawing.height * scale
    drawing.scale(scale, scale)
    return drawing
