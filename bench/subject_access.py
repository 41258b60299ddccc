"""Subject access on a large day: time and peak memory of one request, against reading the day's
zones once.

Run: python3 -m bench.subject_access [--size 1M] [--requests 3] [--workdir DIR] [--json]

A day of `--size` generated events is run through every stage in shards of 250,000 lines (so
every zone holds several shards), then `privacy-pipeline subject-access` is run for
`--requests` people whose profiles were published (so every zone holds their rows), each in its
own process, whose peak resident memory is sampled.

Baseline (issue 26), measured in the same run: the floor, reading every partition the request
reads (raw events, every staging zone decrypted, pending, published, quarantine) once, shard by
shard, through the project's storage, with nothing kept. The ratio is a request's wall time over
it. Targets: a request on a 1M-event day in <= 30 s and <= 1 GB peak RSS.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psutil

from bench.scale import DAY, EVENTS_PER_USER, SIZES, _config

SHARD_LINES = 250_000


def _peak(cmd: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """(exit code, wall s, peak RSS MB of the process tree), sampled every 0.05 s."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0.0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
            peak = max(peak, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)
    proc.communicate()
    return proc.returncode, time.perf_counter() - started, peak


def _floor(config: Path) -> float:
    """Seconds to read every partition a request reads once, through the project's storage."""
    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.core.storage import Shards
    from pipeline.subjects.access import ZONES_HELD

    ctx = RunContext(load_config(config), run_date=date.today())
    started = time.perf_counter()
    raw = ctx.file("raw_events", "events.jsonl", date.fromisoformat(DAY))
    with raw.open("rb") as fh:
        while fh.read(1 << 24):
            pass
    for name in (*ZONES_HELD, "quarantine"):
        zone = ctx.zone(name)
        for day in ctx.storage.dates(zone):
            for shard in Shards(ctx.storage, zone, day):
                del shard
    return time.perf_counter() - started


def _people(config: Path, n: int) -> list[str]:
    """`n` accounts whose profiles were published."""
    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.transforms.erasure import pseudonyms_of
    from pipeline.transforms.profile import epoch_pseudonyms

    ctx = RunContext(load_config(config))
    published = set(ctx.storage.read(ctx.zone("published"), date.fromisoformat(DAY))[
        "user_pseudonym"].to_list())
    raw = ctx.file("raw_events", "events.jsonl", date.fromisoformat(DAY))
    found: list[str] = []
    with raw.open() as fh:
        for line in fh:
            try:
                account = json.loads(line).get("account_id")
            except ValueError:
                continue
            if not isinstance(account, str) or account in found:
                continue
            staging = pseudonyms_of([account], ctx.keys.keys, ctx.cfg.purpose)
            if set(epoch_pseudonyms(staging, ctx.keys.keys, ctx.cfg.purpose, [DAY])) \
                    & published:
                found.append(account)
                if len(found) == n:
                    break
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1M", choices=list(SIZES))
    p.add_argument("--requests", type=int, default=3)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-subject-"))
    work.mkdir(parents=True, exist_ok=True)
    config = _config(work, events_per_shard=SHARD_LINES)
    key = f"bench-1:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    env = {**os.environ, "BENCH_SCALE_KEY": key}
    os.environ["BENCH_SCALE_KEY"] = key
    cli = [sys.executable, "-m", "pipeline.cli", "--config", str(config)]
    users = round(SIZES[args.size] / EVENTS_PER_USER)
    subprocess.run([*cli, "generate", "--start", DAY, "--users", str(users)], env=env,
                   check=True, capture_output=True)
    started = time.perf_counter()
    run = subprocess.run([*cli, "run", "--date", DAY], env=env, capture_output=True)
    run_s = time.perf_counter() - started
    if run.returncode != 0:
        print(run.stderr.decode()[-3000:], file=sys.stderr)
        return 1
    floor = _floor(config)
    requests = []
    for i, person in enumerate(_people(config, args.requests)):
        code, wall, peak = _peak([*cli, "subject-access", "--account-id", person,
                                  "--out", str(work / f"archive-{i}")], env)
        requests.append({"exit": code, "wall_s": round(wall, 1), "peak_rss_mb": round(peak)})
    walls = sorted(r["wall_s"] for r in requests)
    result = {"size": args.size, "events": SIZES[args.size], "run_s": round(run_s, 1),
              "floor_s": round(floor, 1), "requests": requests,
              "median_wall_s": walls[len(walls) // 2] if walls else None,
              "ratio_to_floor": round(walls[len(walls) // 2] / floor, 2) if walls else None,
              "max_peak_rss_mb": max((r["peak_rss_mb"] for r in requests), default=None)}
    print(f"{args.size} events ({users:,} users), run in {run_s:.0f} s; floor (every zone "
          f"read once) {floor:.1f} s")
    for i, r in enumerate(requests):
        print(f"  request {i}: exit {r['exit']}, {r['wall_s']} s, peak {r['peak_rss_mb']} MB")
    print(f"median request {result['median_wall_s']} s = {result['ratio_to_floor']}x the "
          f"floor; targets: <= 30 s, <= 1024 MB")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
