import hashlib
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import PipelineConfig
from pipeline.validate import validate_table

PLANTED_EMAIL = "planted.leak.7731@example.com"
PLANTED_ID = "RAW-ACCOUNT-99887766"


def _table(n: int = 60) -> pl.DataFrame:
    return pl.DataFrame({
        "user_pseudonym": [hashlib.sha256(str(i % 12).encode()).hexdigest() for i in range(n)],
        "pseudonym_key_id": ["k1"] * n, "event_date": ["2026-11-01"] * n, "event_hour": [3] * n,
        "event_type": ["view"] * n, "content_category": ["news", "food"] * (n // 2),
        "session_seconds": [30] * n, "region": ["Texas"] * n, "h3_cell": ["852a1073fffffff"] * n,
        "age_band": ["25-34"] * n, "device_type": ["mobile"] * n})


@pytest.mark.slow
def test_when_table_is_minimized_then_suite_passes_and_k_and_l_are_observed(
        tmp_path: Path, cfg: PipelineConfig) -> None:
    outcome = validate_table(_table(), cfg.purpose_spec, k=5, l=2, gx_root=tmp_path,
                             run_name="ok")
    assert outcome.success
    observed = {c.expectation: c.observed for c in outcome.checks}
    assert observed["expect_table_to_be_k_anonymous"] == 12
    assert observed["expect_table_to_be_l_diverse"] == 2
    assert outcome.data_docs_index is not None and outcome.data_docs_index.is_file()


@pytest.mark.slow
def test_when_a_group_shows_one_sensitive_value_then_l_diversity_fails(
        tmp_path: Path, cfg: PipelineConfig) -> None:
    one_value = _table().with_columns(content_category=pl.lit("news"))
    outcome = validate_table(one_value, cfg.purpose_spec, k=5, l=2, gx_root=tmp_path,
                             run_name="l")
    assert [(c.expectation, c.observed) for c in outcome.failures] == [
        ("expect_table_to_be_l_diverse", 1)]


@pytest.mark.slow
def test_when_pii_is_planted_then_suite_fails_and_no_gx_file_holds_it(
        tmp_path: Path, cfg: PipelineConfig) -> None:
    row = pl.int_range(pl.len()) == 5
    bad = _table().with_columns(
        content_category=pl.when(row).then(pl.lit(PLANTED_EMAIL)).otherwise("content_category"),
        user_pseudonym=pl.when(row).then(pl.lit(PLANTED_ID)).otherwise("user_pseudonym"),
        extra_column=pl.lit("x"))
    outcome = validate_table(bad, cfg.purpose_spec, k=5, gx_root=tmp_path, run_name="bad")
    failed = {(c.expectation, c.column) for c in outcome.failures}
    assert not outcome.success
    assert ("expect_column_values_to_not_match_regex_list", "content_category") in failed
    assert ("expect_column_values_to_match_regex", "user_pseudonym") in failed
    assert ("expect_table_columns_to_match_set", None) in failed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PLANTED_EMAIL.encode() not in data, path
            assert PLANTED_ID.encode() not in data, path
