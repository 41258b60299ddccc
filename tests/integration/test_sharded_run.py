"""A day too large to hold is split into shards by a keyed hash of the user; the sharded
stages run shard by shard (generalize in two passes). What it publishes and every count on the
way are those of the same day in one piece."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.core.records import ValidationRecord
from pipeline.run import run_all
from pipeline.stages import FUNNEL
from tests.conftest import generated_day, write_config

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


def test_when_a_day_is_split_into_shards_then_it_publishes_what_one_piece_publishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs, counts = {}, {}
    for name, scale in (("one", {}), ("sharded", {"scale": {"events_per_shard": 1200}})):
        (tmp_path / name).mkdir()
        config, data = generated_day(tmp_path / name, monkeypatch, users=500, seed=12, **scale)
        _redeliver(data / "raw" / "events" / f"date={DAY}" / "events.jsonl")
        ctx, published = run_all(DAY, config)
        assert published
        runs[name] = ctx, data
        analytics = write_config(tmp_path / name, purpose="analytics", **scale)
        actx, published = run_all(DAY, analytics)  # counts per group, summed over shards
        assert published
        counts[name] = actx.storage.read(actx.zone("published"), DAY)
    assert counts["sharded"].equals(counts["one"]) and counts["one"].height > 0
    (one, _), (sharded, data) = runs["one"], runs["sharded"]

    ingested = sorted(p.name for p in (data / "staging" / "personalization" / "ingested" /
                                       f"date={DAY}").iterdir())
    assert len(ingested) > 2 and ingested[0].startswith("part-00000-of-")
    assert not list(data.rglob("_spill"))  # spilled pieces are gone once the shards are written

    def published(ctx: object) -> pl.DataFrame:
        table = ctx.storage.read(ctx.zone("published"), DAY)  # type: ignore[attr-defined]
        return table.sort(table.columns)

    assert published(sharded).equals(published(one))
    for stage in FUNNEL:
        a, b = (c.records(DAY).stats()[stage] for c in (one, sharded))
        assert (b.rows_in, b.rows_out, b.dropped, b.quarantined) == (
            a.rows_in, a.rows_out, a.dropped, a.quarantined), stage
    assert sharded.records(DAY).stats()["ingest"].dropped["duplicate_event"] >= 2  # ours too
    pii = [c.records(DAY).stats()["detect_pii"].details.pii_found for c in (one, sharded)]
    assert pii[0] == pii[1] and pii[0]
    # k-anonymity planned over all shards at once: the same k, l, suppression and loss.
    generalized = [c.records(DAY).stats()["generalize"].details for c in (one, sharded)]
    assert generalized[0] == generalized[1]
    assert len(sharded.storage.parts(sharded.zone("generalized"), DAY)) == len(ingested)
    # The gate: per-shard suites merged, k and l over all shards.
    checks = [{(c.expectation, c.column): (c.success, c.observed)
               for c in c_.records(DAY).load(ValidationRecord).checks} for c_ in (one, sharded)]
    assert checks[0] == checks[1]
    assert len(sharded.storage.parts(sharded.zone("published"), DAY)) == len(ingested)
    # DP features from shards bounded one at a time: the same users and rows go in (the noise
    # is fresh in each run, so the released values differ).
    released = [c.records(DAY).stats()["features"] for c in (one, sharded)]
    counted = [(r.rows_in, r.rows_out, r.details.users_counted) for r in released]
    assert counted[0] == counted[1]


def _redeliver(raw: Path) -> None:
    """An event delivered twice, and an event id reused under another user (a producer's
    bug): both are dropped after the first, whichever shards their users fall in."""
    import json

    lines = raw.read_bytes().splitlines(keepends=True)
    first = json.loads(lines[10])
    other = next(i for i in range(200, len(lines))
                 if json.loads(lines[i])["account_id"] != first["account_id"])
    lines[other] = json.dumps({**json.loads(lines[other]), "event_id": first["event_id"]}
                              ).encode() + b"\n"
    raw.write_bytes(b"".join([*lines, lines[20]]))
