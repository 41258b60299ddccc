"""Re-identification at the user level: the insider join attack of `bench.linkage`.

The attacker holds the raw events with their account ids and the published table, computes
every account's exact profile as the pipeline does, and matches each published row against
them (a generalized value fits what it generalizes); or knows m of a target's events and looks
for the pseudonyms they fit. k-anonymity promises at most 1/k of users singled out. The event
rows published before profiles gave 70% (all events), 50% (m = 1) and 76-77% (m = 2, 5) on the
same kind of day; the check at the end shows the attack finds most users when profiles are left
exact, so a low rate is the defence's doing, not a blunt attack.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from bench.linkage import profile_attack, raw_events, republish
from pipeline.core.keys import parse_key
from pipeline.run import run_all
from pipeline.transforms.pseudonymize import hmac_expr
from tests.conftest import TEST_KEY_TEXT, generated_day

START = date(2026, 11, 3)  # a Tuesday: both days in one ISO week
MS = [1, 2, 5]


def _days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, days: int):
    config, data = generated_day(tmp_path, monkeypatch, users=900, seed=3, days=days,
                                 start=START.isoformat())
    generalized, published = {}, {}
    for i in range(days):
        day = START + timedelta(days=i)
        ctx, ok = run_all(day, config)
        assert ok, f"{day} did not publish"
        generalized[day] = ctx.storage.read(ctx.zone("generalized"), day)
        published[day] = ctx.storage.read(ctx.zone("published"), day)
    key = parse_key(TEST_KEY_TEXT, source="test")
    accounts = raw_events([data / "raw" / "events" / f"date={d}" / "events.jsonl"
                           for d in published], {}).select("account_id").unique()
    stable = dict(accounts.with_columns(p=hmac_expr("account_id", key.pseudonym_key(
        ctx.cfg.purpose))).select("p", "account_id").iter_rows())
    return ctx, key, generalized, published, stable


def _assert_within(name: str, result: dict[str, float], k: int) -> None:
    rates = {m: result[m] for m in ("all events", *(f"m={m}" for m in MS))}
    print(f"join attack, {name}: " + ", ".join(f"{m} {r:.1%}" for m, r in rates.items())
          + f" (limit 1/k = {1 / k:.0%})")
    over = {m: r for m, r in rates.items() if r > 1 / k}
    assert not over, f"{name}: re-identified over 1/k: {over}"


@pytest.mark.slow
def test_when_profiles_are_joined_to_raw_events_then_at_most_1_in_k_users_is_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, key, generalized, published, stable = _days(tmp_path, monkeypatch, days=2)
    spec, k = ctx.cfg.purpose_spec, ctx.cfg.k_anonymity.k
    coarser = [list(e) for e in ctx.cfg.generalize.age_band_coarser_edges]
    assert spec.profile is not None and spec.profile.epoch == "day"
    day1, day2 = (set(t["user_pseudonym"]) for t in published.values())
    assert not day1 & day2, "a daily epoch gives every user a new pseudonym each day"

    result = profile_attack(published, generalized, stable, spec, key, coarser, MS, seed=3)
    _assert_within("profiles, daily pseudonyms, 2 days", result, k)

    # A weekly epoch chains the two days under one pseudonym; the earlier day's row is part
    # of the user's row, so the chain is k-anonymous too.
    weekly = spec.model_copy(update={"profile": spec.profile.model_copy(
        update={"epoch": "week"})})
    chained = republish(generalized, weekly, key, k, coarser)
    assert set(chained[START]["user_pseudonym"]) & set(
        chained[START + timedelta(days=1)]["user_pseudonym"]), "one ISO week, one pseudonym"
    result = profile_attack(chained, generalized, stable, weekly, key, coarser, MS, seed=3)
    _assert_within("profiles, weekly pseudonyms, 2 days", result, k)

    # The attack has teeth: on exact profiles (k = 1) it singles out most users.
    exact = profile_attack(republish(generalized, spec, key, 1, coarser), generalized, stable,
                           spec, key, coarser, MS, seed=3)
    print(f"join attack on exact profiles: all events {exact['all events']:.1%}")
    assert exact["all events"] > 0.5
