"""Strict text mode for free text a purpose publishes: only words many people use survive.

A detector misses what it has never seen: a rare surname, a street in a town it does not know,
a nickname. Those are rare words, and rare words are where people are told apart. In strict
mode a published text column keeps only the words that at least k distinct users wrote in the
partition; every other word becomes `<RARE>`, and a detector's typed token (`<PERSON:abc...>`,
one user's value) keeps only its type (`<PERSON>`). What is left is a vocabulary that k users
share, so no word in it can single one out.
"""

from __future__ import annotations

import polars as pl

from pipeline.core.details import StrictTextCounts
from pipeline.transforms.pii.tokens import TOKEN_PATTERN

RARE = "<RARE>"
# A word, a detector's token, or any other single non-space character (kept as it is).
_PIECES = rf"{TOKEN_PATTERN}|[\p{{L}}\p{{N}}][\p{{L}}\p{{N}}'’_-]*|[^\s\p{{L}}\p{{N}}]"


def strict_text(table: pl.DataFrame, column: str, user_col: str, k: int
                ) -> tuple[pl.DataFrame, StrictTextCounts]:
    """`column` with every word fewer than `k` distinct users wrote replaced by `<RARE>` and
    detector tokens by their bare type. Returns (table, words, kept and kept share)."""
    rows = table.select(pl.int_range(pl.len()).alias("_row"), user_col,
                        pl.col(column).str.extract_all(_PIECES).alias("_w"))
    words = rows.explode("_w").with_columns(pl.int_range(pl.len()).over("_row").alias("_i"),
                                            pl.col("_w").str.to_lowercase().alias("_key"))
    is_word = pl.col("_w").str.contains(r"^[\p{L}\p{N}]")
    users = (words.filter(is_word).group_by("_key")
             .agg(pl.col(user_col).n_unique().alias("_users")))
    out = (words.join(users, on="_key", how="left")
           .with_columns(pl.when(pl.col("_w").str.starts_with("<"))
                         .then(pl.col("_w").str.replace(r":[a-z]+>$", ">"))
                         .when(is_word & (pl.col("_users") < k)).then(pl.lit(RARE))
                         .otherwise(pl.col("_w")).alias("_w")))
    n_words = int(words.select(is_word.sum()).item() or 0)
    kept = int(out.select(is_word.sum()).item() or 0)
    joined = (out.sort("_row", "_i").group_by("_row", maintain_order=True)
              .agg(pl.col("_w").drop_nulls().str.join(" ").alias(column)))
    result = table.with_columns(
        pl.when(pl.col(column).is_null()).then(None)
        .otherwise(joined.get_column(column)).alias(column))
    return result, StrictTextCounts(words=n_words, kept=kept,
                                    kept_share=round(kept / n_words, 4) if n_words else 1.0)
