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
    return pl.col(column).cast(pl.String).chash.hmac_sha256(  # type: ignore[attr-defined]
        key=key.hex())


def is_pseudonym(value: str) -> bool:
    return bool(_PSEUDONYM.match(value))


def pseudonymize_columns(table: pl.DataFrame, schema: RecordSchema, master: MasterKey, *,
                 purpose: str) -> tuple[pl.DataFrame, StageStats]:
    """Replace each `handling: pseudonymize` column by its pseudonym column (`as:`)."""
    key = master.pseudonym_key(purpose)
    mapping = {n: schema.fields[n].as_ for n in schema.with_handling("pseudonymize")
               if n in table.columns}
    out = table.with_columns(
        *(hmac_expr(src, key).alias(dst) for src, dst in mapping.items() if dst),
        pseudonym_key_id=pl.lit(master.key_id),
    ).drop(list(mapping))
    stats = StageStats(stage="pseudonymize", rows_in=table.height, rows_out=out.height,
                       details=PseudonymizeDetails(
        key_id=master.key_id, purpose=purpose, algorithm="HMAC-SHA256",
        key_derivation="HKDF-SHA256(master, info=privacy-pipeline/pseudonym:<purpose>)",
        columns=dict(mapping)))
    return out, stats.check_balanced()
