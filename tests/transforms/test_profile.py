"""Per-user profiles: what they hold, k over every column, epochs and their pseudonyms."""

from __future__ import annotations

import base64
from datetime import date

import polars as pl
import pytest
from pydantic import ValidationError

from pipeline.config import PurposeSpec, load_config
from pipeline.core.keys import parse_key
from pipeline.transforms.generalize.kanon import k_achieved
from pipeline.transforms.profile import (
    EVENTS,
    coarser_band,
    epoch_of,
    history_of,
    publish_profiles,
    user_profiles,
    with_epoch_pseudonym,
)
from tests.conftest import ROOT

SPEC = load_config(ROOT / "config" / "pipeline.yaml").purpose_spec
COARSER = [[18, 35, 55]]
KEY = parse_key("test-key-1:" + base64.b64encode(b"TEST-ONLY-not-a-secret-000000001").decode(),
                source="test")


def _events(rows: list[tuple[str, str, str, str, str | None]]) -> pl.DataFrame:
    """(user, region, age band, device type, category) per event."""
    return pl.DataFrame(rows, orient="row", schema=[
        "user_pseudonym", "region", "age_band", "device_type", "content_category"]
    ).with_columns(pseudonym_key_id=pl.lit("test-key-1"), event_date=pl.lit(date(2026, 11, 3)),
                   event_type=pl.lit("view"))


def test_when_a_user_has_events_then_the_profile_holds_usual_context_and_top_interests(
        ) -> None:
    assert SPEC.profile is not None
    events = _events([
        ("u1", "Texas", "25-34", "mobile", "news"), ("u1", "Texas", "25-34", "mobile", "news"),
        ("u1", "Ohio", "25-34", "desktop", "food"), ("u1", "Texas", "25-34", "mobile", "music"),
        ("u2", "Ohio", "45-54", "tablet", None)])
    out = user_profiles(events, SPEC.profile, "user_pseudonym")
    u1, u2 = out.to_dicts()
    assert (u1["region"], u1["device_type"], u1["age_band"]) == ("Texas", "mobile", "25-34")
    # news twice; food and music once each: the tie goes to the first name
    assert (u1["top_category"], u1["second_category"]) == ("news", "food")
    assert (u1["activity"], u1[EVENTS]) == ("3-9", 4)
    assert (u2["top_category"], u2["second_category"], u2["activity"]) == ("none", "none", "1-2")


def _profiles(n_same: int, n_odd: int) -> pl.DataFrame:
    """n_same users with one profile, n_odd users each alone in a finer one."""
    rows = [(f"a{i}", "Texas", "25-34", "mobile", "news", "food", "3-9") for i in range(n_same)]
    rows += [(f"b{i}", "Texas", "25-34", "mobile", "news", ["music", "travel", "sports"][i % 3],
              "10+") for i in range(n_odd)]
    return pl.DataFrame(rows, orient="row", schema=[
        "user_pseudonym", "region", "age_band", "device_type", "top_category",
        "second_category", "activity"]).with_columns(
        pseudonym_key_id=pl.lit("test-key-1"), event_date=pl.lit(date(2026, 11, 3)),
        **{EVENTS: pl.lit(5)})


def test_when_groups_are_short_of_k_then_they_give_up_columns_in_order_then_are_suppressed(
        ) -> None:
    table, details = publish_profiles(_profiles(5, 6), SPEC, k=5, coarser_age_edges=COARSER)
    assert k_achieved(table, SPEC.quasi_identifiers, "user_pseudonym") == 5
    odd = table.filter(pl.col("user_pseudonym").str.starts_with("b"))
    # two users per second interest: they give it up (the first column in `give_up`), and
    # as six they hold k with everything else kept
    assert odd.height == 6 and set(odd["second_category"]) == {"any"}
    assert set(odd["activity"]) == {"10+"} and set(odd["top_category"]) == {"news"}
    same = table.filter(pl.col("user_pseudonym").str.starts_with("a"))
    assert set(same["second_category"]) == {"food"}  # a group that holds k keeps its values
    assert details.users_suppressed == 0 and details.exact_share["top_category"] == 1.0
    assert details.exact_share["second_category"] == round(5 / 11, 4)

    table, _ = publish_profiles(_profiles(5, 4), SPEC, k=5, coarser_age_edges=COARSER)
    assert table.height == 5  # four alike are never enough, whatever they give up

    table, details = publish_profiles(_profiles(0, 3), SPEC, k=5, coarser_age_edges=COARSER)
    assert table.is_empty() and details.users_suppressed == 3


def test_when_the_epoch_is_a_week_then_earlier_rows_count_as_part_of_the_user(
        ) -> None:
    """Five users share today's profile, but two of them had another one yesterday under the
    same weekly pseudonym: their chains are not shared by five, so they give up today's
    values or go."""
    today = _profiles(5, 0)
    yesterday = today.drop(EVENTS).with_columns(
        pl.when(pl.col("user_pseudonym").is_in(["a0", "a1"])).then(pl.lit("music"))
        .otherwise(pl.col("top_category")).alias("top_category"))
    history = history_of([yesterday], SPEC)
    table, details = publish_profiles(today, SPEC, k=5, coarser_age_edges=COARSER,
                                      history=history)
    assert details.users_suppressed == 5  # 3 + 2 chains, all short of 5
    table, _ = publish_profiles(today, SPEC, k=5, coarser_age_edges=COARSER)
    assert table.height == 5  # without the history, all five would be published


@pytest.mark.parametrize(("band", "coarse"), [
    ("25-34", "18-34"), ("18-24", "18-34"), ("45-54", "35-54"), ("65+", "55+"),
    ("under-18", "under-18"), ("18-34", "18-34"), ("unknown", "unknown")])
def test_when_an_age_band_is_coarsened_then_the_wider_band_holds_all_of_it(
        band: str, coarse: str) -> None:
    assert coarser_band(band, [18, 35, 55]) == coarse
    assert coarser_band("30-39", [18, 35, 55]) == "unknown"  # straddles two wider bands


def test_when_days_fall_in_epochs_then_pseudonyms_change_with_the_epoch() -> None:
    assert epoch_of(date(2026, 11, 1), "week") == "2026-W44"  # a Sunday
    assert epoch_of(date(2026, 11, 2), "week") == "2026-W45"
    assert epoch_of(date(2026, 11, 2), "day") == "2026-11-02"
    assert epoch_of(date(2026, 11, 2), "stable") == "stable"
    base = pl.DataFrame({"p": ["s1", "s2"]})
    day1 = with_epoch_pseudonym(base, "p", KEY, "personalization", "2026-11-02")["p"]
    day2 = with_epoch_pseudonym(base, "p", KEY, "personalization", "2026-11-03")["p"]
    other = with_epoch_pseudonym(base, "p", KEY, "analytics", "2026-11-02")["p"]
    assert not set(day1) & set(day2) and not set(day1) & set(other)
    assert all(len(p) == 64 for p in day1)


def test_when_a_profile_purpose_leaves_a_column_out_of_its_quasi_identifiers_then_it_is_refused(
        ) -> None:
    doc = SPEC.model_dump()
    doc["quasi_identifiers"] = ["region", "age_band", "device_type"]
    with pytest.raises(ValidationError, match="all its published columns"):
        PurposeSpec.model_validate(doc)
    doc = SPEC.model_dump()
    doc["domains"]["activity"] = {"values": ["1-2", "3-9", "10+"]}
    with pytest.raises(ValidationError, match="holding `any`"):
        PurposeSpec.model_validate(doc)
