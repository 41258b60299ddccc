"""The audit bundle's index and external view, from manifests (no pipeline run needed)."""

import copy
import re

from pipeline.core.records import Manifest
from pipeline.outputs.audit import render_index
from pipeline.outputs.charts import budget_chart
from pipeline.outputs.report import render_html

MANIFEST = {
    "date": "2026-11-01", "purpose": "personalization", "published": True,
    "funnel": {"rows_in": 1000, "rows_out": 900, "dropped": {"no_consent": 95, "erased": 3},
               "quarantined": {"malformed_json": 2}, "balanced": True, "last_stage": "minimize"},
    "stages": {},
    "pii": {"found": {"EMAIL_ADDRESS": 40, "IBAN_CODE": 2},
            "found_by_column": {"text": {"EMAIL_ADDRESS": 40, "IBAN_CODE": 2}},
            "dropped_columns": ["email"], "column_scan": {"checked": ["notes"], "flagged": []},
            "token_key_id": "key-2026-11"},
    "pseudonymization": {"algorithm": "HMAC-SHA256", "key_id": "key-2026-11",
                         "purpose": "personalization"},
    "k_anonymity": {"k_required": 5, "k_achieved": 5, "l_required": 2, "l_achieved": 2,
                    "sensitive_attribute": "content_category", "quasi_identifiers": ["age_band"],
                    "generalize_order": ["age_band"], "rows_suppressed": 4,
                    "share_rows_suppressed": 0.004, "users_suppressed": 2,
                    "groups_suppressed": 1, "groups_kept": 9, "information_loss": {}},
    "validation": {"success": True, "data_docs_index": "/srv/gx/index.html",
                   "checks": [{"expectation": "expect_table_to_be_k_anonymous", "column": None,
                               "success": True, "observed": 5, "unexpected_count": None}]},
    "erasure": {"requests": 1, "withdrawn_users": 3, "removed": {"raw/events": 3},
                "partitions_rewritten": 2, "not_touched": {}},
    "retention": {"purged": [{"area": "raw/events", "date": "2026-09-01", "bytes": 1234,
                              "retention_days": 30}], "windows_days": {}},
    "differential_privacy": {
        "release_due": True, "accounting": "pure", "epsilon": 1.0, "rho": 0.5, "delta": 0.0,
        "period": "day", "covers": ["2026-11-01", "2026-11-01"], "unit": "ε", "cost": 1.0,
        "mechanism": "OpenDP", "date": "2026-11-01",
        "window_spent": 1.0, "window_budget": 31.0, "window_days": 30,
        "window_delta_spent": 0.0, "window_delta_budget": 0.0,
        "ledger": "/srv/ledger.sqlite"},
    "feature_store": {"feature_repo": "/srv/feature_repo"},
}


def test_when_viewed_externally_then_no_key_id_path_or_small_count_is_shown() -> None:
    manifest = Manifest.model_validate(MANIFEST)
    html = render_html(manifest.external_view(), None, external=True)
    for secret in ("key-2026-11", "/srv/", "notes"):
        assert secret not in html
    assert "&lt;10" in html  # 3 erased rows, 2 IBANs, 4 suppressed rows are coarsened
    assert not re.search(r"<td( class=\"n\")?>[1-9]</td>", html)
    assert "+ &lt;10 quarantined" in html  # the summary's totals are coarsened too
    index = render_index([manifest.external_view()], external=True)
    assert "<td>&lt;10</td>" in index  # 2 quarantined
    assert not re.search(r"<td( class=\"n\")?>2</td>", index)
    internal = render_html(manifest, "file:///srv/gx/index.html")
    assert "key-2026-11" in internal and "IBAN_CODE" in internal and "1,000 in" in internal


def test_when_runs_accumulate_then_index_plots_the_window_spend_against_the_budget() -> None:
    runs = []
    for day in range(1, 6):
        m = copy.deepcopy(MANIFEST)
        m["date"] = f"2026-11-0{day}"
        m["differential_privacy"]["window_spent"] = float(day)
        m["published"] = day != 3
        runs.append(Manifest.model_validate(m))
    chart = budget_chart(runs)
    assert chart is not None and "<script" not in chart.svg
    assert "budget: ε = 31 per 30 days" in chart.svg and "ε spent in the window" in chart.svg
    spent = chart.svg[chart.svg.index("ε spent in the window"):]
    assert all(f'<desc class="value">{v}</desc>' in chart.svg for v in range(1, 6)), spent[:200]
    page = render_index(runs, external=False)
    assert "publishing blocked on 2026-11-03" in page
    assert 'aria-label="Privacy budget: ε per release' in page
    table = page[page.index("<h2>Runs</h2>"):]
    assert table.index("2026-11-05") < table.index("2026-11-01")  # newest first
    assert "/srv/" not in render_index([m.external_view() for m in runs], external=True)


def test_when_a_report_is_rendered_then_it_has_charts_a_pdf_and_no_repr() -> None:
    from pipeline.outputs.document import render_pdf
    from pipeline.outputs.report import report_document

    m = copy.deepcopy(MANIFEST)
    m["validation"]["checks"].append({
        "expectation": "expect_column_to_have_no_detected_pii", "column": "region",
        "success": True, "observed": {"entities": {}, "rows_with_pii": 0},
        "unexpected_count": None})
    manifest = Manifest.model_validate(m)
    doc = report_document(manifest, "../../gx/index.html", history=(manifest,),
                          pdf="report.pdf")
    html = render_html(manifest, "../../gx/index.html", history=(manifest,), pdf="report.pdf")
    assert html.count('<figure class="chart"') >= 3  # funnel, PII over runs, budget
    assert "{'" not in html and "entities: none; rows with pii: 0" in html
    assert "(δ = 0 of 0)" not in html and "δ = 0 of" not in html
    assert 'href="../../gx/index.html"' in html and 'href="report.pdf"' in html
    assert "<script" not in html
    pdf = render_pdf(doc)
    pages = len(re.findall(rb"/Type /Page[^s]", pdf))
    assert pdf.startswith(b"%PDF") and pages >= 2, pages


def test_when_data_docs_are_made_offline_then_no_page_loads_from_the_network(tmp_path) -> None:  # noqa: ANN001
    from pipeline.outputs.data_docs import make_offline, remote_resources

    page = tmp_path / "validations" / "suite" / "run" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/'
        'bootstrap.min.css"/>\n<script src="https://code.jquery.com/jquery-3.7.1.min.js">'
        '</script>\n<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/'
        'popper.min.js" integrity="sha384-x" crossorigin="anonymous"></script>\n<script '
        'src="https://cdn.jsdelivr.net/npm/vega@5"></script>\n<img src="https://great-'
        'expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&dataContextId=x">'
        '\n<a href="https://greatexpectations.io">GX</a>')
    assert len(remote_resources(page.read_text())) == 5
    assert make_offline(tmp_path) == 0
    text = page.read_text()
    assert '<script src="../../../static/vendor/jquery.min.js">' in text
    assert "integrity" not in text and "vega" not in text and "dataContextId" not in text
    assert 'href="https://greatexpectations.io"' in text  # a link to follow, not a load
    assert (tmp_path / "static" / "vendor" / "fontawesome" / "webfonts" /
            "fa-solid-900.woff2").is_file()
    assert make_offline(tmp_path) == 0 and page.read_text() == text  # idempotent
