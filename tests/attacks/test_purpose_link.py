"""Linking two purposes: an analyst holding both purposes' outputs tries to join a user's
personalization rows to what analytics published about them.

Pseudonyms are keyed per purpose (HMAC under a key derived for the purpose), so the same account
has unrelated pseudonyms in each; analytics publishes no pseudonym at all, only counts over at
least k users. So there is no row to join: the only common ground is coarse segments, each
holding at least k of the analytics purpose's users.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.run import run_all
from tests.conftest import generated_day, readable_text, write_config

DAY = date(2026, 11, 1)


@pytest.mark.slow
def test_when_both_purposes_outputs_are_held_then_no_user_links_across_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=500, seed=9)
    analytics = write_config(tmp_path, purpose="analytics")
    p_ctx, ok_p = run_all(DAY, config)
    a_ctx, ok_a = run_all(DAY, analytics)
    assert ok_p and ok_a
    rows = p_ctx.storage.read(p_ctx.zone("published"), DAY)
    counts = a_ctx.storage.read(a_ctx.zone("published"), DAY)
    # 1. The same users carry different pseudonyms per purpose (exact, in encrypted staging).
    staged = {ctx.cfg.purpose: set(ctx.storage.read(ctx.zone("generalized"), DAY)
                                   ["user_pseudonym"].to_list()) for ctx in (p_ctx, a_ctx)}
    assert staged["personalization"] and staged["analytics"]
    assert not staged["personalization"] & staged["analytics"]
    # 2. No personalization pseudonym, and no pseudonym-shaped value, in anything analytics
    #    wrote that a reader can see (published counts, reports, records).
    readable = [p for area in ("published/analytics", "reports/analytics", "runs/analytics")
                for p in (data / area).rglob("*") if p.is_file()]
    text = "\n".join(readable_text(readable))
    assert not [p for p in set(rows["user_pseudonym"].to_list()) if p in text]
    assert not [c for c in counts.columns if "pseudonym" in c]
    # 3. What the two share is coarse segments, and each analytics count covers >= k users.
    k = load_config(analytics).k_anonymity.k
    assert counts["users"].min() >= k
    shared = sorted(set(rows.columns) & set(counts.columns))
    assert shared == ["device_type", "event_date", "region"]
