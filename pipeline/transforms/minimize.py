"""Keep exactly the columns a purpose's allowlist names, in its order."""

from __future__ import annotations

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.errors import PipelineError
from pipeline.core.records import StageStats


def apply_allowlist(table: pl.DataFrame, spec: PurposeSpec) -> tuple[pl.DataFrame, StageStats]:
    missing = [c for c in spec.columns if c not in table.columns]
    if missing:
        raise PipelineError(f"purpose {spec.purpose!r}: allowlisted columns missing from the "
                            f"generalized table: {missing}")
    removed = [c for c in table.columns if c not in spec.columns]
    out = table.select(spec.columns)
    stats = StageStats(stage="minimize", rows_in=table.height, rows_out=out.height,
                       details={"purpose": spec.purpose, "columns_kept": list(spec.columns),
                                "columns_removed": removed})
    return out, stats.check_balanced()
