"""The daily re-identification check (`pipeline.monitor.reidentify`): the insider join attack on
the day's table before the gate, against 1/k. On hand-made profiles where the answer is known,
and on a generated day, where k-anonymous profiles single nobody out and the same day's exact
profiles (k = 1) single out nearly everyone: the check has teeth."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import PurposeSpec
from pipeline.config.files import read_yaml
from pipeline.monitor.reidentify import Known, known_from_shard, reidentification
from pipeline.run import run_all
from pipeline.transforms.profile import EVENTS, publish_profiles, shard_profiles
from tests.conftest import ROOT, generated_day, records_of

SPEC = PurposeSpec.model_validate(read_yaml(ROOT / "schemas" / "purposes" /
                                            "personalization.yaml"))
COARSER = [[18, 35, 55]]
BASE = {"pseudonym_key_id": "k1", "event_date": "2026-11-01", "device_type": "mobile",
        "top_category": "news", "second_category": "any", "activity": "any"}


def _profiles(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame([{"user_pseudonym": who, **BASE, "region": region, "age_band": band}
                         for who, region, band in rows])


def _known(exact: pl.DataFrame, events: list[tuple[str, str, str]]) -> Known:
    ev = pl.DataFrame(schema=["_who"]) if not events else pl.DataFrame(
        [{"_who": w, "region": r, "age_band": b, "device_type": "mobile"}
         for w, r, b in events]).with_columns(
        pl.int_range(pl.len()).over("_who").alias("_probe"))
    return Known(exact=exact.rename({"user_pseudonym": "_who"}), events=ev if events else None,
                 staging=pl.DataFrame({"_who_staging": ["s-" + w
                                                        for w in exact["user_pseudonym"]]}))


def test_when_one_profile_is_unique_then_the_attacks_single_out_that_person_only() -> None:
    # u0-u4 share one profile; u5-u8 are published with the coarser band 18-34, which fits
    # their exact 18-24, 25-34 and (already coarse at the event level) 18-34; u9 is alone.
    exact = _profiles([*((f"u{i}", "Texas", "25-34") for i in range(5)),
                       ("u5", "Ohio", "18-24"), ("u6", "Ohio", "25-34"), ("u7", "Ohio", "18-34"),
                       ("u8", "Ohio", "18-24"), ("u9", "Utah", "45-54")])
    published = exact.with_columns(
        pl.when(pl.col("region") == "Ohio").then(pl.lit("18-34")).otherwise("age_band")
        .alias("age_band"))
    events = [(w, r, b) for w, r, b in exact.select("user_pseudonym", "region", "age_band")
              .iter_rows() for _ in range(2)]
    events.append(("u0", "Utah", "45-54"))  # u0 also has an event that looks like u9's
    known = [_known(exact, events)]
    record = reidentification(published, known, SPEC, k=5, coarser=COARSER,
                              known_events=[1, 2])
    rates = {a.attack: (a.singled_out, a.targets) for a in record.attacks}
    assert rates["pseudonym reuse"] == (0, 10)
    assert rates["all events"] == (1, 10)  # u9 only: the coarser band fits all of Ohio
    # one known event: u9's fits u9 alone; u0's Utah event (if drawn) fits u9's row, not u0's
    assert rates["1 known event"][0] == 1 and rates["2 known events"][0] == 1
    assert record.rate == pytest.approx(0.1) and record.passed  # 10% <= 1/k = 20%
    strict = reidentification(published, known, SPEC, k=5, coarser=COARSER, known_events=[1],
                              max_rate=0.05)
    assert not strict.passed and "BREACHED" in strict.describe()


def test_when_a_staging_pseudonym_is_published_then_pseudonym_reuse_finds_everyone() -> None:
    exact = _profiles([(f"u{i}", "Texas", "25-34") for i in range(6)])
    published = exact.with_columns((pl.lit("s-") + pl.col("user_pseudonym"))
                                   .alias("user_pseudonym"))
    record = reidentification(published, [_known(exact, [])], SPEC, k=5, coarser=COARSER,
                              known_events=[])
    assert record.worst_attack == "pseudonym reuse" and record.rate == 1.0
    assert not record.passed


def test_when_a_purpose_publishes_counts_then_the_check_does_not_apply() -> None:
    spec = PurposeSpec.model_validate(read_yaml(ROOT / "schemas" / "purposes" /
                                                "analytics.yaml"))
    record = reidentification(pl.DataFrame(), [], spec, k=10, coarser=COARSER,
                              known_events=[1])
    assert not record.applicable and record.passed


@pytest.mark.slow
def test_when_a_generated_day_is_published_then_nobody_is_singled_out_and_exact_profiles_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=600, seed=3)
    ctx, ok = run_all("2026-11-01", config)
    assert ok
    record = json.loads((records_of(data, "2026-11-01") / "reidentification.json").read_text())
    assert record["applicable"] and record["passed"] and record["rate"] <= 1 / 5
    attacks = {a["attack"] for a in record["attacks"]}
    assert attacks == {"pseudonym reuse", "all events", "1 known event", "2 known events",
                       "5 known events"}
    validation = json.loads((records_of(data, "2026-11-01") / "validation.json").read_text())
    [check] = [c for c in validation["checks"]
               if c["expectation"] == "reidentification_rate_at_most_one_in_k"]
    assert check["success"] and check["observed"]["limit"] == 0.2
    # The same day's profiles published exact (k = 1): the attack finds nearly everyone.
    from datetime import date

    d = date(2026, 11, 1)
    generalized = ctx.storage.read(ctx.zone("generalized"), d)
    spec = ctx.cfg.purpose_spec
    profiles, _ = shard_profiles(generalized, spec, key=ctx.key, epoch=str(d), k=5)
    exact, _ = publish_profiles(profiles, spec, k=1, coarser_age_edges=COARSER, history=None)
    known = [known_from_shard(generalized, spec, key=ctx.key, epoch=str(d), k=5, m=5, seed=1)]
    broken = reidentification(exact.drop(EVENTS), known, spec, k=5, coarser=COARSER,
                              known_events=[1, 2, 5])
    print(f"exact profiles: {broken.describe()}")
    assert not broken.passed and broken.rate > 0.8 and broken.worst_attack == "all events"
