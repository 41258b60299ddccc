"""Erasure (the right to be forgotten) and consent withdrawal, applied to every stored partition.

Requests are JSON lines in `raw/erasure/requests.jsonl` (`{"account_id": ..., "requested_at":
...}`). One run removes those users from the raw landing zone (events and consent records),
every staging table and every published partition. Raw lines are replaced by a fixed marker
rather than deleted, so line numbers (which the quarantine points at) stay valid and ingest
counts them as dropped for erasure. Users who withdrew consent for the purpose are removed from
the published partitions, so what is served stops holding their rows from the next run on.
Users who reset their profile (`pipeline.transforms.consent`) lose what was derived from their
events before the reset: rows under their earlier pseudonyms (`old_pseudonyms`), and their
account's rows from before the reset (`drop_users(before=...)`).

What is not touched, and why: the quarantine holds file, line, reason and field, never a value;
released DP cohort features and the ledger hold noisy aggregates over many users, which are
anonymous; Feast holds only those cohort features (entity `cohort_id`), no per-user rows.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import IO, cast

import msgspec
import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.errors import ErasureRequestError, KeyUnavailableError, StorageError
from pipeline.core.fs import DataPath, atomic_writer, remove_tree
from pipeline.core.keys import MasterKey
from pipeline.core.records import ErasureRecord
from pipeline.core.storage import Storage
from pipeline.stages import ZONES, Zone
from pipeline.transforms.consent import REVOKED, users_whose_latest
from pipeline.transforms.ingest import BOM, ERASED_LINE, is_gzip, line_chunks, open_raw
from pipeline.transforms.profile import epoch_of, epoch_pseudonyms
from pipeline.transforms.pseudonymize import EPOCH, pseudonym_expr

# under the data root: the erasure_requests zone's one file
REQUESTS = Path(ZONES["erasure_requests"].path) / "requests.jsonl"


def read_requests(root: DataPath) -> list[str]:
    """Account ids asked to be erased (none when there is no request file)."""
    path = root / REQUESTS
    if not path.is_file():
        return []
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.append(str(json.loads(line)["account_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ErasureRequestError(f"{path}:{number}: not an erasure request "
                             f"({type(exc).__name__}); expected {{\"account_id\": ...}}") from None
    return sorted(set(ids))


def pseudonyms_of(account_ids: Iterable[str], keys: Iterable[MasterKey], purpose: str,
                  epochs: pl.DataFrame | None = None) -> list[str]:
    """Every pseudonym these accounts may carry: one per key in the ring (active and retired)
    and per pseudonym epoch they have had (`epochs`: `consent.all_epochs`; none before a
    reset)."""
    ids = pl.DataFrame({"account_id": list(account_ids)}, schema={"account_id": pl.String})
    table = ids.with_columns(pl.lit(None, dtype=pl.String).alias(EPOCH))
    if epochs is not None and epochs.height:
        table = pl.concat([table, epochs.filter(pl.col("account_id").is_in(list(ids["account_id"])))
                           .select("account_id", pl.col("epoch").alias(EPOCH))])
    return sorted(set().union(*(table.select(pseudonym_expr("account_id",
                                                            k.pseudonym_key(purpose)))
                                .to_series().to_list() for k in keys)))


def old_pseudonyms(current: pl.DataFrame, every: pl.DataFrame, keys: Iterable[MasterKey],
                   purpose: str) -> list[str]:
    """The pseudonyms users who reset their profile carried before their latest reset
    (`current`: `consent.pseudonym_epochs`; `every`: `consent.all_epochs`), under every key:
    what a reset erases."""
    if not current.height:
        return []
    ring = list(keys)
    now = current.select("account_id", pl.col("epoch").alias(EPOCH))
    carried = {p for k in ring for p in now.select(
        pseudonym_expr("account_id", k.pseudonym_key(purpose))).to_series().to_list()}
    accounts = current["account_id"].to_list()
    return sorted(set(pseudonyms_of(accounts, ring, purpose, every)) - carried)


def published_pseudonyms(pseudonyms: Sequence[str], keys: Iterable[MasterKey],
                         spec: PurposeSpec, days: Iterable[date]) -> list[str]:
    """What these users' staging pseudonyms (`pseudonyms_of`) are in the published partitions
    of `days`: themselves, or for a profile purpose their epoch pseudonyms (a new one each
    epoch, `pipeline.transforms.profile`)."""
    if spec.profile is None:
        return sorted(pseudonyms)
    epochs = sorted({epoch_of(d, spec.profile.epoch) for d in days})
    return epoch_pseudonyms(list(pseudonyms), keys, spec.purpose, epochs)


def erase_raw_lines(path: DataPath, account_ids: list[str], *,
                    max_line_bytes: int = 1 << 20) -> int:
    """Replace every line of a JSON-lines file that holds one of the ids by the erased marker,
    reading the file as ingest does (gzip by its magic number, a leading BOM) and matching by
    meaning: a string value equal to the id however it is escaped (`acct\\u002d...`), in any
    field or nested object, or, on a line that is not JSON, the id as a JSON string once its
    `\\uXXXX` escapes are decoded. A line longer than `max_line_bytes` (which ingest
    quarantines unread) is searched in bounded chunks, never held whole. Streamed twice
    (find, then rewrite through an atomic writer; a gzip file is written back compressed);
    returns lines replaced."""
    if not account_ids or not path.is_file():
        return 0
    hits = {number for number, _ in lines_holding(path, account_ids,
                                                  max_line_bytes=max_line_bytes)}
    if not hits:
        return 0
    with ExitStack() as stack:
        out: IO[bytes] = stack.enter_context(atomic_writer(path))
        if is_gzip(path):
            out = cast(IO[bytes], stack.enter_context(
                gzip.GzipFile(fileobj=out, mode="wb", mtime=0)))
        with open_raw(path) as src:
            for line in line_chunks(src, max_line_bytes):
                if line.number in hits:
                    out.write(ERASED_LINE + b"\n")
                    for _ in line.rest:
                        pass
                else:
                    out.write(line.head)
                    for chunk in line.rest:
                        out.write(chunk)
    return len(hits)


def lines_holding(path: DataPath, values: Sequence[str], *, max_line_bytes: int = 1 << 20
                  ) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line) of every line of a raw JSON-lines file that holds one of
    `values` by meaning (see `erase_raw_lines`); an over-long line comes as None, having been
    searched in bounded chunks, never held whole."""
    if not values or not path.is_file():
        return
    wanted = set(values)
    literal = re.compile(b"|".join(re.escape(json.dumps(v).encode()) for v in values))
    # How far back a match may start in the previous chunk: a value escaped char by char.
    overlap = 6 * max(len(json.dumps(v).encode()) for v in values)
    with open_raw(path) as src:
        for line in line_chunks(src, max_line_bytes):
            head = line.head.removeprefix(BOM) if line.number == 1 else line.head
            if line.too_long:
                found = _long_holds(itertools.chain([head], line.rest), literal, overlap)
                for _ in line.rest:  # what a match left unread of a long line
                    pass
                if found:
                    yield line.number, None
            elif _holds(head, wanted, literal):
                yield line.number, head


def holds_any(values: Sequence[str]) -> Callable[[bytes], bool]:
    """Whether a raw line (within the length limit) holds one of `values` by meaning, as
    `erase_raw_lines` finds them."""
    if not values:
        return lambda _line: False
    wanted = set(values)
    literal = re.compile(b"|".join(re.escape(json.dumps(v).encode()) for v in values))
    return lambda line: _holds(line, wanted, literal)


def _long_holds(chunks: Iterable[bytes], literal: re.Pattern[bytes], overlap: int) -> bool:
    """Does an over-long line hold an id, as a JSON string or with its `\\uXXXX` escapes
    decoded? Searched chunk by chunk, each with the end of the one before."""
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        unescaped = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode(), window)
        if literal.search(window) or literal.search(unescaped):
            return True
        tail = window[-overlap:]
    return False


_UNICODE_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")


def _holds(line: bytes, ids: set[str], literal: re.Pattern[bytes]) -> bool:
    """Does this raw line hold one of `ids` by meaning (see `erase_raw_lines`)?"""
    if line.rstrip() == ERASED_LINE:
        return False
    if literal.search(line):
        return True
    if b"\\" not in line:  # nothing escaped: the literal search was exact
        return False
    try:
        return bool(_strings(msgspec.json.decode(line)) & ids)
    except (msgspec.DecodeError, RecursionError):
        unescaped = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode(), line)
        return bool(literal.search(unescaped))


def _strings(value: object) -> set[str]:
    """Every string in a decoded JSON value (keys too)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {*value, *(s for v in value.values() for s in _strings(v))}
    if isinstance(value, list):
        return {s for v in value for s in _strings(v)}
    return set()


def drop_users(table: pl.DataFrame, account_ids: list[str], pseudonyms: list[str], *,
               before: pl.DataFrame | None = None, time_col: str = "event_time"
               ) -> pl.DataFrame:
    """`table` without the accounts' and pseudonyms' rows, nor (`before`: `account_id`,
    `_reset_at`) an account's rows from before its reset."""
    keep = pl.lit(True)
    if "account_id" in table.columns:
        keep &= ~pl.col("account_id").is_in(account_ids)
    for col in [c for c in table.columns if c.endswith("_pseudonym")]:
        keep &= ~pl.col(col).is_in(pseudonyms)
    if before is not None and before.height and {"account_id", time_col} <= set(table.columns):
        stale = table.select("account_id", time_col).join(
            before, on="account_id", how="left", maintain_order="left")
        keep &= ~pl.Series((stale[time_col] < stale["_reset_at"]).fill_null(False))
    return table.filter(keep)


def erase_from_zone(storage: Storage, zone: Zone, account_ids: list[str],
                    pseudonyms: list[str], result: ErasureRecord, *,
                    short: pl.Expr | None = None, key_ids: Iterable[str] = (),
                    before: pl.DataFrame | None = None) -> None:
    """Rewrite each partition of `zone` that holds one of the users, without them; with
    `short`, rows it marks afterwards (groups now short of k or ℓ) go too; with `before`,
    rows of an account from before its reset (`drop_users`).

    A partition whose pseudonyms were made under a key id not in `key_ids` cannot be searched
    for these users: that stops the run (a silent pass would leave them published); so does
    an encrypted partition that does not decrypt (a key problem, never "corrupt" data). An
    unreadable published (plaintext) partition is set aside and reported, not a blocker."""
    known = set(key_ids)
    for day in storage.dates(zone):
        spills = storage.spill_dir(zone, day)
        if spills.exists():  # a crashed stage's pieces: erasure holds the root alone, so no
            # running stage owns them; they may hold anyone's rows, so they all go
            result.add_removed(f"{zone.path}: pieces a crashed run left",
                               len(list(spills.glob("*"))))
            remove_tree(spills)
        try:
            if not storage.exists(zone, day):
                continue
            parts = storage.parts(zone, day)
            if short is None and len(parts) > 1:  # shard by shard: one in memory at a time
                _erase_shards(storage, zone, day, parts, account_ids, pseudonyms, result,
                              known=known, before=before)
                continue
            table = storage.read(zone, day)
        except StorageError as exc:
            if zone.sensitive:  # encrypted: unreadable means the key, not the file
                raise _undecryptable(storage, zone, day, exc) from None
            result.set_aside.append(str(storage.set_aside(zone, day).relative_to(storage.root)))
            continue
        _check_key_ids(storage, zone, day, table, known, pseudonyms)
        kept = drop_users(table, account_ids, pseudonyms, before=before)
        if kept.height == table.height:
            continue
        result.add_removed(zone.path, table.height - kept.height)
        if short is not None:
            safe = kept.filter(~short)
            result.add_removed(f"{zone.path}: groups now short of k or l",
                               kept.height - safe.height)
            kept = safe
        storage.write(zone, day, kept)
        result.partitions_rewritten += 1


def _undecryptable(storage: Storage, zone: Zone, day: date, exc: Exception
                   ) -> KeyUnavailableError:
    return KeyUnavailableError(
        f"{storage.partition_dir(zone, day)}: cannot be decrypted under key id "
        f"{storage.written_key_id(zone, day)!r} ({exc}); erasure stopped and "
        "moved nothing: restore that key (as retired if rotated) and rerun")


def _check_key_ids(storage: Storage, zone: Zone, day: date, table: pl.DataFrame,
                   known: set[str], pseudonyms: list[str]) -> None:
    if known and "pseudonym_key_id" in table.columns:
        unknown = set(table["pseudonym_key_id"].drop_nulls().unique()) - known
        if unknown and pseudonyms:
            raise KeyUnavailableError(
                f"{storage.partition_dir(zone, day)}: pseudonyms under key id(s) "
                f"{sorted(unknown)}, which the key ring no longer holds: erasure cannot "
                "find users there. Put the key back as retired, or run `privacy-pipeline "
                "rekey` for that date first.")


def _erase_shards(storage: Storage, zone: Zone, day: date, parts: list[DataPath],
                  account_ids: list[str], pseudonyms: list[str], result: ErasureRecord, *,
                  known: set[str], before: pl.DataFrame | None) -> None:
    """A sharded partition, one shard at a time: each shard that holds one of the users is
    rewritten in place (same shard file, atomically), the others are left as they are."""
    removed = 0
    for path in parts:
        try:
            table = storage.read_part(zone, day, path)
        except StorageError as exc:
            raise _undecryptable(storage, zone, day, exc) from None
        _check_key_ids(storage, zone, day, table, known, pseudonyms)
        kept = drop_users(table, account_ids, pseudonyms, before=before)
        if kept.height != table.height:
            storage.write_file(zone, day, path, kept)
            removed += table.height - kept.height
    if removed:
        result.add_removed(zone.path, removed)
        result.partitions_rewritten += 1


def withdrawn(consent: pl.DataFrame, purpose: str) -> list[str]:
    """Accounts whose latest decision for `purpose` is a withdrawal."""
    return users_whose_latest(consent, purpose, (REVOKED,))
