"""The page shell and table shared by the run report and the audit index: static HTML, inline
CSS, no script, nothing fetched, every value escaped."""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """body{{font-family:system-ui,sans-serif;margin:2rem;max-width:{width}rem;color:#1a1a1a}}
table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}
td,th{{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}}
th{{background:#f2f2f2}} .ok{{color:#176b2c}} .bad{{color:#b00020;font-weight:600}}
.view{{color:#555;font-size:.9rem}}"""


def page(title: str, body: str, *, width: int = 60) -> str:
    """A whole page: `title` is escaped here, `body` is HTML already escaped by its sections."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(title)}</title>
<style>
{_CSS.format(width=width)}
</style></head><body>
{body}
</body></html>
"""


def html_table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    th = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
