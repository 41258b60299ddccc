"""A day of 1M and 10M events: wall time, events/s, peak memory per stage, against the I/O floor.

Run: python3 -m bench.scale [--sizes 1M,10M] [--json] [--workdir DIR] [--rss-limit-gb 20]

For each size, in a fresh data root: `privacy-pipeline generate` writes one day (the generator
streams: its memory does not grow with the day), then `privacy-pipeline run` processes it as the
DAG would, every stage and the gate, in one process (with its PII worker processes). Memory is
the resident set of that process tree, sampled every 0.1 s and split by the stage running at the
time (from the run's stage outcome records).

Baseline (issue 17), measured in the same run on the same file: the I/O floor, Polars streaming
the day's JSON lines into Parquet (`scan_ndjson(...).sink_parquet`). The ratio is the pipeline's
wall time over it. Targets: 10M events <= 10 min end to end and peak RSS <= 4 GB, per-event cost
flat from 1M to 10M (within 20%), every size published.

`--rss-limit-gb` stops a run whose tree passes that much memory (this machine is shared), and
reports it as not published. With `--json`, the last line is
`{"1M": {"wall_s", "peak_rss_mb", "published", ...}, "10M": {...}, "distributed_equal": true}`.

`--sizes 30M` (optional, not in CI) runs a 30M-event day too; `--sizes 3M` is the day the
erasure target is set on.

Erasure: after each size's run, one person is erased from that day (the `erase` stage alone:
its raw file and every zone, a sharded day shard by shard); `"erase_one"` holds its wall time
and peak RSS (target, issue 30: <= 1.5 GB on a sharded 3M-event day).

Distributed: the first size's day is run again, from the same raw file and key, with
`scale.engine: dask` (a 2-worker cluster on this machine, started by the run) in shards of
250,000 lines; its published rows and k are compared with the embedded run's
(`distributed_equal`; `--no-distributed` skips it, and the value is then null). Its table splits
each stage's time between the workers (the stage's maps, `mapped_s` in its outcome record) and
the stage's own process; the JSON ends with `"driver_share"`, the largest share of a data
stage's time (ingest to the DP release: the stages whose work grows with the day) spent
outside the workers.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import msgspec
import polars as pl
import psutil
import yaml

from pipeline.stages import DAILY

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-01"
EVENTS_PER_USER = 9.7  # the generator's mean events per user and day (measured)
SIZES = {"100k": 100_000, "1M": 1_000_000, "3M": 3_000_000,  # 100k: a quick check
         "10M": 10_000_000,
         "30M": 30_000_000}  # 30M: optional, ~16 GB of disk and ~1 h; not in CI
# The stages whose work grows with the events of the day: each must run (almost) all of it on
# the workers. The others are not in `driver_share`: erasure and the consent log's import (per
# user, in one transaction), the re-identification check, the ledger, Feast and the report.
DATA_STAGES = ("check_input", "ingest", "consent", "detect_pii", "pseudonymize", "generalize",
               "minimize", "validate", "features")


def _config(root: Path, **scale: object) -> Path:
    """A copy of config/pipeline.yaml whose data root is `root`, key from the environment,
    with these `scale` settings."""
    doc = yaml.safe_load((ROOT / "config" / "pipeline.yaml").read_text())
    doc["scale"] = {**doc.get("scale", {}), **scale}
    config_dir = ROOT / "config"  # every other relative path, as the original resolves it
    doc["paths"] = {**{k: str((config_dir / v).resolve()) if isinstance(v, str) else v
                       for k, v in doc["paths"].items()},
                    "data_root": str(root / "data")}
    doc["keys"] = {"airflow_conn_id": None, "env_var": "BENCH_SCALE_KEY",
                   "file_env_var": "BENCH_SCALE_KEY_FILE", "file": None}
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "--config", str(config), *args]


def _watch(cmd: list[str], env: dict[str, str], limit_mb: float
           ) -> tuple[int | None, float, list[tuple[float, float]]]:
    """Run `cmd`; (exit code or None if stopped over the limit, wall s, [(time, tree RSS MB)])."""
    started = time.time()
    # on a terminal the command draws its own progress bar (stage, shard i of n, rows/s)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=None if sys.stderr.isatty() else subprocess.PIPE, text=True)
    top, samples = psutil.Process(proc.pid), []
    while proc.poll() is None:
        try:
            tree = [top, *top.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20
        except psutil.Error:
            rss = 0.0
        samples.append((time.time(), rss))
        if rss > limit_mb:
            for p in top.children(recursive=True):
                p.kill()
            proc.kill()
            proc.wait()
            return None, time.time() - started, samples
        time.sleep(0.1)
    if proc.returncode not in (0, 3):  # 3: ran, but the gate did not publish
        sys.stderr.write(proc.stderr.read() if proc.stderr else "")
    return proc.returncode, time.time() - started, samples


def _per_stage(data: Path, samples: list[tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Wall seconds and peak tree RSS (MB) of each stage, in run order, from the times in its
    outcome record."""
    rows = []
    for path in (data / "runs").glob(f"*/date={DAY}/outcomes/*.json"):
        o = json.loads(path.read_text())
        if o.get("finished_at"):
            t0 = datetime.fromisoformat(o["started_at"]).timestamp()
            t1 = datetime.fromisoformat(o["finished_at"]).timestamp()
            peak = max((rss for t, rss in samples if t0 - 0.1 <= t <= t1 + 0.1), default=0.0)
            rows.append((t0, o["stage"], {"wall_s": round(t1 - t0, 2),
                                          "peak_rss_mb": round(peak),
                                          "mapped_s": round(o.get("mapped_s") or 0.0, 2)}))
    return {stage: figures for _, stage, figures in sorted(rows)}


def io_floor(events: Path, work: Path) -> float:
    """Seconds for Polars to stream the day's JSON lines into Parquet. Polars stops at a line
    that is not JSON, so it reads a copy without the malformed ones (~0.2%; not timed)."""
    clean, out = work / "floor.jsonl", work / "floor.parquet"
    with events.open("rb") as src, clean.open("wb") as dst:
        for line in src:
            try:
                msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            dst.write(line)
    started = time.perf_counter()
    pl.scan_ndjson(clean, infer_schema_length=10_000).sink_parquet(out)
    elapsed = time.perf_counter() - started
    clean.unlink()
    out.unlink()
    return elapsed


_TASK = ("import sys; from pipeline.run import run_stage; "
         "run_stage(*sys.argv[1:4], run_id=sys.argv[4])")
_GATE = "import sys; from pipeline.run import gate_daily_run; gate_daily_run(*sys.argv[1:4])"


def _run_as_tasks(config: Path, env: dict[str, str], limit_mb: float
                  ) -> tuple[int | None, float, dict[str, dict[str, float]], float]:
    """The daily stages as the DAG runs them, one process each under one run id, then the
    gate: (exit code, wall s, per stage figures, peak MB). Stops at the first failure."""
    run_id, wall, stages = f"bench-{secrets.token_hex(4)}", 0.0, {}
    for stage in (*DAILY, "gate"):
        code, secs, samples = _watch([sys.executable, "-c", _GATE if stage == "gate" else _TASK,
                                      *([stage] if stage != "gate" else []), DAY, str(config),
                                      run_id], env, limit_mb)
        wall += secs
        stages[stage] = {"wall_s": round(secs, 2),
                         "peak_rss_mb": round(max((r for _, r in samples), default=0))}
        if code != 0:
            return code, wall, stages, max(s["peak_rss_mb"] for s in stages.values())
    return 0, wall, stages, max(s["peak_rss_mb"] for s in stages.values())


def run_size(label: str, events: int, work: Path, limit_mb: float, key: str, *,
             as_tasks: bool = False) -> dict[str, object]:
    work.mkdir(parents=True, exist_ok=True)
    config = _config(work)
    env = {**os.environ, "BENCH_SCALE_KEY": key}
    users = round(events / EVENTS_PER_USER)
    started = time.time()
    gen, gen_s, gen_samples = _watch(_cli(config, "generate", "--start", DAY, "--users",
                                          str(users)), env, limit_mb)
    if gen != 0:
        raise SystemExit(f"{label}: generate failed ({gen})")
    day_file = work / "data" / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    with day_file.open("rb") as fh:
        lines = sum(1 for _ in fh)
    floor_s = io_floor(day_file, work)
    if as_tasks:
        code, wall_s, stages, peak = _run_as_tasks(config, env, limit_mb)
    else:
        code, wall_s, samples = _watch(_cli(config, "run", "--date", DAY), env, limit_mb)
        stages = _per_stage(work / "data", samples)
        peak = max((r for _, r in samples), default=0)
    result: dict[str, object] = {
        "events": lines, "users": users, "raw_gb": round(day_file.stat().st_size / 1e9, 2),
        "generate_s": round(gen_s, 1),
        "generate_peak_rss_mb": round(max((r for _, r in gen_samples), default=0)),
        "wall_s": round(wall_s, 1), "events_per_s": round(lines / wall_s),
        "us_per_event": round(wall_s / lines * 1e6, 1),
        "peak_rss_mb": round(peak), "mode": "tasks" if as_tasks else "run",
        "io_floor_s": round(floor_s, 1), "ratio_to_floor": round(wall_s / floor_s, 1),
        "published": code == 0, "stopped_over_rss_limit": code is None,
        "stages": stages, "total_s": round(time.time() - started, 1)}
    return result


def erase_one(work: Path, limit_mb: float, key: str) -> dict[str, object]:
    """Erase one person from the day the run left in `work` (its raw file and every zone, a
    sharded day's shard by shard): the erase stage alone, its wall time and peak RSS."""
    raw = work / "data" / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    with raw.open("rb") as fh:
        account = next(e["account_id"] for line in fh
                       if isinstance(e := _loads(line), dict) and e.get("account_id"))
    requests = work / "data" / "raw" / "erasure" / "requests.jsonl"
    requests.parent.mkdir(parents=True, exist_ok=True)
    requests.write_text(json.dumps({"account_id": account}) + "\n")
    code, wall_s, samples = _watch(_cli(work / "pipeline.yaml", "stage", "erase", "--date", DAY),
                                   {**os.environ, "BENCH_SCALE_KEY": key}, limit_mb)
    record = json.loads((work / "data" / "runs" / "personalization" / f"date={DAY}" /
                         "erasure.json").read_text()) if code == 0 else {}
    return {"wall_s": round(wall_s, 1), "ok": code == 0,
            "peak_rss_mb": round(max((r for _, r in samples), default=0)),
            "partitions_rewritten": record.get("partitions_rewritten")}


def _loads(line: bytes) -> object:
    try:
        return json.loads(line)
    except ValueError:  # the generator writes some malformed lines
        return None


def _published(work: Path) -> tuple[pl.DataFrame, int]:
    """The day's published rows (sorted) and the k its generalization achieved."""
    data = work / "data"
    table = pl.read_parquet(data / "published" / "personalization" / f"date={DAY}" / "*.parquet")
    stats = json.loads((data / "runs" / "personalization" / f"date={DAY}" /
                        "generalize.json").read_text())
    return table.sort(table.columns), stats["details"]["k_achieved"]


def run_distributed(work: Path, limit_mb: float, key: str) -> dict[str, object]:
    """The day in `work` again, on a 2-worker Dask cluster, from a copy of its raw input, in
    shards of 250,000 lines (so the workers have several tasks each; sharding does not change
    what is published)."""
    dask_work = work.with_name(f"{work.name}-dask")
    shutil.copytree(work / "data" / "raw", dask_work / "data" / "raw")
    config = _config(dask_work, engine="dask", dask_workers=2, events_per_shard=250_000)
    code, wall_s, samples = _watch(_cli(config, "run", "--date", DAY),
                                   {**os.environ, "BENCH_SCALE_KEY": key}, limit_mb)
    stages = _per_stage(dask_work / "data", samples)
    for figures in stages.values():  # time outside the workers: the stage's own process
        figures["driver_s"] = round(max(0.0, figures["wall_s"] - figures["mapped_s"]), 2)
        figures["driver_share"] = round(figures["driver_s"] / max(figures["wall_s"], 1e-9), 3)
    data = [s for name, s in stages.items() if name in DATA_STAGES]
    result: dict[str, object] = {
        "wall_s": round(wall_s, 1), "peak_rss_mb": round(max((r for _, r in samples), default=0)),
        "published": code == 0, "stages": stages,
        "driver_share": max((s["driver_share"] for s in data), default=None),
        "driver_s_all_stages": round(sum(s["driver_s"] for s in stages.values()), 1)}
    if code == 0:
        (rows, k), (dask_rows, dask_k) = _published(work), _published(dask_work)
        result.update(rows=rows.height, k=k, dask_k=dask_k,
                      equal=rows.equals(dask_rows) and k == dask_k)
    shutil.rmtree(dask_work)
    return result


def _print(label: str, r: dict) -> None:
    print(f"\n{label}: {r['events']:,} events ({r['users']:,} users, {r['raw_gb']} GB of JSON "
          f"lines); generated in {r['generate_s']} s, peak {r['generate_peak_rss_mb']:,} MB")
    print(f"{'stage':<14}{'wall s':>8}{'peak RSS MB':>13}")
    for name, s in r["stages"].items():
        print(f"{name:<14}{s['wall_s']:>8}{s['peak_rss_mb']:>13,}")
    verdict = "published" if r["published"] else (
        "STOPPED over the RSS limit" if r["stopped_over_rss_limit"] else "NOT published")
    print(f"run: {r['wall_s']} s, {r['events_per_s']:,} events/s, {r['us_per_event']} µs/event, "
          f"peak {r['peak_rss_mb']:,} MB; {verdict}")
    print(f"I/O floor (Polars JSON lines -> Parquet, same file, same run): {r['io_floor_s']} s; "
          f"pipeline / floor = {r['ratio_to_floor']}x")


def _print_split(stages: dict[str, dict]) -> None:
    print(f"\nDask run, per stage: time on the workers (maps) and in the stage's own process "
          f"(the scheduler side)\n{'stage':<14}{'wall s':>8}{'workers s':>11}{'driver s':>10}"
          f"{'driver %':>10}")
    for name, s in stages.items():
        mark = "" if name in DATA_STAGES else "  (not in driver_share)"
        print(f"{name:<14}{s['wall_s']:>8}{s['mapped_s']:>11}{s['driver_s']:>10}"
              f"{100 * s['driver_share']:>9.1f}%{mark}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1M,10M", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--workdir", help="where the data roots go (default: a temp dir, "
                        "removed after)")
    parser.add_argument("--rss-limit-gb", type=float, default=20.0)
    parser.add_argument("--no-distributed", action="store_true",
                        help="skip the Dask run of the first size")
    parser.add_argument("--as-tasks", action="store_true",
                        help="each stage in its own process, as the DAG's tasks (default: one "
                             "`privacy-pipeline run` process)")
    args = parser.parse_args()
    labels = [s.strip() for s in args.sizes.split(",")]
    unknown = [s for s in labels if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {list(SIZES)}")
    results: dict[str, object] = {}
    limit, distributed = args.rss_limit_gb * 1024, None
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for i, label in enumerate(labels):
            key = f"bench-scale:{base64.b64encode(secrets.token_bytes(32)).decode()}"
            r = run_size(label, SIZES[label], Path(tmp) / label, limit, key,
                         as_tasks=args.as_tasks)
            _print(label, r)
            results[label] = r
            if i == 0 and r["published"] and not args.no_distributed:
                distributed = run_distributed(Path(tmp) / label, limit, key)
                results[f"{label}_dask"] = distributed
                _print_split(distributed["stages"])
                print(f"\n{label} on Dask (2 local workers): {distributed['wall_s']} s "
                      f"({distributed['wall_s'] / r['wall_s']:.2f}x the embedded run), peak "
                      f"{distributed['peak_rss_mb']:,} MB; same published rows and k as "
                      f"embedded: {distributed.get('equal', False)}")
            if r["published"]:  # after the Dask run, which copies the raw file as it was
                r["erase_one"] = erase_one(Path(tmp) / label, limit, key)
                e = r["erase_one"]
                print(f"\n{label}: erasing one person (the erase stage alone): {e['wall_s']} s, "
                      f"peak {e['peak_rss_mb']:,} MB, partitions rewritten "
                      f"{e['partitions_rewritten']}{'' if e['ok'] else '; FAILED'}")
    sized = [results[lb] for lb in labels if results[lb]["published"]]  # type: ignore[index]
    if len(sized) >= 2:
        costs = [r["us_per_event"] for r in sized]
        print(f"\nper-event cost from smallest to largest: {costs[-1] / costs[0]:.2f}x "
              "(target: within 1.2x)")
    results["distributed_equal"] = (None if distributed is None
                                    else bool(distributed.get("equal", False)))
    # the largest share of a data stage's time spent outside the workers, on Dask
    results["driver_share"] = None if distributed is None else distributed["driver_share"]
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
