"""How many users the published table links back to, at the user level, against 1/k.

The attacker is an insider holding the raw events with their account ids (a copy of the landing
zone) and the published per-event table. For each published row they recompute every column
they can from a raw event: the date, the day part of its hour, event type, category, device
type from the OS (config's map), the age band containing the age, and the H3 cell (at the
published cell's resolution) containing the GPS point; `unknown` matches anything. Region is
not recomputed (it would need the geocoder), so these rates are a lower bound.

- **all events**: a pseudonym is re-identified when exactly one account could have produced
  every one of its published rows, and it is the right one;
- **m known events**: the attacker knows m random events of a target account and looks for
  the pseudonyms having a published row for each; the target is re-identified when exactly one
  pseudonym fits and it is the target's.

k-anonymity promises at most 1/k of users singled out. Run after generating and running days:

    python -m bench.linkage --users 2000 --days 1 [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from datetime import date, timedelta
from pathlib import Path

import h3
import polars as pl

from pipeline.core.keys import parse_key
from pipeline.transforms.generalize.coarsen import day_part
from pipeline.transforms.pseudonymize import hmac_expr

EXACT = ["event_date", "day_part", "event_type", "content_category", "device_type"]
KEY_TEXT = "bench-key-1:VEVTVC1PTkxZLW5vdC1hLXNlY3JldC1rZXktMDAwMDE="


def raw_events(files: list[Path], os_map: dict[str, str]) -> pl.DataFrame:
    rows = []
    for path in files:
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                if not all(isinstance(e.get(f), t) for f, t in (
                        ("age", int), ("latitude", float), ("longitude", float))):
                    continue  # malformed on purpose: quarantined, never published
                rows.append({"account_id": e["account_id"], "event_date": e["event_time"][:10],
                             "hour": int(e["event_time"][11:13]), "event_type": e["event_type"],
                             "content_category": e.get("content_category"),
                             "device_type": os_map.get(e.get("os"), "unknown"),
                             "age": e.get("age"), "lat": e.get("latitude"),
                             "lng": e.get("longitude")})
            except (ValueError, KeyError, TypeError):
                continue
    df = pl.DataFrame(rows).with_columns(day_part=day_part(pl.col("hour")))
    cells = [{r: (h3.latlng_to_cell(la, ln, r) if la is not None and ln is not None else None)
              for r in range(4, 9)} for la, ln in zip(df["lat"], df["lng"], strict=True)]
    return df.with_row_index("event").with_columns(
        **{f"cell{r}": pl.Series([c[r] for c in cells]) for r in range(4, 9)})


def _band_bounds(band: str) -> tuple[int, int]:
    if band.startswith("under-"):
        return 0, int(band[6:]) - 1
    if band.endswith("+"):
        return int(band[:-1]), 200
    if "-" in band:
        lo, hi = band.split("-")
        return int(lo), int(hi)
    return 0, 200  # unknown


def candidate_pairs(published: pl.DataFrame, raw: pl.DataFrame) -> pl.DataFrame:
    """(published row, raw event) pairs where the event could have produced the row."""
    rows = (published.select("user_pseudonym", *EXACT, "age_band", "h3_cell").unique()
            .with_row_index("row")
            .with_columns(res=pl.col("h3_cell").map_elements(
                lambda c: h3.get_resolution(c) if c and c != "unknown" else -1,
                return_dtype=pl.Int64),
                lo=pl.col("age_band").map_elements(lambda b: _band_bounds(b)[0],
                                                   return_dtype=pl.Int64),
                hi=pl.col("age_band").map_elements(lambda b: _band_bounds(b)[1],
                                                   return_dtype=pl.Int64)))
    pairs = rows.join(raw, on=EXACT, how="inner", nulls_equal=True)
    cell_ok = pl.col("res") == -1
    for r in range(4, 9):
        cell_ok = cell_ok | ((pl.col("res") == r) & (pl.col(f"cell{r}") == pl.col("h3_cell")))
    return pairs.filter(cell_ok & pl.col("age").is_between(pl.col("lo"), pl.col("hi")))


def attack(published: pl.DataFrame, raw: pl.DataFrame, truth: dict[str, str], ms: list[int],
           seed: int) -> dict[str, float]:
    pairs = candidate_pairs(published, raw)
    users = published["user_pseudonym"].n_unique()
    # all events: accounts that cover every row of the pseudonym
    n_rows = published.select("user_pseudonym", *EXACT, "age_band", "h3_cell").unique() \
        .group_by("user_pseudonym").len().rename({"len": "rows"})
    covered = (pairs.select("user_pseudonym", "row", "account_id").unique()
               .group_by("user_pseudonym", "account_id").len()
               .join(n_rows, on="user_pseudonym").filter(pl.col("len") == pl.col("rows")))
    single = covered.group_by("user_pseudonym").agg(pl.len().alias("n"),
                                                     pl.col("account_id").first()) \
        .filter(pl.col("n") == 1)
    found = sum(truth.get(a) == p for p, a in single.select("user_pseudonym", "account_id")
                .iter_rows())
    out = {"users": users, "all events": found / users}
    # m known events of a target
    rng = random.Random(seed)
    published_accounts = {a for a, p in truth.items() if p in set(published["user_pseudonym"])}
    by_account = raw.filter(pl.col("account_id").is_in(list(published_accounts))) \
        .group_by("account_id").agg("event")
    event_fits = pairs.select("event", "user_pseudonym").unique().group_by("event").agg(
        "user_pseudonym")
    fits = dict(zip(event_fits["event"], event_fits["user_pseudonym"], strict=True))
    for m in ms:
        hits = tried = 0
        for account, events in by_account.iter_rows():
            if len(events) < m:
                continue
            tried += 1
            known = rng.sample(events, m)
            cands = set.intersection(*(set(fits.get(e, [])) for e in known))
            hits += len(cands) == 1 and next(iter(cands)) == truth[account]
        out[f"m={m}"] = hits / tried if tried else 0.0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    import os

    import yaml

    from pipeline.config import load_config
    from pipeline.demo.generate import generate
    from pipeline.run import run_all

    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="linkage-"))
    doc = yaml.safe_load((root / "config" / "pipeline.yaml").read_text())
    doc["paths"] = {"data_root": str(tmp / "data"),
                    "event_schema": str(root / "schemas" / "events.yaml"),
                    "consent_schema": str(root / "schemas" / "consent.yaml"),
                    "purposes_dir": str(root / "schemas" / "purposes")}
    doc["keys"] = {"airflow_conn_id": None, "env_var": "LINKAGE_BENCH_KEY", "file": None,
                   "file_env_var": "LINKAGE_BENCH_KEY_FILE"}
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(doc))
    os.environ["LINKAGE_BENCH_KEY"] = KEY_TEXT
    cfg = load_config(tmp / "pipeline.yaml")
    start = date(2026, 11, 1)
    generate(tmp / "data", start=start, days=args.days, users=args.users, seed=args.seed)
    days = [start + timedelta(days=i) for i in range(args.days)]
    tables = []
    for d in days:
        ctx, ok = run_all(d, tmp / "pipeline.yaml")
        if ok:
            tables.append(ctx.storage.read(ctx.zone("published"), d))
    published = pl.concat(tables).with_columns(pl.col("event_date").cast(pl.String))
    raw = raw_events([tmp / "data" / "raw" / "events" / f"date={d}" / "events.jsonl"
                      for d in days], cfg.generalize.device_type_by_os)
    key = parse_key(KEY_TEXT, source="bench")
    accounts = raw.select("account_id").unique()
    truth = dict(accounts.with_columns(p=hmac_expr("account_id", key.pseudonym_key(
        cfg.purpose))).iter_rows())  # account -> its pseudonym, as pseudonymize makes it
    result = attack(published, raw, truth, [1, 2, 5], args.seed)
    k = cfg.k_anonymity.k
    print(f"{args.users} users x {args.days} day(s), {result['users']} published pseudonyms, "
          f"k = {k} (limit 1/k = {1 / k:.0%})")
    for name in ("all events", "m=1", "m=2", "m=5"):
        rate = result[name]
        print(f"  {name:<11} re-identified {rate:6.1%}  "
              f"{'within' if rate <= 1 / k else 'OVER'} 1/k")


if __name__ == "__main__":
    main()
