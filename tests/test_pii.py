import polars as pl
import pytest

from pipeline.config import PipelineConfig
from pipeline.pii import TextScrubber, scrub_pii


@pytest.fixture(scope="module")
def scrubber() -> TextScrubber:
    from pathlib import Path

    from pipeline.config import load_config

    return TextScrubber(load_config(Path(__file__).parents[1] / "config" / "pipeline.yaml").pii)


@pytest.mark.parametrize(("text", "entity", "raw"), [
    ("Please contact me at maria.lopez77@gmail.com about my order", "EMAIL_ADDRESS",
     "maria.lopez77@gmail.com"),
    ("Call me on (415) 555-0132 tomorrow", "PHONE_NUMBER", "555-0132"),
    ("I was charged twice on card 4111111111111111, please refund", "CREDIT_CARD",
     "4111111111111111"),
    ("Login from 203.0.113.77 was not me", "IP_ADDRESS", "203.0.113.77"),
    ("Hi, this is Jennifer Walsh. I can't log in.", "PERSON", "Jennifer Walsh"),
    ("Please ship the replacement to 4759 William Haven Apt. 194, Boston.",
     "US_STREET_ADDRESS", "4759 William Haven"),
    ("Refund to IBAN GB82WEST12345698765432 please", "IBAN_CODE", "GB82WEST12345698765432"),
])
def test_when_pii_in_free_text_then_replaced_by_typed_token(
        scrubber: TextScrubber, text: str, entity: str, raw: str) -> None:
    [out], [found] = scrubber.scrub([text])
    assert raw not in out
    assert f"<{entity}>" in out
    assert found[entity] >= 1


def test_when_text_has_no_pii_then_unchanged(scrubber: TextScrubber) -> None:
    texts = ["noise cancelling headphones", "How do I change my notification settings?"]
    out, found = scrubber.scrub(texts)
    assert out == texts and not any(found)


def test_when_scrubbing_a_table_then_direct_identifiers_dropped_and_counts_weighted(
        scrubber: TextScrubber, cfg: PipelineConfig) -> None:
    same = "Please contact me at maria.lopez77@gmail.com"
    table = pl.DataFrame({"event_id": ["1", "2", "3"], "email": ["a@b.co", "c@d.co", None],
                          "name": ["A B", "C D", None], "text": [same, same, None]})
    result = scrub_pii(table, cfg.event_schema, scrubber)
    assert "email" not in result.table.columns and "name" not in result.table.columns
    assert result.table["text"].to_list()[:2] == ["Please contact me at <EMAIL_ADDRESS>"] * 2
    assert result.stats.details["pii_found"] == {"EMAIL_ADDRESS": 2}
