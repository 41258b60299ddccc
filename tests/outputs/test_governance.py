"""The records of processing (Art. 30) and the DPIA draft, generated per purpose from the
contracts, the config and the access matrix, as HTML and PDF."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from pipeline.access.policy import load_policy
from pipeline.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.fs import data_path
from pipeline.outputs.governance import dpia, records_of_processing, to_html, write_governance
from tests.conftest import ROOT, write_config

POLICY = load_policy(ROOT / "config" / "access.production.yaml")
DAY = date(2026, 11, 2)


@pytest.mark.parametrize("purpose", ["personalization", "analytics"])
def test_when_a_purpose_is_documented_then_its_record_holds_what_article_30_asks(
        tmp_path: Path, purpose: str) -> None:
    cfg = load_config(write_config(tmp_path, purpose))
    record = records_of_processing(cfg, POLICY, [], DAY)
    titles = [s.title for s in record.sections]
    assert titles == ["Controller", "Purpose and legal basis", "Data subjects",
                      "Personal data collected (raw events) and what happens to each",
                      "What the purpose publishes", "Recipients", "Transfers to third countries",
                      "Time limits for erasure",
                      "Technical and organisational security measures (Art. 32)"]
    html = to_html(record)
    assert "Example Media Ltd" in html and "privacy@example.org" in html
    assert "consent, Art. 6(1)(a)" in html
    assert "User Contact Email (user.contact.email)" in html  # fideslang
    assert cfg.purpose_spec.description.split()[0] in html
    recipients = {r[0] for r in next(s for s in record.sections if s.title == "Recipients").rows}
    assert "ml_reader" in recipients and "the hosting provider" in recipients
    assert "recsys-team" not in html and "bi-team" not in html  # roles, never member names
    if purpose == "analytics":
        assert "Analytics for Content Performance" in html
    else:
        assert "Targeted Content Personalization" in html


def test_when_written_then_html_and_pdf_land_in_the_bundle_and_the_dpia_asks_for_signoff(
        tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, reports__pdf=True))
    out = write_governance(data_path(tmp_path / "reports"), cfg, POLICY, [], DAY)
    assert sorted(out) == ["dpia.html", "dpia.pdf", "records_of_processing.html",
                           "records_of_processing.pdf"]
    pdf = out["dpia.pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    again = write_governance(data_path(tmp_path / "again"), cfg, POLICY, [], DAY)
    assert again["dpia.pdf"].read_bytes() == pdf  # the same inputs, the same document
    draft = dpia(cfg, POLICY, [], DAY)
    signoff = next(s for s in draft.sections if s.title == "Sign-off")
    assert [r[0] for r in signoff.rows] == ["privacy officer", "security lead"]
    measured = next(s for s in draft.sections if s.title.startswith("Residual risk"))
    assert measured.text == "No run yet: nothing measured."


def test_when_a_raw_field_has_no_data_category_then_the_documents_refuse(
        tmp_path: Path) -> None:
    schema = yaml.safe_load((ROOT / "schemas" / "events.yaml").read_text())
    schema["fields"]["loyalty_tier"] = {"type": "string", "handling": "keep"}
    (tmp_path / "schemas" / "purposes").mkdir(parents=True)
    (tmp_path / "schemas" / "events.yaml").write_text(yaml.safe_dump(schema))
    for f in ("data_categories.yaml",):
        (tmp_path / "schemas" / f).write_text((ROOT / "schemas" / f).read_text())
    (tmp_path / "schemas" / "purposes" / "personalization.yaml").write_text(
        (ROOT / "schemas" / "purposes" / "personalization.yaml").read_text())
    cfg = load_config(write_config(tmp_path, paths__event_schema=str(
        tmp_path / "schemas" / "events.yaml"), paths__purposes_dir=str(
        tmp_path / "schemas" / "purposes")))
    with pytest.raises(ConfigError, match=r"no category for \['loyalty_tier'\]"):
        records_of_processing(cfg, POLICY, [], DAY)
