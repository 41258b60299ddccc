"""Great Expectations Data Docs a reviewer can open offline, from any folder the reports are
copied to: every script, style and font the pages load from CDNs is copied into the site
(`static/datadocs/`, shipped with the package) and the pages point at it by relative path; the
remotely hosted logo (it carries the data context's id) becomes the site's own copy.

Applied after every Data Docs build; idempotent (a page already pointed at the copies is left
as it is).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

VENDOR = Path(__file__).resolve().parent / "static" / "datadocs"
SITE_DIR = "static/vendor"

# CDN resource (matched by what the URL ends with) -> the shipped copy
_ASSETS = {
    r"jquery-3\.7\.1\.min\.js": "jquery.min.js",
    r"popper\.min\.js": "popper.min.js",
    r"bootstrap/4\.3\.1/css/bootstrap\.min\.css": "bootstrap.min.css",
    r"bootstrap/4\.3\.1/js/bootstrap\.min\.js": "bootstrap.min.js",
    r"bootstrap-table\.min\.css": "bootstrap-table.min.css",
    r"bootstrap-table\.min\.js": "bootstrap-table.min.js",
    r"bootstrap-table-filter-control(\.min)?\.css": "bootstrap-table-filter-control.min.css",
    r"bootstrap-table-filter-control\.min\.js": "bootstrap-table-filter-control.min.js",
    r"bootstrap-datepicker\.min\.css": "bootstrap-datepicker.min.css",
    r"bootstrap-datepicker\.min\.js": "bootstrap-datepicker.min.js",
    r"font-awesome/6\.6\.0/css/all\.min\.css": "fontawesome/css/all.min.css",
}
_URL = re.compile(r'(?P<attr>href|src)="(?P<url>https://[^"]+)"')
_DROPPED = re.compile(
    r'<script[^>]+src="https://cdn\.jsdelivr\.net/npm/vega[^"]*"[^>]*>\s*</script>\s*'
    r'|<link[^>]+href="https://cdn\.jsdelivr\.net/npm/@forevolve/[^"]*"[^>]*>\s*')
_LOGO = re.compile(r'https://great-expectations-web-assets\.s3[^"\'\s]*/'
                   r'(logo-long|full_logo_dark)\.png[^"\'\s)]*')
# a file:// page cannot pass a CORS check: a local copy loads without one
_CORS = re.compile(r'\s+(integrity="[^"]*"|crossorigin="[^"]*")')


def make_offline(site: Path) -> int:
    """Point every page of the Data Docs site at `site` at the shipped copies; returns how
    many CDN references are left (0: the site loads nothing from the network)."""
    if not site.is_dir():
        return 0
    shutil.copytree(VENDOR, site / SITE_DIR, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.md"))
    left = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = _offline(text, os.path.relpath(site, page.parent))
        if fixed != text:
            tmp = page.with_suffix(".html.tmp")
            tmp.write_text(fixed, encoding="utf-8")
            os.replace(tmp, page)
        left += len(remote_resources(fixed))
    return left


def _offline(text: str, to_root: str) -> str:
    text = _DROPPED.sub("", text)
    text = _LOGO.sub(f"{to_root}/static/images/logo-long.png", text)

    def local(m: re.Match[str]) -> str:
        for pattern, name in _ASSETS.items():
            if re.search(pattern + r"$", m["url"]):
                return f'{m["attr"]}="{to_root}/{SITE_DIR}/{name}"'
        return m.group(0)

    text = _URL.sub(local, text)
    return re.sub(r'<(script|link)\b[^>]*static/vendor/[^>]*>',
                  lambda m: _CORS.sub("", m.group(0)), text)


def remote_resources(text: str) -> list[str]:
    """What a page would load from the network: scripts, stylesheets and images with an
    absolute http(s) URL (links a reader may follow are not loads)."""
    loads = re.findall(r'<script[^>]+src="(https?://[^"]+)"', text)
    loads += re.findall(r'<link[^>]+href="(https?://[^"]+)"', text)
    loads += re.findall(r'<img[^>]+src="(https?://[^"]+)"', text)
    return loads


SHARDS_DIR = "shards"  # a sharded day's Great Expectations projects, one per shard


def write_shard_docs_index(gx_root: Path, records: list[Any], day: object) -> Path:
    """A sharded day's Data Docs: each shard's suite ran where the shard was, in a project
    of its own; this page links every shard's site (relatively, so the bundle moves whole)
    with its outcome, and is what the report links to."""
    from pipeline.outputs.document import Link, html_table, page

    rows = []
    for i, record in enumerate(records):
        site = Path(record.data_docs_index) if record.data_docs_index else None
        link = Link(f"shard {i}", os.path.relpath(site, gx_root)) if site else f"shard {i}"
        failed = sum(1 for c in record.checks if not c.success)
        rows.append((link, "passed" if record.success else f"{failed} check(s) failed",
                     len(record.checks)))
    body = (f"<p>The day's pending table was validated in {len(records)} shards, each shard's "
            "suite where the shard was processed. k-anonymity and ℓ-diversity are checked on "
            "the merge of all shards (see the run report).</p>"
            + html_table(rows, ("Great Expectations site", "outcome", "checks")))
    out = gx_root / "data_docs.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(f"Data Docs, {day}, by shard", body))
    return out
