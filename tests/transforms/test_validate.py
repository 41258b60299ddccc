import hashlib
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import PipelineConfig, PurposeSpec, load_config
from pipeline.config.files import read_yaml
from pipeline.transforms.pii.detect import FastAnalyzer
from pipeline.transforms.pii.scrub import fast_analyzer
from pipeline.transforms.validate.suite import validate_table
from tests.conftest import ROOT

# The suite over event rows with an ℓ-diverse sensitive attribute: a purpose without `profile:`
# (personalization's profiles are checked end to end in tests/integration and tests/attacks).
EVENT_ROWS = PurposeSpec.model_validate(read_yaml(
    ROOT / "examples" / "purposes" / "personalization_events.yaml"))
PLANTED_EMAIL = "planted.leak.7731@example.com"
PLANTED_ID = "RAW-ACCOUNT-99887766"
PLANTED_NAME = "Message from Deborah Cameron"  # no regex shape: only the detector sees it
PLANTED_CARD = "4929 1234 5678 9122"  # Luhn-valid Visa test-range number


@pytest.fixture(scope="module")
def detector() -> FastAnalyzer:
    with fast_analyzer(load_config(ROOT / "config" / "pipeline.yaml").pii) as analyzer:
        yield analyzer


def _table(n: int = 60) -> pl.DataFrame:
    return pl.DataFrame({
        "user_pseudonym": [hashlib.sha256(str(i % 12).encode()).hexdigest() for i in range(n)],
        "pseudonym_key_id": ["k1"] * n, "event_date": ["2026-11-01"] * n,
        "day_part": ["night"] * n, "event_type": ["view"] * n,
        "content_category": ["news", "food"] * (n // 2),
        "region": ["Texas"] * n, "h3_cell": ["852a1073fffffff"] * n,
        "age_band": ["25-34"] * n, "device_type": ["mobile"] * n})


@pytest.mark.slow
def test_when_table_is_minimized_then_suite_passes_and_k_and_l_are_observed(
        tmp_path: Path, cfg: PipelineConfig, detector: FastAnalyzer) -> None:
    outcome = validate_table(_table(), EVENT_ROWS, k=5, l=2, gx_root=tmp_path,
                             run_name="ok", detector=detector)
    assert outcome.success
    observed = {c.expectation: c.observed for c in outcome.checks}
    assert observed["expect_table_to_be_k_anonymous"] == 12
    assert observed["expect_table_to_be_l_diverse"] == 2
    assert outcome.data_docs_index is not None and Path(outcome.data_docs_index).is_file()


@pytest.mark.slow
def test_when_a_group_shows_one_sensitive_value_then_l_diversity_fails(
        tmp_path: Path, cfg: PipelineConfig, detector: FastAnalyzer) -> None:
    one_value = _table().with_columns(content_category=pl.lit("news"))
    outcome = validate_table(one_value, EVENT_ROWS, k=5, l=2, gx_root=tmp_path,
                             run_name="l", detector=detector)
    assert [(c.expectation, c.observed) for c in outcome.failures] == [
        ("expect_table_to_be_l_diverse", 1)]


@pytest.mark.slow
def test_when_pii_is_planted_then_suite_fails_and_no_gx_file_holds_it(
        tmp_path: Path, cfg: PipelineConfig, detector: FastAnalyzer) -> None:
    row, index = pl.int_range(pl.len()) == 5, pl.int_range(pl.len())
    bad = _table().with_columns(
        content_category=pl.when(row).then(pl.lit(PLANTED_EMAIL)).otherwise("content_category"),
        user_pseudonym=pl.when(row).then(pl.lit(PLANTED_ID)).otherwise("user_pseudonym"),
        event_type=pl.when(index < 3).then(pl.lit(PLANTED_NAME)).otherwise("event_type"),
        device_type=pl.when(index == 7).then(pl.lit(PLANTED_CARD)).otherwise("device_type"),
        extra_column=pl.lit("x"))
    outcome = validate_table(bad, EVENT_ROWS, k=5, gx_root=tmp_path, run_name="bad",
                             detector=detector)
    failed = {(c.expectation, c.column) for c in outcome.failures}
    assert not outcome.success
    assert ("expect_column_values_to_hold_no_pii_shape", "content_category") in failed
    found = {c.column: c.observed for c in outcome.failures
             if c.expectation == "expect_column_to_have_no_detected_pii"}
    assert found == {"content_category": {"rows_with_pii": 1, "entities": {"EMAIL_ADDRESS": 1}},
                     "event_type": {"rows_with_pii": 3, "entities": {"PERSON": 3}},
                     "device_type": {"rows_with_pii": 1, "entities": {"CREDIT_CARD": 1}}}
    assert ("expect_column_values_to_fully_match_pattern", "user_pseudonym") in failed
    assert ("expect_table_columns_to_match_set", None) in failed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for planted in (PLANTED_EMAIL, PLANTED_ID, "Deborah Cameron", PLANTED_CARD,
                            PLANTED_CARD.replace(" ", "")):
                assert planted.encode() not in data, path


def test_when_h3_cells_hold_long_digit_runs_then_no_identifier_shape_matches_them() -> None:
    """Large days failed validation: ~2% of H3 cells looked like phone numbers."""
    import random
    import re

    import h3

    from pipeline.transforms.validate.suite import RESIDUAL_PII_PATTERNS

    rng = random.Random(7)
    cells = {h3.latlng_to_cell(rng.uniform(-60, 70), rng.uniform(-180, 180), res)
             for res in range(4, 10) for _ in range(5000)}
    shapes = re.compile("|".join(RESIDUAL_PII_PATTERNS.values()))
    assert not [c for c in [*cells, "8828308281fffff"] if shapes.search(c)]
    assert all(shapes.search(t) for t in ["call 555-123-4567", "tel:5551234567;",
                                          "+1 (555) 123-4567"])


def test_when_patterns_run_vectorized_then_rows_counted_are_pythons_re() -> None:
    """The residual-PII and domain checks count with Polars' regex engine over distinct
    values; they must count what Python's `re` counts on every row (the phone shape with the
    lookarounds it had, too), and fall back to `re` for a pattern Rust's dialect lacks."""
    import re

    from pipeline.transforms.validate.expectations import matching_rows, pattern_counts
    from pipeline.transforms.validate.suite import RESIDUAL_PII_PATTERNS

    values = ["call 555-123-4567", "tel:5551234567;", "+1 (555) 123-4567", "a5551234567",
              "5551234567b", "8828308281fffff", "Ann@example.org", "ann at example dot org",
              "10.0.0.1", "10.0.0", "fe80:0:0:0:202:b3ff:fe1e:8329", "région Île-de-France",
              "٥٥٥-١٢٣-٤٥٦٧", "", "25-34", "Ohio", None, "call 555-123-4567"] * 3
    series = pl.Series("c", values)
    lookaround_phone = (r"(?<![0-9A-Za-z])(?:\+?\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}"
                        r"[\s.-]?\d{4}(?![0-9A-Za-z])")
    for name, pattern in {**RESIDUAL_PII_PATTERNS, "lookaround": lookaround_phone,
                          "backref": r"(\w)\1", "domain": r"^(?:\d{1,3}-\d{1,3}|unknown)$"
                          }.items():
        expected = sum(1 for v in values if v is not None and re.search(pattern, v))
        assert matching_rows(series, pattern) == expected, name
    shapes = pattern_counts(series, RESIDUAL_PII_PATTERNS)  # a row with two shapes counts once
    assert shapes["any"] == sum(1 for v in values if v is not None and any(
        re.search(p, v) for p in RESIDUAL_PII_PATTERNS.values()))
    assert shapes["non_null"] == sum(1 for v in values if v is not None)
    phone = re.compile(RESIDUAL_PII_PATTERNS["phone"])
    assert [bool(phone.search(v)) for v in values[:6]] == \
        [bool(re.search(lookaround_phone, v)) for v in values[:6]]


@pytest.mark.slow
def test_when_a_day_is_validated_in_shards_then_k_l_and_findings_are_those_of_the_whole(
        tmp_path: Path, cfg: PipelineConfig, detector: FastAnalyzer) -> None:
    """A group's users span shards: k and ℓ come from the merged groups, not per shard."""
    from pipeline.transforms.validate.suite import validate_shards

    table = _table().with_columns(event_type=pl.when(pl.int_range(pl.len()) >= 57)
                                  .then(pl.lit(PLANTED_NAME)).otherwise("event_type"))
    half = pl.col("user_pseudonym").str.slice(0, 1).is_in(list("012345678"))
    shards = [table.filter(half), table.filter(~half)]
    assert all(s.select(pl.col("user_pseudonym").n_unique()).item() < 12 for s in shards)
    whole = validate_table(table, EVENT_ROWS, k=5, l=2, gx_root=tmp_path / "w",
                           run_name="w", detector=detector)
    parts = validate_shards(shards, EVENT_ROWS, k=5, l=2, gx_root=tmp_path / "s",
                            run_name="s", detector=detector)

    def seen(record: object) -> dict:
        return {(c.expectation, c.column): (c.success, c.observed, c.unexpected_count)
                for c in record.checks}  # type: ignore[attr-defined]

    assert seen(parts) == seen(whole) and not parts.success
    assert seen(parts)[("expect_table_to_be_k_anonymous", None)] == (True, 12, None)
    assert seen(parts)[("expect_column_to_have_no_detected_pii", "event_type")][1] == {
        "rows_with_pii": 3, "entities": {"PERSON": 3}}
