"""Drift monitoring of DP releases: false alarms, power, the smallest shift seen, and its cost.

Run: .venv/bin/python -m bench.monitor [--pairs 200] [--power-pairs 50] [--overhead-events 1M]
     [--json]

Releases are drawn by the real release (`pipeline.transforms.features.release_features`, OpenDP,
ε = 1 as configured) from days of users drawn as the project's generator draws them
(`pipeline.demo.generate`: the same cities, devices, ages, cohort effects, activity with its
heavy users, event types and session lengths), straight into the columns the release reads,
so that hundreds of days can be released in minutes. The same users come back every day and
act anew, which is the day-to-day variation the test must not mistake for drift. A shift is
injected as the generator's `Drift` does: a category's share of one region's events raised by
the given points for each of its users. Tested by `pipeline.monitor.drift.feature_drift` at
`monitor.alpha` (0.01).

- false alarms: consecutive pairs of days with nothing changed, at demo size (4,000 users) and
  at 100,000 users: the share of pairs with any finding (target <= 1%, >= 200 pairs each);
- power: pairs where the second day has sports +10 points in Illinois, at 100,000 users: the
  share where the finding names share_sports in Illinois (target >= 90%);
- the smallest shift found on >= 90% of pairs at demo size, from 0.1 to 0.6 in steps of 0.1;
- overhead: a real run of two generated days of `--overhead-events` events each (every stage,
  `pipeline.run.run_all`); the monitor and reidentify stages' wall time on the second day over
  the rest of that run's (target <= 5%).

- what privacy costs each group: on MovieLens 100k at ε = 1 (`bench/utility.group_lift`,
  fairlearn's `MetricFrame`, `--utility-draws` releases), the share of the exact-cohort lift
  kept per age band and gender, and the worst group's against the overall as a ratio (null
  without the data: `python3 tasks.py bench-data`).

`--pairs 0`, `--power-pairs 0`, `--overhead-events 0` or `--utility-draws 0` skip a part (its
figure is then null). With `--json` the last line is `{"false_alarm_rate": ...,
"power_10pt_100k": ..., "min_detectable_shift_demo": ..., "overhead_ratio": ...,
"worst_group_lift_ratio": ...}`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import FeaturesConfig, load_config
from pipeline.console import progress_shown
from pipeline.core import progress
from pipeline.demo.generate import (
    AGE_EDGES,
    CATEGORIES,
    CITIES,
    COHORT_SIGNAL,
    DEVICES,
    EVENT_TYPES,
    _cohort_effects,
)
from pipeline.monitor.drift import feature_drift
from pipeline.transforms.features import Release, release_features

ROOT = Path(__file__).resolve().parents[1]
DEMO_USERS, LARGE_USERS = 4_000, 100_000
# The pipeline reverse-geocodes each user's GPS to its US state (`generalize.region_level`).
STATE = {"New York": "New York", "Los Angeles": "California", "Chicago": "Illinois",
         "Houston": "Texas", "Phoenix": "Arizona", "Philadelphia": "Pennsylvania",
         "Seattle": "Washington", "Denver": "Colorado", "Boston": "Massachusetts",
         "Atlanta": "Georgia", "Miami": "Florida", "Portland": "Oregon",
         "Las Vegas": "Nevada", "Minneapolis": "Minnesota"}
DEVICE_TYPE = {"iOS": "mobile", "Android": "mobile", "iPadOS": "tablet", "Windows": "desktop",
               "macOS": "desktop", "Linux": "desktop"}
SHIFT_REGION, SHIFT_CATEGORY = "Illinois", "sports"
HISTORY = 7  # earlier releases pooled to estimate the variation (`monitor.history_releases`)


@dataclass
class Users:
    region: np.ndarray
    age_band: np.ndarray
    device_type: np.ndarray
    preference: np.ndarray  # (users, categories), rows sum to 1
    activity: np.ndarray


def users(n: int, rng: np.random.Generator, band_labels: tuple[str, ...]) -> Users:
    """Users as `pipeline.demo.generate._profiles` draws them."""
    effects = _cohort_effects(COHORT_SIGNAL)
    city = rng.choice(len(CITIES), n, p=_weights(CITIES))
    device = rng.choice(len(DEVICES), n, p=_weights(DEVICES))
    age = np.clip(rng.normal(38, 13, n).astype(int), 18, 90)
    band = np.searchsorted(np.array(AGE_EDGES), age, side="right")  # 0: under the first edge
    lo = np.array((0, *AGE_EDGES))
    logits = (np.array([effects[f"age:{lo[b]}"] for b in range(len(lo))])[band]
              + np.array([effects[f"city:{c[0]}"] for c in CITIES])[city]
              + np.array([effects[f"os:{d[0]}"] for d in DEVICES])[device]
              + rng.normal(0, 1, (n, len(CATEGORIES))))
    pref = np.exp(logits - logits.max(axis=1, keepdims=True))
    heavy = np.where(rng.random(n) < 0.01, 8, 1)
    return Users(region=np.array([STATE[c[0]] for c in CITIES])[city],
                 age_band=np.array(band_labels)[band],
                 device_type=np.array([DEVICE_TYPE[d[0]] for d in DEVICES])[device],
                 preference=pref / pref.sum(axis=1, keepdims=True),
                 activity=rng.lognormal(2.0, 0.6, n) * heavy)


def _weights(items: list) -> np.ndarray:
    w = np.array([i[-1] for i in items], dtype=float)
    return w / w.sum()


def day_events(u: Users, rng: np.random.Generator, *, shift: float = 0.0) -> pl.DataFrame:
    """One day's events as `_day_lines` draws them (without the text, ids and malformed
    lines the release never reads), in the columns of the generalized zone."""
    n = len(u.activity)
    k = np.floor(rng.exponential(u.activity)).astype(int) + (rng.random(n) < 0.7)
    who = np.repeat(np.arange(n), k)
    cum = u.preference.cumsum(axis=1)[who]
    cat = np.minimum((rng.random(len(who))[:, None] > cum).sum(axis=1), len(CATEGORIES) - 1)
    if shift:
        target = CATEGORIES.index(SHIFT_CATEGORY)
        own = u.preference[who, target]
        moved = (u.region[who] == SHIFT_REGION) & (
            rng.random(len(who)) < np.minimum(1, shift / np.maximum(1e-9, 1 - own)))
        cat = np.where(moved, target, cat)
    etype = rng.choice([e[0] for e in EVENT_TYPES], len(who), p=_weights(EVENT_TYPES))
    return pl.DataFrame({
        "user_pseudonym": who.astype(str), "region": u.region[who],
        "age_band": u.age_band[who], "device_type": u.device_type[who],
        "event_type": etype, "content_category": np.array(CATEGORIES)[cat],
        "session_seconds": np.minimum(7200, rng.lognormal(5.0, 1.0, len(who))).astype(int),
    }).with_columns(content_category=pl.when(pl.col("event_type") != "support_message")
                    .then(pl.col("content_category")))


class Releases:
    """Draws releases of generated days through the real DP release."""

    def __init__(self, fcfg: FeaturesConfig, bands: tuple[str, ...], alpha: float) -> None:
        self.fcfg, self.bands, self.alpha = fcfg, bands, alpha
        self.variation = Release.of(fcfg).variation()
        self.day = date(2026, 1, 1)

    def draw(self, events: pl.DataFrame) -> pl.DataFrame:
        self.day += timedelta(days=1)
        rel, _ = release_features(events, self.fcfg, age_bands=self.bands,
                                  user_col="user_pseudonym", release_date=str(self.day))
        return rel.table

    def compare(self, before: pl.DataFrame, now: pl.DataFrame,
                history: list[pl.DataFrame] | None = None):  # noqa: ANN201
        """`history`: earlier releases, oldest first, ending with `before`'s predecessor."""
        earlier = [*(history or []), before]
        return feature_drift(before, now, self.variation, kind=self.fcfg.mechanism.noise,
                             alpha=self.alpha,
                             history=list(zip(earlier[:-1], earlier[1:], strict=True)))


def false_alarms(r: Releases, n_users: int, pairs: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    u = users(n_users, rng, r.bands)
    before, alarms, started = r.draw(day_events(u, rng)), 0, time.perf_counter()
    history: list[pl.DataFrame] = []
    with progress.step(f"no change, {n_users:,}", pairs):
        for _ in range(pairs):
            now = r.draw(day_events(u, rng))
            alarms += r.compare(before, now, history[-HISTORY:]).drifted
            history.append(before)
            before = now
            progress.advance()
    return {"users": n_users, "pairs": pairs, "false_alarms": alarms,
            "rate": alarms / pairs, "seconds": round(time.perf_counter() - started, 1)}


def _found(drift) -> bool:  # noqa: ANN001
    return any(f.value == f"share_{SHIFT_CATEGORY}" and (
        f.where == f"region={SHIFT_REGION}" or f.where.startswith(f"{SHIFT_REGION}|"))
        for f in drift.findings)


def power(r: Releases, n_users: int, shift: float, pairs: int, seed: int) -> float:
    """Pairs whose second day has the shift, each after `HISTORY` days without it (what the
    day-to-day variation is learnt from, as the monitor stage reads them)."""
    rng = np.random.default_rng(seed)
    u = users(n_users, rng, r.bands)
    days = [r.draw(day_events(u, rng)) for _ in range(HISTORY + 1)]
    hits = 0
    with progress.step(f"+{shift:.0%}, {n_users:,}", pairs):
        for _ in range(pairs):
            hits += _found(r.compare(days[-1], r.draw(day_events(u, rng, shift=shift)),
                                     days[-HISTORY - 1:-1]))
            days.append(r.draw(day_events(u, rng)))
            progress.advance()
    return hits / pairs


def overhead(events: int, work: Path) -> dict[str, float]:
    """A real two-day run; the monitor stage's wall time on day 2 over the rest of the run."""
    from pipeline.demo.generate import generate
    from pipeline.run import run_all
    from tests.conftest import write_config

    os.environ["PRIVACY_PIPELINE_TEST_KEY"] = (
        "bench-key-1:" + base64.b64encode(secrets.token_bytes(32)).decode())
    config = write_config(work)
    first = date(2026, 11, 1)
    generate(work / "data", start=first, days=2, users=round(events / 9.7), seed=3)
    run_all(first, config)
    started = time.perf_counter()
    ctx, published = run_all(first + timedelta(days=1), config)
    wall = time.perf_counter() - started
    outcomes = ctx.records(first + timedelta(days=1)).outcomes()
    from datetime import datetime

    took = {name: (datetime.fromisoformat(outcomes[name].finished_at or "")
                   - datetime.fromisoformat(outcomes[name].started_at)).total_seconds()
            for name in ("monitor", "reidentify")}
    mon = sum(took.values())
    return {"events": events, "published": published, "run_s": round(wall, 1),
            "monitor_s": round(took["monitor"], 2), "reidentify_s": round(took["reidentify"], 2),
            "ratio": round(mon / (wall - mon), 4)}


def movielens_groups(draws: int) -> dict | None:
    """`bench/utility.group_lift` on MovieLens 100k at ε = 1 (None without the data)."""
    from bench.utility import (
        DataMissing,
        features_config,
        group_lift,
        movielens,
        print_group_lift,
    )

    try:
        task, categories = movielens()
    except DataMissing as exc:
        print(f"skipped the per-group lift: {exc}", file=sys.stderr)
        return None
    task.baselines()
    groups = group_lift(task, features_config(categories, ["F", "M"], epsilon=1.0), draws,
                        {"age_band": 1, "gender": 2})
    print_group_lift("MovieLens 100k, ε = 1", groups)
    return groups


def _size(text: str) -> int:
    text = text.upper()
    return int(float(text[:-1]) * {"K": 1e3, "M": 1e6}[text[-1]]) if text[-1] in "KM" \
        else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200, help="no-change pairs per size")
    ap.add_argument("--power-pairs", type=int, default=50, help="shifted pairs per point")
    ap.add_argument("--overhead-events", type=_size, default=1_000_000,
                    help="events per day of the real run (0: skip)")
    ap.add_argument("--utility-draws", type=int, default=20,
                    help="MovieLens releases for the per-group lift (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with progress_shown():  # a bar per measurement on a terminal; nothing in a pipe
        _main(args)


def _main(args: argparse.Namespace) -> None:
    cfg = load_config(ROOT / "config" / "pipeline.yaml")
    r = Releases(cfg.features, cfg.generalize.age_bands, cfg.monitor.alpha)
    fa = [false_alarms(r, n, args.pairs, seed) for n, seed in ((DEMO_USERS, 1),
                                                                 (LARGE_USERS, 2))
          if args.pairs]
    for row in fa:
        print(f"no change, {row['users']:,} users: {row['false_alarms']} alarm(s) in "
              f"{row['pairs']} pairs ({row['rate']:.1%}), {row['seconds']} s", flush=True)
    p100k, smallest = None, None
    if args.power_pairs:
        p100k = power(r, LARGE_USERS, 0.10, args.power_pairs, seed=3)
        print(f"sports +10 points in {SHIFT_REGION}, {LARGE_USERS:,} users: found on "
              f"{p100k:.0%} of {args.power_pairs} pairs", flush=True)
        for tenth in range(1, 7):
            shift = tenth / 10
            found = power(r, DEMO_USERS, shift, args.power_pairs, seed=10 + tenth)
            print(f"  demo size ({DEMO_USERS:,} users), +{shift:.0%}: found on {found:.0%}",
                  flush=True)
            if found >= 0.9:
                smallest = shift
                break
        print(f"smallest shift found on >= 90% of pairs at demo size: "
              f"{'none up to 60 points' if smallest is None else f'{smallest:.0%}'}")
    ratio = None
    if args.overhead_events:
        with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
            oh = overhead(args.overhead_events, Path(tmp))
        ratio = oh["ratio"]
        print(f"overhead on a {oh['events']:,}-event day: monitor {oh['monitor_s']} s and "
              f"re-identification check {oh['reidentify_s']} s of a {oh['run_s']} s run "
              f"({ratio:.2%} of the rest), published: {oh['published']}")
    groups = movielens_groups(args.utility_draws) if args.utility_draws else None
    out = {"false_alarm_rate": max((row["rate"] for row in fa), default=None),
           "false_alarms": {str(row["users"]): row for row in fa},
           "power_10pt_100k": p100k, "min_detectable_shift_demo": smallest,
           "overhead_ratio": ratio,
           "worst_group_lift_ratio": groups["worst_group_lift_ratio"] if groups else None,
           "worst_group": groups["worst_group"] if groups else None}
    if args.json:
        print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
