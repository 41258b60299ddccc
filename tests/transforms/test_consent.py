from datetime import UTC, datetime

import polars as pl

from pipeline.core.details import ConsentDetails
from pipeline.transforms.consent import filter_by_consent, pseudonym_epochs, users_whose_latest


def _ts(hour: int) -> datetime:
    return datetime(2026, 11, 1, hour, tzinfo=UTC)


def test_when_consent_is_checked_then_decision_at_event_time_wins() -> None:
    events = pl.DataFrame({
        "event_id": ["a1", "a2", "b1", "c1", "d1", "e1", "e2"],
        "account_id": ["a", "a", "b", "c", "d", "e", "e"],
        "event_time": [_ts(9), _ts(15), _ts(9), _ts(9), _ts(9), _ts(9), _ts(15)],
    })
    consent = pl.DataFrame({
        "account_id": ["a", "a", "a", "b", "c", "e", "e"],
        "purpose": ["personalization"] * 4 + ["analytics"] + ["personalization"] * 2,
        "status": ["granted", "revoked", "granted", "granted", "granted", "granted", "revoked"],
        "recorded_at": [_ts(8), _ts(12), _ts(20), _ts(10), _ts(1), _ts(8), _ts(23)],
    })
    kept, stats = filter_by_consent(events, consent, purpose="personalization")
    # a: granted at 8, revoked at 12, granted again at 20 -> event at 9 kept, at 15 dropped
    # b: granted only after the event; c: consented to another purpose; d: no record
    # e: granted when both events happened, but has withdrawn since: none of e's events is used
    assert kept["event_id"].to_list() == ["a1"]
    assert stats.dropped == {"no_consent": 3, "consent_revoked": 1,
                             "consent_withdrawn_since": 2}


def test_when_a_user_pauses_then_none_of_their_events_is_used_until_granted_again() -> None:
    events = pl.DataFrame({
        "event_id": ["p1", "p2", "q1", "q2", "q3"],
        "account_id": ["p", "p", "q", "q", "q"],
        "event_time": [_ts(9), _ts(15), _ts(9), _ts(15), _ts(22)],
    })
    consent = pl.DataFrame({
        "account_id": ["p", "p", "q", "q", "q"],
        "purpose": ["personalization"] * 5,
        "status": ["granted", "paused", "granted", "paused", "granted"],
        "recorded_at": [_ts(8), _ts(12), _ts(8), _ts(12), _ts(20)],
    })
    kept, stats = filter_by_consent(events, consent, purpose="personalization")
    # p paused at 12 and has not resumed: the event before the pause goes too (from the next
    # run, reruns included). q resumed at 20: what was recorded while paused is never used.
    assert kept["event_id"].to_list() == ["q1", "q3"]
    assert stats.dropped == {"consent_paused_since": 1, "consent_paused": 2}
    details = stats.details_of(ConsentDetails)
    assert details.users_paused == 1 and details.users_kept == 1


def test_when_a_user_resets_then_only_events_after_the_reset_are_used_under_a_new_epoch(
        ) -> None:
    events = pl.DataFrame({
        "event_id": ["r1", "r2", "s1"],
        "account_id": ["r", "r", "s"],
        "event_time": [_ts(9), _ts(15), _ts(9)],
    })
    consent = pl.DataFrame({
        "account_id": ["r", "r", "s"],
        "purpose": ["personalization"] * 3,
        "status": ["granted", "reset", "granted"],
        "recorded_at": [_ts(8), _ts(12), _ts(8)],
    })
    kept, stats = filter_by_consent(events, consent, purpose="personalization")
    assert kept["event_id"].to_list() == ["r2", "s1"]
    assert stats.dropped == {"before_reset": 1}
    epochs = pseudonym_epochs(consent, "personalization")
    assert epochs.rows() == [("r", "reset:2026-11-01T12:00:00.000000Z")]
    assert users_whose_latest(consent, "personalization", ("paused",)) == []
