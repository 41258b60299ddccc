import json

import polars as pl
import pytest

from pipeline.config import PipelineConfig
from pipeline.core.errors import PiiPolicyError
from pipeline.transforms.pii.columns import PII_NAME_PATTERN, columns_to_check
from pipeline.transforms.pii.scrub import TextScrubber, scrub_pii
from pipeline.transforms.pseudonymize import hmac_expr

KEY = b"test-column-key-not-a-secret-000"  # fixed, obviously fake
N = 40


def _events(**extra: list[str | None]) -> pl.DataFrame:
    base = {"event_id": [f"e{i}" for i in range(N)], "os": ["iOS"] * N,
            "content_category": ["news", "sports"] * (N // 2), "text": ["winter coat"] * N}
    return pl.DataFrame({**base, **extra})


def _scrubber(cfg: PipelineConfig, policy: str) -> TextScrubber:
    pii = cfg.pii.model_copy(update={"undeclared_columns": policy})
    return TextScrubber(pii, KEY)


@pytest.fixture(scope="module")
def emails() -> list[str | None]:
    return [f"user{i}@example.org" if i % 4 else None for i in range(N)]


def test_only_untagged_string_columns_without_a_value_list_are_checked(
        cfg: PipelineConfig) -> None:
    table = _events(referrer=["x"] * N)
    assert columns_to_check(table, cfg.event_schema) == ["event_id", "content_category",
                                                         "referrer"]


@pytest.mark.parametrize("name", ["email", "contact_email", "Phone", "first_name", "username",
                                  "ip", "client_ip_address", "zip", "date_of_birth"])
def test_when_column_name_announces_pii_then_it_matches(name: str) -> None:
    assert PII_NAME_PATTERN.search(name.lower())


@pytest.mark.parametrize("name", ["event_id", "content_category", "hotel", "tipping", "os",
                                  "session_seconds", "skip_reason"])
def test_when_column_name_is_ordinary_then_it_does_not_match(name: str) -> None:
    assert not PII_NAME_PATTERN.search(name)


def test_when_undeclared_column_holds_emails_then_dropped_and_reported_without_values(
        cfg: PipelineConfig, emails: list[str | None]) -> None:
    table = _events(notes=emails)  # a name that says nothing: found by content
    result = scrub_pii(table, cfg.event_schema, _scrubber(cfg, "drop"), pseudonym_key=KEY)
    assert "notes" not in result.table.columns and result.table.height == N
    [finding] = result.stats.details.column_scan.flagged
    assert finding.column == "notes" and finding.reasons == ["content"]
    assert finding.entities == {"EMAIL_ADDRESS": 30} and finding.action == "drop"
    assert finding.share_with_pii == 1.0
    assert "example.org" not in json.dumps(result.stats.model_dump())


def test_when_policy_is_pseudonymize_then_column_holds_keyed_hmac(
        cfg: PipelineConfig, emails: list[str | None]) -> None:
    table = _events(notes=emails)
    result = scrub_pii(table, cfg.event_schema, _scrubber(cfg, "pseudonymize"),
                       pseudonym_key=KEY)
    expected = table.select(hmac_expr("notes", KEY))["notes"]
    assert result.table["notes"].to_list() == expected.to_list()
    assert result.table["notes"].null_count() == N // 4


def test_when_policy_is_fail_then_run_stops_naming_the_column_not_the_values(
        cfg: PipelineConfig, emails: list[str | None]) -> None:
    with pytest.raises(PiiPolicyError, match="notes") as info:
        scrub_pii(_events(notes=emails), cfg.event_schema, _scrubber(cfg, "fail"),
                  pseudonym_key=KEY)
    assert "example.org" not in str(info.value)


def test_when_column_name_says_pii_then_flagged_even_if_values_look_harmless(
        cfg: PipelineConfig) -> None:
    result = scrub_pii(_events(phone_hash=["a1b2"] * N), cfg.event_schema,
                       _scrubber(cfg, "drop"), pseudonym_key=KEY)
    [finding] = result.stats.details.column_scan.flagged
    assert finding.column == "phone_hash" and finding.reasons == ["name"]


def test_when_columns_hold_ordinary_values_then_nothing_is_flagged(cfg: PipelineConfig) -> None:
    result = scrub_pii(_events(), cfg.event_schema, _scrubber(cfg, "fail"), pseudonym_key=KEY)
    assert result.stats.details.column_scan.flagged == []
