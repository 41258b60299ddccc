"""Keyed pseudonyms: HMAC-SHA256 over whole columns, one derived key per purpose.

Never a bare or salted hash: without the key nobody can recompute a pseudonym from a guessed
e-mail or account id. The HMAC key is the lowercase hex of the 32-byte purpose key (polars-hash
takes its key as text); `hmac.new(key_hex.encode(), value, sha256)` gives the same digest.
"""

from __future__ import annotations

import re

import polars as pl
import polars_hash  # noqa: F401  (registers the `chash` namespace)

from pipeline.config import RecordSchema
from pipeline.core.details import PseudonymizeDetails
from pipeline.core.keys import MasterKey
from pipeline.core.records import StageStats

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)


def hmac_expr(column: str, key: bytes) -> pl.Expr:
    """HMAC-SHA256 (hex) of a string column under `key`; nulls stay null."""
    return _hmac_of(pl.col(column).cast(pl.String), key)


def _hmac_of(value: pl.Expr, key: bytes) -> pl.Expr:
    return value.chash.hmac_sha256(key=key.hex())  # type: ignore[attr-defined]


EPOCH = "_epoch"  # a reset user's pseudonym epoch (`pipeline.transforms.consent`), or null


def with_epoch(column: str) -> pl.Expr:
    """What a pseudonym is the HMAC of: the identifier, or for a user who reset their profile
    the identifier and their epoch, so nothing published after a reset equals anything
    before it."""
    value = pl.col(column).cast(pl.String)
    return (pl.when(pl.col(EPOCH).is_null()).then(value)
            .otherwise(pl.concat_str(value, pl.lit("\x1f"), pl.col(EPOCH))))


def pseudonym_expr(column: str, key: bytes) -> pl.Expr:
    """The pseudonym of `column` in its row's epoch (`EPOCH`), under `key`."""
    return _hmac_of(with_epoch(column), key)


def is_pseudonym(value: str) -> bool:
    return bool(_PSEUDONYM.match(value))


def pseudonymize_columns(table: pl.DataFrame, schema: RecordSchema, master: MasterKey, *,
                 purpose: str, epochs: pl.DataFrame | None = None
                 ) -> tuple[pl.DataFrame, StageStats]:
    """Replace each `handling: pseudonymize` column by its pseudonym column (`as:`).
    `epochs`: (`account_id`, `epoch`) of users who reset their profile, whose every
    pseudonym is made in their epoch (`with_epoch`)."""
    key = master.pseudonym_key(purpose)
    mapping = {n: schema.fields[n].as_ for n in schema.with_handling("pseudonymize")
               if n in table.columns}
    if epochs is not None and epochs.height and "account_id" in table.columns:
        table = table.join(epochs.select("account_id", pl.col("epoch").alias(EPOCH)),
                           on="account_id", how="left", maintain_order="left")
    else:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias(EPOCH))
    out = table.with_columns(
        *(pseudonym_expr(src, key).alias(dst) for src, dst in mapping.items() if dst),
        pseudonym_key_id=pl.lit(master.key_id),
    ).drop([*mapping, EPOCH])
    stats = StageStats(stage="pseudonymize", rows_in=table.height, rows_out=out.height,
                       details=PseudonymizeDetails(
        key_id=master.key_id, purpose=purpose, algorithm="HMAC-SHA256",
        key_derivation="HKDF-SHA256(master, info=privacy-pipeline/pseudonym:<purpose>)",
        columns=dict(mapping)))
    return out, stats.check_balanced()
