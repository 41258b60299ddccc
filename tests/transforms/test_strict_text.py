"""Strict text mode: a published text column keeps only words k distinct users wrote."""

from __future__ import annotations

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.transforms.minimize import apply_allowlist
from pipeline.transforms.pii.strict import RARE, strict_text

TEXTS = ["where is my order", "my order is late, call <PERSON:abcdefghijkl>",
         "order late again", "is my order here?", "call Zanele Dlamini about my order", None]
USERS = ["a", "b", "c", "d", "e", "a"]


def test_when_words_are_rare_then_they_become_rare_tokens_and_detector_tokens_lose_their_value(
        ) -> None:
    table = pl.DataFrame({"u": USERS, "text": TEXTS})
    out, stats = strict_text(table, "text", "u", 3)
    assert out["text"].to_list() == [
        f"{RARE} is my order", f"my order is {RARE} , {RARE} <PERSON>",
        f"order {RARE} {RARE}", f"is my order {RARE} ?",
        f"{RARE} {RARE} {RARE} {RARE} my order", None]
    assert not out["text"].str.contains("Dlamini|abcdefghijkl").any()
    assert stats.model_dump() == {"words": 22, "kept": 12, "kept_share": 0.5455}


def test_when_a_purpose_publishes_text_strictly_then_minimize_applies_it_and_reports_the_share(
        ) -> None:
    spec = PurposeSpec(purpose="support_topics", description="x", consent_purpose="x",
                       columns=("user_pseudonym", "text"), pseudonym_columns=("user_pseudonym",),
                       quasi_identifiers=(), domains={"text": {"strict_text": True}})
    table = pl.DataFrame({"user_pseudonym": USERS, "text": TEXTS, "other": [1] * 6})
    out, stats = apply_allowlist(table, spec, k=3)
    assert out.columns == ["user_pseudonym", "text"]
    assert not out["text"].str.contains("Dlamini").any()
    assert stats.details.strict_text["text"].kept_share == 0.5455  # type: ignore[attr-defined]
