"""Pause, reset and the consent log, end to end on a sharded two-day run: a paused user is absent
from the next run's published rows and DP inputs (and nothing of theirs is deleted), a reset
user's new pseudonym is not the old one and the old rows are gone, and an edited consent log
stops the run naming the line."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.context import RunContext
from pipeline.run import run_all
from pipeline.transforms.erasure import pseudonyms_of, published_pseudonyms
from tests.conftest import generated_day, records_of, reports_of

DAY1, DAY2 = "2026-11-01", "2026-11-02"
DECIDED = "2026-11-01T23:59:59+00:00"  # after every event of day 1, before any of day 2
pytestmark = pytest.mark.slow


def _accounts(data: Path, day: str) -> set[str]:
    path = data / "raw" / "events" / f"date={day}" / "events.jsonl"
    out = set()
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("account_id"), str):
            out.add(event["account_id"])
    return out


def _shown(ctx: RunContext, pseudonym: str, day: str) -> str:
    (name,) = published_pseudonyms([pseudonym], [ctx.key], ctx.cfg.purpose_spec,
                                   [date.fromisoformat(day)])
    return name


def _column(ctx: RunContext, zone: str, day: str, col: str = "user_pseudonym") -> set[str]:
    table = ctx.storage.read(ctx.zone(zone), date.fromisoformat(day))
    return set(table[col].to_list()) if col in table.columns else set()


def test_when_users_pause_or_reset_then_every_later_run_honours_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=500, seed=11, days=2,
                                 scale={"events_per_shard": 1500})
    ctx, published = run_all(DAY1, config)
    assert published
    plain = {a: pseudonyms_of([a], [ctx.key], ctx.cfg.purpose)[0]
             for a in sorted(_accounts(data, DAY1) & _accounts(data, DAY2))}
    shown = _column(ctx, "published", DAY1)
    both = [a for a, p in plain.items() if _shown(ctx, p, DAY1) in shown]
    paused, reset = both[0], both[1]
    old = plain[reset]
    with (data / "raw" / "consent" / "consent.jsonl").open("a") as fh:
        for account, status in ((paused, "paused"), (reset, "reset")):
            fh.write(json.dumps({"account_id": account, "purpose": "personalization",
                                 "status": status, "recorded_at": DECIDED}) + "\n")

    ctx, published = run_all(DAY2, config)
    assert published
    # Paused: nothing new is used, nothing is deleted.
    for zone in ("consented", "pseudonymized", "generalized", "pending"):
        table = ctx.storage.read(ctx.zone(zone), date.fromisoformat(DAY2))
        assert plain[paused] not in set(table["user_pseudonym"]) if "user_pseudonym" in \
            table.columns else paused not in set(table["account_id"]), zone
    assert _shown(ctx, plain[paused], DAY2) not in _column(ctx, "published", DAY2)
    assert _shown(ctx, plain[paused], DAY1) in _column(ctx, "published", DAY1)
    # Reset: a new pseudonym on day 2, and the old one gone from every day's derived data.
    new = _column(ctx, "pseudonymized", DAY2)
    assert old not in new
    for day in (DAY1, DAY2):
        for zone in ("pseudonymized", "generalized", "pending"):
            assert old not in _column(ctx, zone, day), (zone, day)
        for zone in ("consented", "scrubbed"):
            table = ctx.storage.read(ctx.zone(zone), date.fromisoformat(day))
            assert reset not in set(table.filter(
                pl.col("event_time") < pl.lit(DECIDED).str.to_datetime(time_zone="UTC"))
                ["account_id"]), (zone, day)
        assert _shown(ctx, old, day) not in _column(ctx, "published", day)
    from pipeline.steps.consents import verified
    from pipeline.transforms.consent import pseudonym_epochs

    epochs = pseudonym_epochs(verified(ctx).table, "personalization")
    current = pseudonyms_of([reset], [ctx.key], ctx.cfg.purpose, epochs)
    assert len(current) == 2 and old in current  # the old one, and the new epoch's
    (fresh,) = set(current) - {old}
    assert fresh in new  # their day-2 events carry the new pseudonym
    # The report says so.
    erasure = json.loads((records_of(data, DAY2) / "erasure.json").read_text())
    assert erasure["paused_users"] >= 1 and erasure["reset_users"] == 1
    consent = json.loads((records_of(data, DAY2) / "consent.json").read_text())
    assert consent["dropped"]["consent_paused"] >= 1  # recorded while paused
    report = (reports_of(data, DAY2) / "report.html").read_text()
    assert "consent paused" in report and "who reset their profile" in report

    # A rerun of day 1 drops the paused user too (from its published rows and DP inputs).
    ctx, published = run_all(DAY1, config)
    assert published
    assert plain[paused] not in _column(ctx, "generalized", DAY1)
    assert _shown(ctx, plain[paused], DAY1) not in _column(ctx, "published", DAY1)
    assert reset not in _column(ctx, "consented", DAY1, "account_id")
    consent = json.loads((records_of(data, DAY1) / "consent.json").read_text())
    assert consent["dropped"]["consent_paused_since"] >= 1
    assert consent["dropped"]["before_reset"] >= 1

    # An edited consent log stops the run, naming the line and never the account.
    landing = data / "raw" / "consent" / "consent.jsonl"
    lines = landing.read_text().splitlines()
    lines[-1] = lines[-1].replace('"reset"', '"granted"')
    landing.write_text("\n".join(lines) + "\n")
    ctx, published = run_all(DAY2, config)
    assert not published
    failed = {n: o for n, o in ctx.records(date.fromisoformat(DAY2)).outcomes().items()
              if o.run_id == ctx.run_id and o.status == "failed"}
    assert "erase" in failed and all(o.error == "ConsentLogIntegrityError"
                                     for n, o in failed.items() if n != "report")
    message = " ".join(o.message or "" for o in failed.values())
    assert f"line {len(lines)}" in message
    assert reset not in message and paused not in message
