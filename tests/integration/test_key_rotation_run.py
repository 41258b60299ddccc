"""A run under one key, a rotation, `rekey`, and a planted key searched for everywhere."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.keys import parse_key
from pipeline.demo.generate import generate
from pipeline.run import rekey, run_all, run_stage
from pipeline.stages import STAGING
from tests.conftest import TEST_KEY_TEXT, files_holding, key_material, write_config
from tests.core.test_key_rotation import NEW_KEY_TEXT

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


def _published(data: Path) -> pl.DataFrame:
    return pl.read_parquet(data / "published" / "personalization" / f"date={DAY}" /
                           "part.parquet")


def test_when_key_rotated_then_rekey_moves_the_date_onto_the_new_key_and_old_can_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    generate(data, start=date.fromisoformat(DAY), users=300, seed=5)
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    _, published = run_all(DAY, write_config(tmp_path))
    before = _published(data)
    assert published and set(before["pseudonym_key_id"]) == {"test-key-1"}

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", f"{NEW_KEY_TEXT}\n{TEST_KEY_TEXT}")
    config = write_config(tmp_path, keys__rotation={"readable_days": 30,
                                                     "retired": {"test-key-1": "2026-11-02"}})
    info = rekey(DAY, config)
    assert info.reencrypted == {z.path.format(purpose="personalization"): "test-key-1"
                               for z in STAGING}
    after = _published(data)
    assert set(after["pseudonym_key_id"]) == {"test-key-2"} and after.height == before.height
    assert not set(after["user_pseudonym"]) & set(before["user_pseudonym"])
    assert after["user_pseudonym"].n_unique() == before["user_pseudonym"].n_unique()

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", NEW_KEY_TEXT)  # retired key removed
    assert run_stage("validate", DAY, write_config(tmp_path))


def test_when_a_day_validated_before_the_guardrails_existed_is_rekeyed_then_it_validates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.errors import GuardrailError

    data = tmp_path / "data"
    generate(data, start=date.fromisoformat(DAY), users=300, seed=5)
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    assert run_all(DAY, write_config(tmp_path))[1]
    runs = data / "runs" / "personalization" / f"date={DAY}"
    for path in (runs / "guardrails.json", runs / "outcomes" / "guardrails.json"):
        path.unlink()  # as a version without the stage left the day
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", f"{NEW_KEY_TEXT}\n{TEST_KEY_TEXT}")
    config = write_config(tmp_path, keys__rotation={"readable_days": 30,
                                                     "retired": {"test-key-1": "2026-11-02"}})
    assert rekey(DAY, config).stages_rerun
    (runs / "validation.json").unlink()  # never validated, never guarded: refused
    with pytest.raises(GuardrailError):
        run_stage("validate", DAY, config)


def test_when_a_key_is_planted_then_no_output_log_or_report_holds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    generate(data, start=date.fromisoformat(DAY), users=300, seed=6)
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", NEW_KEY_TEXT)
    log_file = tmp_path / "run.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        run_all(DAY, write_config(tmp_path))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out = capsys.readouterr()
    (tmp_path / "console.txt").write_text(out.out + out.err)
    forms = key_material(parse_key(NEW_KEY_TEXT, source="test"))
    assert files_holding([data, log_file, tmp_path / "console.txt"], forms) == []
    assert log_file.stat().st_size > 0  # the search did read a real log
