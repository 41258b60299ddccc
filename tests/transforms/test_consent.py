from datetime import UTC, datetime

import polars as pl

from pipeline.transforms.consent import filter_by_consent


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
