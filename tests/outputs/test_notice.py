"""The privacy notice is generated from the contracts, and each change to a purpose file gives a
new version with a diff against the one before, recorded in the audit bundle."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.outputs.audit import write_index
from pipeline.outputs.notice import notice_sections, notice_versions, record_notice, to_markdown
from tests.conftest import ROOT, TEST_KEY_TEXT, write_config


def test_when_the_notice_is_made_then_it_says_what_the_contracts_say() -> None:
    for name in ("pipeline", "analytics"):
        cfg = load_config(ROOT / "config" / f"{name}.yaml")
        text = to_markdown(cfg.purpose, notice_sections(cfg))
        spec = cfg.purpose_spec
        for field in cfg.event_schema.fields:  # everything collected
            assert f"| {field} |" in text
        for column in spec.columns:  # everything published, and nothing else
            assert f"| {column} |" in text
        r = cfg.retention
        for days in (r.raw_days, r.quarantine_days, r.staging_days, r.published_days):
            assert f"| {days} days |" in text
        assert f"at least {cfg.k_anonymity.k} people" in text
        assert spec.description.split()[0] in text
        for choice in ("See your data", "Pause", "Reset your profile", "Withdraw", "Erase"):
            assert choice in text
        if cfg.features.enabled:
            assert f"ε = {cfg.features.release_budget.value:g}" in text
            assert f"{cfg.budget.window_days} days" in text
        else:
            assert "differential privacy" not in text
        assert "Version" not in text  # the versioned text holds no date or number


def test_when_a_purpose_file_changes_then_a_new_version_with_its_diff_is_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    purposes = tmp_path / "purposes"
    shutil.copytree(ROOT / "schemas" / "purposes", purposes)
    config = write_config(tmp_path, paths__purposes_dir=str(purposes))
    reports = tmp_path / "reports"
    first = record_notice(reports, load_config(config), date(2026, 11, 1))
    again = record_notice(reports, load_config(config), date(2026, 11, 2))
    assert first.version == again.version == 1 and again.effective == "2026-11-01"

    path = purposes / "personalization.yaml"
    text = path.read_text()
    path.write_text(text.replace("device_type:      {values: [mobile, tablet, desktop, "
                                 "unknown]}", "device_type:      {values: [mobile, tablet, "
                                 "desktop, tv, unknown]}"))
    second = record_notice(reports, load_config(config), date(2026, 11, 3))
    assert second.version == 2 and second.effective == "2026-11-03"
    assert second.changed_sections == ["What teams may use"]
    assert second.sources["purpose file"] != first.sources["purpose file"]
    diff = (reports / "notices" / "v2" / "diff.md").read_text()
    assert "-| device_type |" in diff and "+| device_type |" in diff and "tv" in diff
    assert (reports / "notices" / "v1" / "notice.md").read_text().startswith(
        "# Privacy notice: personalization\n\nVersion 1, in force from 2026-11-01.")
    assert [v.version for v in notice_versions(reports)] == [1, 2]
    meta = json.loads((reports / "notices" / "v2" / "version.json").read_text())
    assert meta["sha256"] == second.sha256

    write_index(reports)  # the audit bundle lists every version and what changed
    index = (reports / "index.html").read_text()
    assert 'href="notices/v2/notice.html"' in index and 'href="notices/v2/diff.md"' in index
    assert "What teams may use" in index
    external = (reports / "external" / "index.html").read_text()
    assert 'href="../notices/v1/notice.html"' in external
