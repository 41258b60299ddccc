"""How many users the published table links back to, at the user level, against 1/k.

The attacker is an insider holding the raw events with their account ids (a copy of the landing
zone) and the published table, and the project's code and config.

**Profiles** (the personalization purpose: one row per user and pseudonym epoch, k-anonymous
over every column, `pipeline.transforms.profile`). The attacker computes every account's exact
profile as the pipeline does (region from the offline geocoder, the age band, device type,
top interests, activity), which is as strong as it gets: here it is read from the generalized
zone, mapped to accounts. A published value matches an account's exact one when equal, or when
it is a generalization of it (`any`, `unknown`, a coarser age band).

**Event rows** (the purpose before profiles, `examples/purposes/personalization_events.yaml`,
as `minimize` made it from the same generalized zone). The attacker recomputes every column
they can from a raw event: the date, the day part of its hour, event type, category, device
type from the OS (config's map), the age band containing the age, and the H3 cell containing
the GPS point; `unknown` matches anything; region is not recomputed, so these are lower bounds.

- **all events**: a published pseudonym is re-identified when exactly one account could have
  produced every one of its published rows (all days of its epoch), and it is the right one;
- **m known events**: the attacker knows m random events of a target account and looks for
  the pseudonyms having published rows that fit each; the target is re-identified when exactly
  one pseudonym fits (for profiles: in any one epoch) and it is the target's.

k-anonymity promises at most 1/k of users singled out. Pseudonym epochs other than the
configured `day` are published here by the same transforms from the same generalized zone.

    python -m bench.linkage --users 2000 --days 1 [--seed 3] [--epochs day week stable]
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

from pipeline.config import PurposeSpec
from pipeline.config.files import read_yaml
from pipeline.core.keys import MasterKey, parse_key
from pipeline.transforms.generalize.coarsen import day_part
from pipeline.transforms.minimize import allowlisted
from pipeline.transforms.profile import (
    ANY,
    EVENTS,
    UNKNOWN,
    coarser_bands,
    epoch_of,
    history_of,
    publish_profiles,
    shard_profiles,
    user_profiles,
    with_epoch_pseudonym,
)
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
        for account, events in by_account.sort("account_id").iter_rows():
            if len(events) < m:
                continue
            tried += 1
            known = rng.sample(events, m)
            cands = set.intersection(*(set(fits.get(e, [])) for e in known))
            hits += len(cands) == 1 and next(iter(cands)) == truth[account]
        out[f"m={m}"] = hits / tried if tried else 0.0
    return out




# ------------------------------------------------------------------------ profiles


def _with_coarser(table: pl.DataFrame, coarser: list[list[int]]) -> pl.DataFrame:
    """The exact age band's coarser bands, as columns `age_band~1`, ..."""
    if "age_band" not in table.columns:
        return table
    return table.with_columns(coarser_bands(table["age_band"], edges).alias(f"age_band~{i}")
                              for i, edges in enumerate(coarser, start=1))


def _fits(published: str, column: str, coarser: list[list[int]]) -> pl.Expr:
    """A published value (column `published`) fits the exact one in `column`: equal, or a
    generalization of it."""
    ok = (pl.col(published) == pl.col(column)) | pl.col(published).is_in([ANY, UNKNOWN])
    if column == "age_band":
        for i in range(1, len(coarser) + 1):
            ok = ok | (pl.col(published) == pl.col(f"age_band~{i}"))
    return ok


def republish(generalized: dict[date, pl.DataFrame], spec: PurposeSpec, key: MasterKey, k: int,
              coarser: list[list[int]]) -> dict[date, pl.DataFrame]:
    """Each day's profile table as `minimize` makes it, with earlier days of the epoch as
    history: how another pseudonym epoch would have published the same days."""
    assert spec.profile is not None
    out: dict[date, pl.DataFrame] = {}
    for d in sorted(generalized):
        epoch = epoch_of(d, spec.profile.epoch)
        profiles, _ = shard_profiles(generalized[d], spec, key=key, epoch=epoch, k=k)
        history = history_of([t for e, t in out.items() if e < d
                              and epoch_of(e, spec.profile.epoch) == epoch], spec)
        table, _ = publish_profiles(profiles, spec, k=k, coarser_age_edges=coarser,
                                    history=history)
        out[d] = table.drop(EVENTS)
    return out


def profile_attack(published: dict[date, pl.DataFrame], generalized: dict[date, pl.DataFrame],
                   stable_to_account: dict[str, str], spec: PurposeSpec, key: MasterKey,
                   coarser: list[list[int]], ms: list[int], seed: int) -> dict[str, float]:
    """Both attacks on profile tables (see the module docstring)."""
    assert spec.profile is not None
    prof, user = spec.profile, spec.user_col
    cols = list(prof.computed)
    pairs, event_pairs, truth = [], [], {}
    accounts_events = []
    for d, table in published.items():
        epoch = epoch_of(d, prof.epoch)
        g = generalized[d].with_columns(
            pl.col(user).replace_strict(stable_to_account, default=None).alias("account_id"))
        exact = user_profiles(g.drop(user).rename({"account_id": user}), prof, user) \
            .rename({user: "account_id"})
        mine = with_epoch_pseudonym(pl.DataFrame({user: list(stable_to_account),
                                                  "account_id": list(
                                                      stable_to_account.values())}),
                                    user, key, spec.purpose, epoch)
        truth.update(dict(zip(mine[user], mine["account_id"], strict=True)))
        rows = table.select(user, *cols).rename({c: f"pub_{c}" for c in cols}) \
            .with_columns(epoch=pl.lit(epoch))
        both = rows.join(_with_coarser(exact, coarser).drop(EVENTS), how="cross")
        ok = pl.lit(True)
        for c in cols:
            ok = ok & _fits(f"pub_{c}", c, coarser)
        pairs.append(both.filter(ok).select(user, "epoch", "account_id"))
        # events as the attacker may know them: the context of each, on its date
        ev = g.select("account_id", *prof.context).with_columns(day=pl.lit(d)) \
            .with_row_index("event")
        accounts_events.append(ev)
        ctx_cols = list(prof.context)
        ep = (rows.select(user, "epoch", *(f"pub_{c}" for c in ctx_cols))
              .join(_with_coarser(ev.select(*ctx_cols).unique(), coarser), how="cross"))
        ok = pl.lit(True)
        for c in ctx_cols:
            ok = ok & _fits(f"pub_{c}", c, coarser)
        event_pairs.append(ep.filter(ok).select(user, "epoch", *ctx_cols)
                           .with_columns(day=pl.lit(d)))
    fit = pl.concat(pairs)
    rows_per = pl.concat([t.select(user) for t in published.values()]).group_by(user).len() \
        .rename({"len": "rows"})
    covered = (fit.group_by(user, "account_id").len().join(rows_per, on=user)
               .filter(pl.col("len") == pl.col("rows")))
    single = covered.group_by(user).agg(pl.len().alias("n"), pl.col("account_id").first()) \
        .filter(pl.col("n") == 1)
    found = sum(truth.get(p) == a for p, a in single.select(user, "account_id").iter_rows())
    users = rows_per.height
    out = {"users": users, "all events": found / users if users else 0.0}
    # m known events: which published pseudonyms each (day, context) fits
    ctx_cols = list(prof.context)
    fits = (pl.concat(event_pairs).group_by("day", *ctx_cols)
            .agg(pl.struct(user, "epoch").alias("cands")))
    fit_map = {(r["day"], *(r[c] for c in ctx_cols)): {(x[user], x["epoch"]) for x in r["cands"]}
               for r in fits.iter_rows(named=True)}
    published_accounts = {truth[p] for t in published.values() for p in t[user]}
    mine_of = {}
    for p, a in truth.items():
        mine_of.setdefault(a, set()).add(p)
    events = pl.concat(accounts_events).filter(pl.col("account_id").is_in(
        list(published_accounts)))
    by_account = events.group_by("account_id").agg(pl.struct("day", *ctx_cols).alias("ev"))
    rng = random.Random(seed)
    for m in ms:
        hits = tried = 0
        for account, evs in by_account.sort("account_id").iter_rows():
            if len(evs) < m:
                continue
            tried += 1
            known = rng.sample(evs, m)
            per_epoch: dict[str, list[set[str]]] = {}
            for e in known:
                key_ = (e["day"], *(e[c] for c in ctx_cols))
                cands = fit_map.get(key_, set())
                epoch = epoch_of(e["day"], prof.epoch)
                per_epoch.setdefault(epoch, []).append({p for p, ep in cands if ep == epoch})
            for sets in per_epoch.values():
                cands = set.intersection(*sets)
                if len(cands) == 1 and next(iter(cands)) in mine_of.get(account, ()):
                    hits += 1
                    break
        out[f"m={m}"] = hits / tried if tried else 0.0
    return out


def _line(name: str, result: dict[str, float], k: int) -> str:
    parts = [f"{m} {result[m]:6.1%}{'' if result[m] <= 1 / k else ' OVER'}"
             for m in ("all events", "m=1", "m=2", "m=5")]
    kept = f"  top interest kept {result['top_kept']:.1%}" if "top_kept" in result else ""
    return f"  {name:<24} {result['users']:>6} pseudonyms  " + "  ".join(parts) + kept


def top_kept(tables: dict[date, pl.DataFrame], generalized: dict[date, pl.DataFrame],
             spec: PurposeSpec) -> float:
    """Share of user-days whose top interest is published exact (not suppressed, not `any`):
    what personalization keeps."""
    assert spec.profile is not None
    top = spec.profile.interests.names[0]
    kept = sum(t.filter(pl.col(top) != ANY).height for t in tables.values())
    possible = sum(g[spec.user_col].n_unique() for g in generalized.values())
    return kept / possible if possible else 0.0


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--epochs", nargs="+", default=["day", "week", "stable"],
                   choices=["day", "week", "stable"])
    p.add_argument("--no-event-rows", action="store_true",
                   help="skip the event-row purpose (the baseline before profiles)")
    args = p.parse_args(argv)
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
    generalized, published = {}, {}
    for d in days:
        ctx, ok = run_all(d, tmp / "pipeline.yaml")
        if ok:
            generalized[d] = ctx.storage.read(ctx.zone("generalized"), d)
            published[d] = ctx.storage.read(ctx.zone("published"), d)
    key = parse_key(KEY_TEXT, source="bench")
    raw = raw_events([tmp / "data" / "raw" / "events" / f"date={d}" / "events.jsonl"
                      for d in days], cfg.generalize.device_type_by_os)
    accounts = raw.select("account_id").unique()
    truth = dict(accounts.with_columns(p=hmac_expr("account_id", key.pseudonym_key(
        cfg.purpose))).iter_rows())  # account -> its pseudonym, as pseudonymize makes it
    stable_to_account = {p_: a for a, p_ in truth.items()}
    k, spec = cfg.k_anonymity.k, cfg.purpose_spec
    coarser = [list(e) for e in cfg.generalize.age_band_coarser_edges]
    print(f"{args.users} users x {args.days} day(s), k = {k} (limit 1/k = {1 / k:.0%}); "
          f"share of published pseudonyms (or of targets) re-identified")
    results: dict[str, dict[str, float]] = {}
    if not args.no_event_rows:
        events_spec = PurposeSpec.model_validate(read_yaml(
            root / "examples" / "purposes" / "personalization_events.yaml"))
        rows = pl.concat([allowlisted(generalized[d], events_spec, k=k)[0] for d in generalized])
        results["event rows, stable"] = attack(rows.with_columns(
            pl.col("event_date").cast(pl.String)), raw, truth, [1, 2, 5], args.seed)
        print(_line("event rows, stable", results["event rows, stable"], k))
    if spec.profile:  # the same attack on profiles left exact: does it have teeth?
        name = "profiles, k = 1 (check)"
        exact = republish(generalized, spec, key, 1, coarser)
        results[name] = profile_attack(exact, generalized, stable_to_account, spec, key,
                                       coarser, [1, 2, 5], args.seed)
        results[name]["top_kept"] = top_kept(exact, generalized, spec)
        print(_line(name, results[name], k))
    for epoch in args.epochs:
        espec = spec.model_copy(update={"profile": spec.profile.model_copy(
            update={"epoch": epoch})}) if spec.profile else spec
        tables = published if spec.profile and epoch == spec.profile.epoch else republish(
            generalized, espec, key, k, coarser)
        name = f"profiles, {epoch} epoch"
        results[name] = profile_attack(tables, generalized, stable_to_account, espec, key,
                                       coarser, [1, 2, 5], args.seed)
        results[name]["top_kept"] = top_kept(tables, generalized, espec)
        print(_line(name, results[name], k))
    return results


if __name__ == "__main__":
    main()
