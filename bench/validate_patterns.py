"""The residual-PII and domain pattern checks: Great Expectations' pandas way against ours.

Run: python3 -m bench.validate_patterns [--rows 620000] [--table PUBLISHED.parquet]

Baseline (issue 30): GX's regex expectations on pandas run Python's `re` once per value
(`column.astype(str).str.contains(regex)`), 11.2 of the 19.8 s a 620k-row shard took to
validate. Ours (`pipeline.transforms.validate.expectations.matching_rows`) matches each distinct
value once with Polars' regex engine. Both count the rows the four residual-PII shapes and the
domain patterns match in every string column of a published table (by default a generated
day's, repeated to `--rows`), in one run; the counts must agree, and the ratio is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.transforms.validate.expectations import matching_rows
from pipeline.transforms.validate.suite import RESIDUAL_PII_PATTERNS

ROOT = Path(__file__).resolve().parents[1]


def _published(rows: int) -> pl.DataFrame:
    """A published table of a generated day, run through the pipeline, repeated to `rows`."""
    import os

    from pipeline.demo.generate import generate
    from pipeline.run import run_all
    from tests.conftest import TEST_KEY_TEXT, write_config

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRIVACY_PIPELINE_TEST_KEY"] = TEST_KEY_TEXT
        config = write_config(Path(tmp))
        generate(Path(tmp) / "data", start=date(2026, 11, 1), days=1, users=3000, seed=1)
        ctx, published = run_all("2026-11-01", config)
        assert published
        table = ctx.storage.read(ctx.zone("published"), date(2026, 11, 1))
    return _repeated(table, rows)


def _repeated(table: pl.DataFrame, rows: int) -> pl.DataFrame:
    return pl.concat([table] * -(-rows // table.height)).head(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=620_000)
    parser.add_argument("--table", help="a published Parquet file (default: generate a day)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = _repeated(pl.read_parquet(args.table), args.rows) if args.table else \
        _published(args.rows)
    strings = [c for c, t in table.schema.items() if t == pl.String]
    patterns = [*RESIDUAL_PII_PATTERNS.values(), r"^(?:\d{4}-\d{2}-\d{2})$"]
    frame = table.select(strings).to_pandas()
    started = time.perf_counter()
    gx_way = {(c, p): int(frame[c].dropna().astype(str).str.contains(p, regex=True).sum())
              for c in strings for p in patterns}
    gx_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = {(c, p): matching_rows(table.get_column(c), p) for c in strings for p in patterns}
    ours_s = time.perf_counter() - started
    assert ours == gx_way, "the counts differ"
    result = {"rows": table.height, "string_columns": len(strings), "patterns": len(patterns),
              "gx_pandas_s": round(gx_s, 2), "ours_s": round(ours_s, 3),
              "speedup": round(gx_s / ours_s, 1)}
    print(f"{table.height:,} rows x {len(strings)} string columns x {len(patterns)} patterns: "
          f"GX's pandas way {gx_s:.2f} s, ours {ours_s:.3f} s ({gx_s / ours_s:.0f}x), same "
          "counts")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
