import re

import polars as pl
import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.transforms.pii.detect import PiiSpan
from pipeline.transforms.pii.scrub import TextScrubber, scrub_pii
from pipeline.transforms.pii.tokens import TOKEN_PATTERN, replace_spans, resolve_overlaps, token
from tests.conftest import ROOT

TOKEN_KEY = b"test-token-key-not-a-secret-0000"  # fixed, obviously fake


@pytest.fixture(scope="module")
def scrubber() -> TextScrubber:
    return TextScrubber(
        load_config(ROOT / "config" / "pipeline.yaml").pii, TOKEN_KEY)


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
    ("Please ship the replacement to 1687 Susan Coves Apt. 841, Phoenix.",
     "US_STREET_ADDRESS", "1687 Susan Coves"),
    ("Refund to IBAN GB82WEST12345698765432 please", "IBAN_CODE", "GB82WEST12345698765432"),
])
def test_when_pii_in_free_text_then_replaced_by_typed_token(
        scrubber: TextScrubber, text: str, entity: str, raw: str) -> None:
    [out], [found] = scrubber.scrub([text])
    assert raw not in out
    assert re.search(f"<{entity}:[a-z]{{12}}>", out)
    assert found[entity] >= 1


@pytest.mark.parametrize("number", [
    # Faker's US numbers: area codes no carrier was given, which `phonenumbers` rejects (the
    # attack probe found these in scrubbed text); to a reader they are someone's number
    "(349)592-9361", "397-318-5876", "294.869.5199x5133", "001-756-390-9353x4974",
    "(486)795-8969x35049",
])
def test_when_a_north_american_number_is_unassigned_then_it_is_still_replaced(
        scrubber: TextScrubber, number: str) -> None:
    [out], [found] = scrubber.scrub([f"My phone number changed, call me on {number} instead."])
    assert number not in out and found["PHONE_NUMBER"] == 1


def test_when_ten_bare_digits_have_no_phone_words_then_they_stay(scrubber: TextScrubber
                                                                ) -> None:
    texts = ["Order 5905075466 shipped on 2024-11-01, ref 123-45-6789, version 1.234.567",
             "call me on 5905075466 please"]
    out, found = scrubber.scrub(texts)
    assert out[0] == texts[0]
    assert "5905075466" not in out[1] and found[1]["PHONE_NUMBER"] == 1


def test_when_text_has_no_pii_then_unchanged(scrubber: TextScrubber) -> None:
    texts = ["noise cancelling headphones", "How do I change my notification settings?"]
    out, found = scrubber.scrub(texts)
    assert out == texts and not any(found)


def test_when_scrubbing_a_table_then_direct_identifiers_dropped_and_counts_weighted(
        scrubber: TextScrubber, cfg: PipelineConfig) -> None:
    same = "Please contact me at maria.lopez77@gmail.com"
    table = pl.DataFrame({"event_id": ["1", "2", "3"], "email": ["a@b.co", "c@d.co", None],
                          "name": ["A B", "C D", None], "text": [same, same, None]})
    result = scrub_pii(table, cfg.event_schema, scrubber, pseudonym_key=TOKEN_KEY)
    assert "email" not in result.table.columns and "name" not in result.table.columns
    email_token = token(TOKEN_KEY, "EMAIL_ADDRESS", "maria.lopez77@gmail.com")
    assert result.table["text"].to_list()[:2] == [f"Please contact me at {email_token}"] * 2
    assert result.stats.details.pii_found == {"EMAIL_ADDRESS": 2}


def test_when_same_value_in_two_texts_then_same_token_and_other_key_gives_other_token(
        scrubber: TextScrubber) -> None:
    out, _ = scrubber.scrub(["Mail Maria.Lopez77@Gmail.com today",
                             "write to maria.lopez77@gmail.com please"])
    tokens = [re.search(TOKEN_PATTERN, x).group() for x in out]  # type: ignore[union-attr]
    assert tokens[0] == tokens[1] == token(TOKEN_KEY, "EMAIL_ADDRESS", "maria.lopez77@gmail.com")
    assert token(b"another-key-also-fake-0000000000", "EMAIL_ADDRESS",
                 "maria.lopez77@gmail.com") != tokens[0]


def test_when_spans_overlap_then_higher_score_wins_and_text_around_is_kept() -> None:
    text = "card 4111 1111 1111 1111 ok"
    spans = [PiiSpan("PHONE_NUMBER", 10, 24, 0.4), PiiSpan("CREDIT_CARD", 5, 24, 1.0)]
    assert replace_spans(text, resolve_overlaps(spans), TOKEN_KEY) == (
        f"card {token(TOKEN_KEY, 'CREDIT_CARD', '4111111111111111')} ok")


def test_when_a_wrong_span_overlaps_a_real_one_then_their_union_is_replaced() -> None:
    """spaCy tags `+49` as PERSON with a higher score than the phone number it starts: the
    whole number still goes, typed as the more confident span, in any order of detection."""
    text = "whatsapp +49 (0)30 901820 pls"
    spans = [PiiSpan("PERSON", 9, 12, 0.85), PiiSpan("PHONE_NUMBER", 9, 25, 0.75),
             PiiSpan("LOCATION", 20, 29, 0.5)]
    merged = resolve_overlaps(spans)
    assert merged == resolve_overlaps(spans[::-1]) == [PiiSpan("PERSON", 9, 29, 0.85)]
    assert "901820" not in replace_spans(text, merged, TOKEN_KEY)


def test_tokens_are_letters_only_so_no_later_scan_mistakes_them_for_numbers() -> None:
    t = token(TOKEN_KEY, "PHONE_NUMBER", "+1 (415) 555-0132")
    assert re.fullmatch(TOKEN_PATTERN, t) and not re.search(r"\d", t.split(":")[1])
    assert t == token(TOKEN_KEY, "PHONE_NUMBER", "+14155550132")


@pytest.mark.parametrize("number", ["2223003122003222", "4841241182449353489", "587662702899",
                                    "5555 5555 5555 4444"])
def test_when_card_is_one_presidio_misses_then_found_by_luhn_and_issuer(
        scrubber: TextScrubber, number: str) -> None:
    [out], [found] = scrubber.scrub([f"charge it to {number} today"])
    assert found["CREDIT_CARD"] == 1 and number not in out


@pytest.mark.parametrize("number", ["2223003122003223",   # Luhn fails
                                    "9234567890123455"])  # Luhn ok, but no network starts with 9
def test_when_long_number_is_not_a_card_then_left_alone(
        scrubber: TextScrubber, number: str) -> None:
    [out], [found] = scrubber.scrub([f"order reference {number}"])
    assert "CREDIT_CARD" not in found


def test_when_a_text_recurs_in_a_later_shard_then_it_is_analysed_once_with_the_same_result(
        scrubber: TextScrubber) -> None:
    texts = ["Please contact me at ann.lee@example.org", "running shoes", "call 0161 496 0000"]
    first, found = scrubber.scrub(texts)
    before = scrubber.reused
    again, found_again = scrubber.scrub(["running shoes", *texts])
    assert scrubber.reused - before == 4  # every text was done already
    assert again == [first[1], *first] and found_again == [found[1], *found]


def test_when_texts_were_scrubbed_on_an_earlier_day_then_only_new_ones_are_analysed(
        scrubber: TextScrubber) -> None:
    """The cross-day cache (`pii.text_cache`): day 2's scrubber is given what day 1 analysed
    and runs only the new texts through the detector, with the same results; a scrubber under
    another token key (a new key epoch) finds nothing in it. The cache holds MACs, not texts."""
    from pipeline.transforms.pii.text_cache import EarlierTexts

    cfg = load_config(ROOT / "config" / "pipeline.yaml").pii
    day1 = ["Please contact me at ann.lee@example.org", "running shoes",
            "Hi, this is Jennifer Walsh. I can't log in."]
    with TextScrubber(cfg, TOKEN_KEY, earlier=EarlierTexts(TOKEN_KEY)) as first:
        out1, found1 = first.scrub(day1)
        kept = first.fresh.table()
    assert kept.height == 3 and not any(
        t.encode() in b for t in day1 for b in kept["mac"].to_list())
    day2 = ["call 0161 496 0000", *day1]
    with TextScrubber(cfg, TOKEN_KEY, earlier=EarlierTexts(TOKEN_KEY, [kept])) as second:
        out2, found2 = second.scrub(day2)
        assert (second.analysed, second.from_earlier) == (1, 3)
        assert second.fresh.table().height == 1  # only what it analysed is kept anew
    assert out2[1:] == out1 and found2[1:] == found1
    assert out2[0] == scrubber.scrub(["call 0161 496 0000"])[0][0]
    other = b"another-token-key-not-a-secret00"
    with TextScrubber(cfg, other, earlier=EarlierTexts(other, [kept])) as rotated:
        rotated.scrub(day1)
        assert (rotated.analysed, rotated.from_earlier) == (3, 0)
