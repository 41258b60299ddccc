"""Erasure and consent withdrawal end to end: after one run, no file or store holds the user."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.context import RunContext
from pipeline.run import run_all
from pipeline.transforms.erasure import pseudonyms_of, published_pseudonyms
from tests.conftest import generated_day, records_of

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


def _published_accounts(ctx: RunContext, raw: list[dict]) -> list[dict]:
    """Raw events of users whose rows were published, with the strings that identify them."""
    published = set(ctx.storage.read(ctx.zone("published"), DAY)["user_pseudonym"])
    ids = sorted({e["account_id"] for e in raw})
    pseudo = {i: _published_as(ctx, i) for i in ids}
    return [e for e in raw if pseudo[e["account_id"]] in published]


def _published_as(ctx: RunContext, account: str) -> str:
    """The account's pseudonym in the day's published table (a profile's: the day's)."""
    (stable,) = pseudonyms_of([account], [ctx.key], ctx.cfg.purpose)
    (shown,) = published_pseudonyms([stable], [ctx.key], ctx.cfg.purpose_spec,
                                    [date.fromisoformat(DAY)])
    return shown


def _identifying(events: list[dict], account: str, pseudonym: str) -> set[bytes]:
    values = {account, pseudonym}
    for e in events:
        if e["account_id"] == account:
            values |= {str(e[f]) for f in ("name", "email", "phone", "device_id", "ip_address")
                       if e.get(f)}
    return {v.encode() for v in values if len(v) >= 6}


@pytest.mark.parametrize("events_per_shard", [None, 1500], ids=["one piece", "sharded"])
def test_when_a_user_is_erased_then_no_file_or_store_holds_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events_per_shard: int | None) -> None:
    """Also on a day split into shards by user (the erasure then finds them in shard files)."""
    scale = {"scale": {"events_per_shard": events_per_shard}} if events_per_shard else {}
    config, data = generated_day(tmp_path, monkeypatch, users=500, seed=5, **scale)
    ctx, published = run_all(DAY, config)
    assert published
    raw_path = data / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    raw = [e for line in raw_path.read_text().splitlines()
           if isinstance(e := _loads(line), dict) and "account_id" in e]
    shown = _published_accounts(ctx, raw)
    erased, withdrawn = shown[0]["account_id"], next(
        e["account_id"] for e in shown if e["account_id"] != shown[0]["account_id"])
    erased_pseudo, withdrawn_pseudo = (pseudonyms_of([a], [ctx.key], ctx.cfg.purpose)[0]
                                       for a in (erased, withdrawn))
    withdrawn_shown = _published_as(ctx, withdrawn)
    forms = _identifying(raw, erased, erased_pseudo) | {_published_as(ctx, erased).encode()}

    requests = data / "raw" / "erasure" / "requests.jsonl"
    requests.parent.mkdir(parents=True)
    requests.write_text(json.dumps({"account_id": erased, "requested_at": "2026-11-02"}) + "\n")
    with (data / "raw" / "consent" / "consent.jsonl").open("a") as fh:
        fh.write(json.dumps({"account_id": withdrawn, "purpose": "personalization",
                             "status": "revoked",
                             "recorded_at": "2026-11-02T08:00:00+00:00"}) + "\n")
    ctx, published = run_all(DAY, config)  # the next run, here a rerun of the same date
    assert published

    erasure = json.loads((records_of(data, DAY) / "erasure.json").read_text())
    assert erasure["requests"] == 1 and erasure["withdrawn_users"] >= 1
    assert erasure["removed"]["raw/events"] >= 1
    # Every file but the request itself, staging decrypted, Feast's online store included.
    hits = []
    for path in data.rglob("*"):
        if path.is_file() and path != requests:
            blob = path.read_bytes()
            hits += [f"{path}: {f[:4]!r}..." for f in forms if f in blob]
    for zone in ctx.staging():
        table = ctx.storage.read(zone, DAY)
        for col in ("account_id", "user_pseudonym"):
            if col in table.columns:
                hits += [f"{zone.name}.{col}" for v in table[col].to_list()
                         if v in (erased, erased_pseudo)]
        for col, dtype in table.schema.items():
            if dtype == pl.String:
                hits += [f"{zone.name}.{col}" for v in table[col].drop_nulls().to_list()
                         if any(f.decode() in v for f in forms)]
    assert hits == []
    table = ctx.storage.read(ctx.zone("published"), DAY)
    assert withdrawn_shown not in set(table["user_pseudonym"])
    assert withdrawn_pseudo not in set(table["user_pseudonym"])
    funnel = json.loads((records_of(data, DAY) / "ingest.json").read_text())
    assert funnel["dropped"]["erased"] >= 1
    consent = json.loads((records_of(data, DAY) / "consent.json").read_text())
    assert consent["dropped"]["consent_withdrawn_since"] >= 1


def _loads(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None
