"""The generator's cohort signal is real and measured honestly (cross-fitted), and is gone at
strength 0."""

import hashlib
import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata

from pipeline.demo.generate import CATEGORIES, COHORT_SIGNAL, generate


def _cross_fitted_auc(root: Path) -> float:
    """Audience AUC of each user's cohort share, the cohort share taken from the *other* half
    of the users (without cross-fitting, small cohorts echo their own members)."""
    raw = pl.read_ndjson(root / "raw/events/date=2026-11-01/events.jsonl",
                         infer_schema_length=None, ignore_errors=True)
    events = raw.filter(pl.col("content_category").is_in(CATEGORIES)).select(
        "account_id", "content_category",
        cohort=pl.concat_str("home_city", (pl.col("age") // 10).cast(pl.String), "os"))
    shares = (events.group_by("account_id", "cohort", "content_category").len()
              .with_columns(share=pl.col("len") / pl.col("len").sum().over("account_id"))
              .pivot(on="content_category", index=["account_id", "cohort"], values="share")
              .fill_null(0)
              .with_columns(half=pl.col("account_id").map_elements(
                  lambda a: hashlib.sha256(a.encode()).digest()[0] % 2, return_dtype=pl.Int64)))
    aucs = []
    for half in (0, 1):
        other = shares.filter(pl.col("half") != half).group_by("cohort").agg(
            pl.col(CATEGORIES).mean().name.suffix("_cohort"))
        mine = shares.filter(pl.col("half") == half).join(other, on="cohort", how="inner")
        overall = mine.select(CATEGORIES).mean()
        for c in CATEGORIES:
            label = (mine[c] > overall[c][0]).to_numpy()
            score = mine[f"{c}_cohort"].to_numpy()
            pos, neg = label.sum(), (~label).sum()
            aucs.append((rankdata(score)[label].sum() - pos * (pos + 1) / 2) / (pos * neg))
    return float(np.mean(aucs))


@pytest.mark.slow
def test_when_cohort_signal_is_default_then_cohorts_predict_later_taste_and_at_0_they_do_not(
        tmp_path: Path) -> None:
    aucs = {}
    for signal in (0.0, COHORT_SIGNAL):
        root = tmp_path / str(signal)
        generate(root, start=date(2026, 11, 1), users=3000, seed=4, cohort_signal=signal,
                 malformed_share=0, duplicate_share=0)
        aucs[signal] = _cross_fitted_auc(root)
    assert abs(aucs[0.0] - 0.5) < 0.02  # no signal: cohorts are no better than chance
    assert 0.53 < aucs[COHORT_SIGNAL] < 0.60  # the default: about MovieLens' 0.57


def test_when_users_come_in_batches_then_every_user_is_written_once_and_reruns_match(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator streams (a 10M-event day never sits in memory): users in batches, lines
    appended; nobody is lost or doubled at a batch edge, and the same seed writes the same
    bytes."""
    import pipeline.demo.generate as gen

    monkeypatch.setattr(gen, "USERS_PER_BATCH", 40)
    outs = [generate(tmp_path / run, start=date(2026, 11, 1), days=2, users=130)
            for run in ("a", "b")]
    files = list((tmp_path / "a").rglob("*.jsonl"))
    assert len(files) == 3 and all(
        p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
        for p in files)
    def accounts(path: Path) -> set[str]:
        out = set()
        for line in path.read_bytes().splitlines():
            try:
                out.add(json.loads(line)["account_id"][:11])
            except (ValueError, KeyError):  # the malformed lines the generator plants
                continue
        return out

    ids = {f"acct-{i:06d}" for i in range(130)}
    active = accounts(outs[0].event_files[0])
    assert active <= ids and len(active) > 100  # most users are active on a day
    assert accounts(outs[0].consent_file) <= ids
    lines = sum(len(p.read_bytes().splitlines()) for p in outs[0].event_files)
    assert lines == outs[0].events
