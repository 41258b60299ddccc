"""Attacks on what is published: free-form input in a categorical column, and the gate."""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

import pytest

from pipeline.run import run_all
from tests.conftest import generated_day, readable_text

DAY = "2026-11-01"
PLANTED = ["julie jones", "brooke.bell26 at gmail dot com", "Kwame Mensah",
           "tom[at]protonmail[dot]com", "call 415 555 0199"]


def decoded_strings(root: Path) -> str:
    """Every file under `root`, Parquet decoded (see `readable_text`)."""
    return "\n".join(readable_text([p for p in root.rglob("*") if p.is_file()]))


@pytest.mark.slow
def test_when_a_categorical_column_carries_free_form_values_then_none_is_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=400, seed=8)
    raw = data / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    lines = raw.read_text().splitlines()
    rng = random.Random(1)
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    extra = []
    for i in range(300):  # 300 categories nobody declared
        e = dict(rng.choice(events))
        e["event_id"], e["content_category"] = f"new-{i}", f"category-{i:03d}"
        extra.append(e)
    for i in range(40):  # and names or e-mails typed into it
        e = dict(rng.choice(events))
        e["event_id"], e["content_category"] = f"leak-{i}", PLANTED[i % len(PLANTED)]
        extra.append(e)
    raw.write_text("\n".join(lines + [json.dumps(e) for e in extra]) + "\n")

    ctx, published = run_all(DAY, config)

    table = ctx.storage.read(ctx.zone("published"), date.fromisoformat(DAY))
    assert published
    for column in ("top_category", "second_category"):  # each user's interests
        domain = ctx.cfg.purpose_spec.domains[column].values
        assert set(table[column].drop_nulls()) <= set(domain or ())
    everything = decoded_strings(data / "published") + decoded_strings(data / "features") \
        + decoded_strings(data / "reports") + decoded_strings(data / "feature_repo")
    assert not [v for v in PLANTED if v in everything]
    assert "category-0" not in everything
    stats = json.loads((ctx.records(date.fromisoformat(DAY)).dir / "minimize.json").read_text())
    assert sum(stats["details"]["out_of_domain"].values()) > 0  # became `other`, counted
