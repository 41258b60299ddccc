"""GPS generalization throughput and memory: adaptive H3 with the k check vs per-point h3.

Run: .venv/bin/python -m bench.generalize [--points 10000000] [--k 5]

Points: clustered around 60 metro areas with mixed spread (dense centres, sparse outskirts, some
lone points far out), ~5 per user. Ours
(`pipeline.transforms.generalize.coarsen.adaptive_h3_cells`): every point to its res-8 cell,
cells short of k users moved to their parent down to res 4, the rest suppressed, then k
measured. Baseline (issue 4): `h3.latlng_to_cell` called per point in Python at res 8, which
only indexes: no coarsening, no k check. Each runs in its own process, so peak
memory (max RSS, data included) is its own; the data alone is measured the same way.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import polars as pl

RES = 8


def points(n: int, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(25, 49, 60), rng.uniform(-123, -70, 60)])
    which = rng.integers(0, 60, n)
    spread = rng.choice([0.02, 0.1, 0.5, 3.0], size=n, p=[0.4, 0.35, 0.2, 0.05])
    lat = centres[which, 0] + rng.normal(0, 1, n) * spread
    lon = centres[which, 1] + rng.normal(0, 1, n) * spread
    return pl.DataFrame({"user": rng.integers(0, max(n // 5, 1), n),
                         "latitude": np.clip(lat, -89.9, 89.9), "longitude": lon})


def run(kind: str, n: int, k: int) -> dict:
    import h3

    from pipeline.config import load_config
    from pipeline.transforms.generalize.coarsen import adaptive_h3_cells
    from pipeline.transforms.generalize.kanon import k_achieved

    gen = load_config("config/pipeline.yaml").generalize
    gen = gen.model_copy(update={"h3_resolution": RES, "h3_floor_resolution": 4})
    data = points(n)
    start = time.perf_counter()
    result: dict = {}
    if kind == "ours":
        kept, info = adaptive_h3_cells(data, gen, user_col="user", k=k)
        result = {"k_achieved": k_achieved(kept, ["h3_cell"], "user"),
                  "rows_suppressed": info["rows_suppressed"],
                  "cells": kept["h3_cell"].n_unique(),
                  "levels": {str(a): b for a, b in kept["_level_h3_cell"].value_counts()
                             .sort("_level_h3_cell").iter_rows()}}
    elif kind == "baseline":
        lat, lon = data["latitude"].to_list(), data["longitude"].to_list()
        cells = [h3.latlng_to_cell(a, b, RES) for a, b in zip(lat, lon, strict=True)]
        result = {"cells": len(set(cells))}
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "seconds": seconds, "peak_rss_mb": rss_mb, **result}


def in_child(kind: str, n: int, k: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.generalize", "--child", kind,
                          "--points", str(n), "--k", str(k)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.points, args.k)))
        return
    n = args.points
    data_only = in_child("data", n, args.k)
    ours = in_child("ours", n, args.k)
    base = in_child("baseline", n, args.k)
    print(f"{n:,} GPS points, ~{n // 5:,} users, k={args.k}; the data alone peaks at "
          f"{data_only['peak_rss_mb']:,.0f} MB")
    print(f"\n{'method':<52}{'seconds':>9}{'points/s':>13}{'peak MB':>9}")
    for name, r in (("adaptive H3 res 8->4 + k check (ours, polars-h3)", ours),
                    ("h3.latlng_to_cell per point, res 8 only (baseline)", base)):
        print(f"{name:<52}{r['seconds']:>9.1f}{n / r['seconds']:>13,.0f}"
              f"{r['peak_rss_mb']:>9,.0f}")
    print(f"speed-up: {base['seconds'] / ours['seconds']:.1f}x, while doing more (coarsening "
          f"and the k check)")
    print(f"ours: k achieved {ours['k_achieved']}, {ours['cells']:,} cells published, "
          f"{ours['rows_suppressed']:,} points suppressed "
          f"({ours['rows_suppressed'] / n:.2%}); points per level (0 = res 8): {ours['levels']}")


if __name__ == "__main__":
    main()
