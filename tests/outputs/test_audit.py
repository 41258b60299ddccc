"""The audit bundle's index and external view, from manifests (no pipeline run needed)."""

import copy
import re

from pipeline.core.records import Manifest
from pipeline.outputs.audit import budget_plot, render_index
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
    assert not re.search(r"<td>[1-9]</td>", html)
    assert "+ &lt;10 quarantined" in html  # the summary's totals are coarsened too
    index = render_index([manifest.external_view()], external=True)
    assert "<td>&lt;10</td>" in index and "<td>2</td>" not in index  # 2 quarantined
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
    svg = budget_plot(runs)
    assert svg.count("<rect") == 5 and svg.count("<circle") == 5
    assert "budget ε = 31 per 30 days" in svg and "ε 5 spent in the window" in svg
    page = render_index(runs, external=False)
    assert "publishing blocked on 2026-11-03" in page
    table = page[page.index("<h2>Runs</h2>"):]
    assert table.index("2026-11-05") < table.index("2026-11-01")  # newest first
    assert "/srv/" not in render_index([m.external_view() for m in runs], external=True)
