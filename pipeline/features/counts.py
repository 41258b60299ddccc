"""What the count features share: a noisy integer per cohort, clipped at 0 (post-processing),
published with its noise scale and 95% error bound, flagged where the bound exceeds it."""

from __future__ import annotations

import polars as pl

from pipeline.features.base import Noise, Released


def released_counts(columns: list[str], noise: Noise) -> Released:
    cols: list[pl.Expr] = []
    for c in columns:
        cols += [pl.col(c).cast(pl.Int64).clip(0, None),
                 pl.lit(noise.scale[c]).alias(f"{c}_noise_scale"),
                 pl.lit(noise.error95[c]).alias(f"{c}_error95")]
    flags = [(pl.col(c).is_null() | (pl.col(f"{c}_error95") > pl.col(c))).alias(f"{c}_unreliable")
             for c in columns]
    return Released(cols, flags=flags)
