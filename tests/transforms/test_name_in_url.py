"""Names written into links: profile, booking and share URLs carry a person's name as a path
segment or a query value. Hand-written cases, as people paste links into support chats and
searches; the registry's proof that a recognizer is one class and one line of YAML."""

import pytest

from pipeline.config import PiiConfig, load_config
from pipeline.transforms.pii.scrub import TextScrubber
from tests.conftest import ROOT

NAMED = [  # (text, the name in it)
    ("https://example.com/u/karen-miller/orders", "karen-miller"),
    ("my profile is linkedin.com/in/john-smith-4a2b1c if that helps", "john-smith"),
    ("book me here: calendly.com/maria.garcia/30min", "maria.garcia"),
    ("shared the list with you: app.example.org/lists?owner=ahmed_hassan&view=all",
     "ahmed_hassan"),
    ("wrong account linked, it shows /accounts/priya.raman instead of mine", "priya.raman"),
    ("referral link https://shop.example.com/r/sarah-oconnor-2024", "sarah-oconnor"),
    ("the invite went to meet.example.com/j/david+chen", "david+chen"),
    ("https://example.com/team/lucia-fernandez-ruiz is the page with the error",
     "lucia-fernandez-ruiz"),
]
NOT_NAMED = [
    "https://example.com/p/rose-gold-ring?size=7",
    "see /blog/summer-sale-2024 for the codes",
    "https://example.com/tags/new-york/page/2",
    "example.com/collections/running-shoes?sort=price-asc",
    "the link /help/reset-password does not load",
    "/orders/8841-2291/track is stuck",
    "docs.example.com/en/latest/user-guide.html",
    "https://example.com/shop/jordan-retro-high",
]


@pytest.fixture(scope="module")
def scrubber():  # noqa: ANN201
    cfg: PiiConfig = load_config(ROOT / "config" / "pipeline.yaml").pii
    with TextScrubber(cfg, b"K" * 32) as s:
        yield s


@pytest.mark.parametrize(("text", "name"), NAMED)
def test_when_a_link_carries_a_name_then_it_is_replaced(scrubber, text: str,  # noqa: ANN001
                                                        name: str) -> None:
    [(scrubbed, spans)] = scrubber.scrub_with_spans([text])
    assert name not in scrubbed and any(s.entity_type == "PERSON" for s in spans), scrubbed


@pytest.mark.parametrize("text", NOT_NAMED)
def test_when_a_link_carries_no_name_then_it_is_left_alone(scrubber,  # noqa: ANN001
                                                           text: str) -> None:
    [(scrubbed, spans)] = scrubber.scrub_with_spans([text])
    assert scrubbed == text, spans
