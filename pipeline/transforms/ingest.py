"""Raw JSON lines -> a typed events table plus a quarantine table.

Lines are decoded and type-checked against the declared schema by msgspec (C speed, errors that
name the field but never the value), in batches so memory stays flat; range and allowed-value
checks then run as column expressions. A line that does not fit goes to quarantine as
(file, line, reason, field): the quarantine holds no raw values, only where to find them in the
raw landing zone, which keeps its own access control and retention.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import IO, Annotated, Any, NotRequired, Optional, Required, TypedDict, cast

import msgspec
import polars as pl

from pipeline.config import FieldSpec, IngestConfig, RecordSchema
from pipeline.core.errors import ConfigError, StorageError
from pipeline.core.fs import DataPath
from pipeline.core.records import StageStats
from pipeline.transforms.pseudonymize import hmac_expr

# What an erased user's raw line is replaced by: line numbers (and the quarantine's pointers to
# them) stay valid, and the funnel counts the line as dropped for erasure.
ERASED_LINE = b'{"_erased": true}'
QUARANTINE_SCHEMA = {"source_file": pl.String, "line_number": pl.Int64, "reason": pl.String,
                     "field": pl.String}
# Integers are bounded to int64 while decoding: a larger one is out of range, not a crash.
_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_PY_TYPES: dict[str, Any] = {"string": str, "integer": _INT64, "number": float, "boolean": bool,
                             "timestamp": str}
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
_PL_TYPES: dict[str, pl.DataType] = {"string": pl.String(), "integer": pl.Int64(),
                                     "number": pl.Float64(), "boolean": pl.Boolean(),
                                     "timestamp": pl.String()}
_FIELD_IN_ERROR = re.compile(r"`\$\.([A-Za-z0-9_]+)`|required field `([A-Za-z0-9_]+)`")


@dataclass(frozen=True)
class IngestResult:
    table: pl.DataFrame
    quarantine: pl.DataFrame
    stats: StageStats


def _decoder(schema: RecordSchema) -> msgspec.json.Decoder:
    fields: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        py = _PY_TYPES[spec.type]
        fields[name] = Required[py] if spec.required else NotRequired[Optional[py]]  # noqa: UP045
    record = TypedDict(f"{schema.name}_record", fields)  # type: ignore[misc]
    return msgspec.json.Decoder(record)


def _classify(exc: Exception, line: bytes) -> tuple[str, str | None]:
    """Map a msgspec error to (reason, field). The message itself is not kept. Invalid UTF-8
    is told by decoding the line, not by the error's type (msgspec 0.23 changed it)."""
    if isinstance(exc, msgspec.ValidationError):
        msg = str(exc)
        m = _FIELD_IN_ERROR.search(msg)
        field_name = (m.group(1) or m.group(2)) if m else None
        if "missing required field" in msg or "got `null`" in msg:
            return "missing_field", field_name
        if "<=" in msg or ">=" in msg:
            return "out_of_range", field_name
        return "wrong_type", field_name
    if isinstance(exc, RecursionError):
        return "nested_too_deep", None
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    return "malformed_json", None


def is_gzip(path: DataPath) -> bool:
    """Is the file gzip-compressed (by its magic number, whatever its name)?"""
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_raw(path: DataPath) -> IO[bytes]:
    """The file's bytes; a gzip-compressed file (`is_gzip`) is read through gzip."""
    compressed = is_gzip(path)
    raw = path.open("rb")
    if compressed:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    # An object store's file (fsspec) reads lines without a size limit: buffer it so
    # `readline(limit)` bounds every line read.
    return raw if isinstance(raw, io.BufferedIOBase) else cast(
        IO[bytes], io.BufferedReader(cast(io.RawIOBase, raw), buffer_size=1 << 20))


class InputTooLargeError(StorageError):
    """A raw file decompresses to more than `ingest.max_decompressed_bytes`."""


@dataclass(frozen=True)
class RawLine:
    """One line of a raw file, read in bounded pieces: `head` is the whole line, or for a line
    over the limit its first limit + 1 bytes, with the rest to come from `rest` 1 MiB at a
    time (consume it before the next line)."""

    number: int
    head: bytes
    rest: Iterator[bytes]
    too_long: bool


def line_chunks(fh: IO[bytes], limit: int) -> Iterator[RawLine]:
    """Every line of `fh` (see `RawLine`): no line is ever held whole beyond `limit` + 1
    bytes, so a 5 GB line costs no more memory than a short one."""
    number = 0
    while head := fh.readline(limit + 1):
        number += 1
        too_long = len(head) > limit and not head.endswith(b"\n")
        yield RawLine(number, head, _rest_of_line(fh) if too_long else iter(()), too_long)


def _rest_of_line(fh: IO[bytes]) -> Iterator[bytes]:
    while rest := fh.readline(1 << 20):
        yield rest
        if rest.endswith(b"\n"):
            return


def iter_lines(path: DataPath, limits: IngestConfig) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of every line, decompressed as ingest reads it (gzip by its magic
    number, a leading BOM removed); a line over `limits.max_line_bytes` comes as None, read
    past in bounded chunks so it is never held whole."""
    total = 0
    with open_raw(path) as fh:
        for line in line_chunks(fh, limits.max_line_bytes):
            total += len(line.head)
            for rest in line.rest:
                total += len(rest)
                if total > limits.max_decompressed_bytes:
                    break
            if total > limits.max_decompressed_bytes:
                raise InputTooLargeError(
                    f"{path}: decompresses to more than ingest.max_decompressed_bytes "
                    f"({limits.max_decompressed_bytes:,} bytes); refusing the file")
            if line.too_long:
                yield line.number, None
            else:  # a BOM is written by some editors and exporters
                yield line.number, line.head.removeprefix(BOM) if line.number == 1 \
                    else line.head


def count_lines(path: DataPath, limits: IngestConfig) -> int:
    """Lines as ingest will read them (a gzip file's decompressed lines)."""
    if is_gzip(path):
        return sum(1 for _ in iter_lines(path, limits))
    return sum(newlines_in(path, r) for r in byte_ranges(path, 1, limits)) + \
        unterminated(path)


def newlines_in(path: DataPath, r: ByteRange) -> int:
    """Newline bytes in a range of an uncompressed file, read 16 MiB at a time: with
    `_unterminated`, the lines ingest reads (it splits at newlines only)."""
    n = 0
    with path.open("rb") as fh:
        fh.seek(r.start)
        left = None if r.end is None else r.end - r.start
        while left is None or left > 0:
            chunk = fh.read(1 << 24 if left is None else min(1 << 24, left))
            if not chunk:
                break
            n += chunk.count(b"\n")
            if left is not None:
                left -= len(chunk)
    return n


def unterminated(path: DataPath) -> int:
    """1 if the file's last line has no newline (it is still a line), else 0."""
    size = path.stat().st_size
    if not size:
        return 0
    with path.open("rb") as fh:
        fh.seek(size - 1)
        return int(fh.read(1) != b"\n")


@dataclass(frozen=True)
class ByteRange:
    """A part of a raw file: the lines whose first byte lies in [start, end). `end` None: to
    the end (a gzip file is one range: it cannot be entered mid-way)."""

    index: int
    start: int
    end: int | None


def byte_ranges(path: DataPath, n: int, limits: IngestConfig) -> list[ByteRange]:
    """The file as `n` ranges of about equal size, for `n` workers to decode side by side."""
    if is_gzip(path):
        return [ByteRange(0, 0, None)]
    size = path.stat().st_size
    if size > limits.max_decompressed_bytes:
        raise InputTooLargeError(f"{path}: more than ingest.max_decompressed_bytes "
                                 f"({limits.max_decompressed_bytes:,} bytes); refusing the file")
    step = max(1, -(-size // max(1, n)))
    starts = list(range(0, size, step)) or [0]
    return [ByteRange(i, a, None if i == len(starts) - 1 else a + step)
            for i, a in enumerate(starts)]


def range_lines(path: DataPath, r: ByteRange, limits: IngestConfig
                ) -> Iterator[tuple[int, bytes | None]]:
    """`iter_lines` of one range, numbered from 1 within it."""
    if r.start == 0 and r.end is None:
        yield from iter_lines(path, limits)
        return
    limit = limits.max_line_bytes
    with open_raw(path) as fh:
        pos = r.start
        if r.start > 0:  # the line that began before the range is the previous range's
            fh.seek(r.start - 1)
            pos = r.start - 1
            while chunk := fh.readline(1 << 20):
                pos += len(chunk)
                if chunk.endswith(b"\n"):
                    break
        number = 0
        while r.end is None or pos < r.end:
            head = fh.readline(limit + 1)
            if not head:
                return
            number, pos = number + 1, pos + len(head)
            if len(head) > limit and not head.endswith(b"\n"):
                for rest in _rest_of_line(fh):
                    pos += len(rest)
                yield number, None
            else:
                yield number, head.removeprefix(BOM) if pos == len(head) else head


def piece_ranges(path: DataPath, r: ByteRange, piece_bytes: int) -> list[ByteRange]:
    """`r` in pieces of about `piece_bytes` (one piece for a gzip file)."""
    if r.end is None and is_gzip(path):
        return [r]
    end = path.stat().st_size if r.end is None else r.end
    starts = list(range(r.start, end, piece_bytes)) or [r.start]
    return [ByteRange(i, a, min(end, a + piece_bytes)) for i, a in enumerate(starts)]


def decode_piece(path: DataPath, schema: RecordSchema, piece: ByteRange, *, source_name: str,
                 limits: IngestConfig, day: date | None, batch_lines: int
                 ) -> list[DecodedBatch]:
    """One piece of a file decoded (what a decoding process does), lines numbered within it."""
    return list(decoded_lines(range_lines(path, piece, limits), schema, source_name=source_name,
                              batch_lines=batch_lines, limits=limits, day=day))


PIECE_BYTES = 48 << 20  # ~85k generated events: one batch each, decoded by one process


def decoded_range(path: DataPath, schema: RecordSchema, r: ByteRange, *, source_name: str,
                  limits: IngestConfig, day: date | None, processes: int = 1,
                  batch_lines: int = 100_000, piece_bytes: int = PIECE_BYTES
                  ) -> Iterator[DecodedBatch]:
    """The range decoded in pieces, in order, lines numbered within the range. With
    `processes` > 1 the pieces are decoded side by side by that many processes (decoding
    needs no key: they are handed bytes and give back tables), at most two pieces each in
    flight, so memory stays bounded."""
    pieces = piece_ranges(path, r, piece_bytes)
    decode = partial(decode_piece, path, schema, source_name=source_name, limits=limits,
                     day=day, batch_lines=batch_lines)
    offset = 0
    for batches in _in_order(decode, pieces, processes):
        for b in batches:
            yield _offset(b, offset)
        offset += sum(b.lines for b in batches)


def _in_order(fn: Callable[[ByteRange], list[DecodedBatch]], pieces: list[ByteRange],
              processes: int) -> Iterator[list[DecodedBatch]]:
    if processes <= 1 or len(pieces) == 1:
        yield from map(fn, pieces)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = deque(pool.submit(fn, p) for p in pieces[:2 * processes])
        for nxt in pieces[2 * processes:]:
            done = pending.popleft().result()
            pending.append(pool.submit(fn, nxt))
            yield done
        while pending:
            yield pending.popleft().result()


def _offset(b: DecodedBatch, by: int) -> DecodedBatch:
    if not by:
        return b
    return DecodedBatch(b.table.with_columns(pl.col("_line") + by),
                        [{**q, "line_number": q["line_number"] + by} for q in b.quarantine],
                        b.lines, b.erased, b.blank)


@dataclass(frozen=True)
class _Batch:
    lines: list[tuple[int, bytes]]  # non-blank lines within the length limit
    blank: int
    too_long: list[int]  # their line numbers


def _iter_batches(lines: Iterable[tuple[int, bytes | None]], batch_lines: int
                  ) -> Iterator[_Batch]:
    batch: list[tuple[int, bytes]] = []
    blank, too_long = 0, []
    for number, line in lines:
        if line is None:
            too_long.append(number)
        elif line.strip():
            batch.append((number, line))
        else:
            blank += 1
        if len(batch) + blank + len(too_long) >= batch_lines:
            yield _Batch(batch, blank, too_long)
            batch, blank, too_long = [], 0, []
    if batch or blank or too_long:
        yield _Batch(batch, blank, too_long)


def duplicate_keys(lines: list[bytes], present: list[int], names: list[str]
                   ) -> list[str | None]:
    """Per decoded line, a declared field name that occurs as a top-level key more than once
    (the JSON decoder keeps the last silently, so a second `account_id` could smuggle another
    user's id past the checks), else None. `present`: how many declared keys the decoder
    kept for each line. A line whose text holds more declared-key tokens than that (or an
    escaped key) may have one, and only those are parsed exactly."""
    if not lines:
        return []
    raw = pl.Series(lines, dtype=pl.Binary)
    try:
        text = raw.cast(pl.String)
    except pl.exceptions.ComputeError:  # invalid UTF-8 somewhere: decode line by line
        text = pl.Series([line.decode("utf-8", "replace") for line in lines], dtype=pl.String)
    tokens = text.str.count_matches("\"(?:" + "|".join(map(re.escape, names)) + ")\"\\s*:")
    suspect = ((tokens > pl.Series(present, dtype=pl.UInt32))
               | text.str.contains(r'\\[^"]*"\s*:'))
    out: list[str | None] = [None] * len(lines)
    wanted = set(names)
    for i in suspect.arg_true().to_list():
        out[i] = _duplicate_key(lines[i], wanted)
    return out


def _duplicate_key(line: bytes, wanted: set[str]) -> str | None:
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in items if k in wanted]
        if len(keys) != len(set(keys)):
            found.append(next(k for k in keys if keys.count(k) > 1))
        return dict(items)

    try:
        json.loads(line, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None  # not JSON: the decoder quarantines it for that
    return found[-1] if found else None  # the outermost object is built last


def _value_checks(df: pl.DataFrame, schema: RecordSchema, limits: IngestConfig,
                  day: date | None) -> pl.DataFrame:
    """First failing (reason, field) per row from length, range, allowed-value, timestamp and
    day checks."""
    checks: list[tuple[pl.Expr, str, str]] = []
    start = None if day is None else datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    for name, spec in schema.fields.items():
        col = pl.col(name)
        if spec.type == "string":
            checks.append((col.str.len_chars() > limits.max_field_chars, "field_too_long",
                           name))
        if spec.min is not None:
            checks.append((col < spec.min, "out_of_range", name))
        if spec.max is not None:
            checks.append((col > spec.max, "out_of_range", name))
        if spec.values is not None:
            checks.append((~col.is_in(list(spec.values)), "invalid_value", name))
        if spec.type == "timestamp":
            parsed = col.str.to_datetime(time_zone="UTC", strict=False)
            checks.append((col.is_not_null() & parsed.is_null(), "wrong_type", name))
            if start is not None and name == limits.day_field:
                checks.append(((parsed < start) | (parsed >= start + timedelta(days=1)),
                               "outside_day", name))
    reason = pl.lit(None, dtype=pl.String)
    field_expr = pl.lit(None, dtype=pl.String)
    for cond, why, name in reversed(checks):  # first declared check wins
        hit = cond.fill_null(False)
        reason = pl.when(hit).then(pl.lit(why)).otherwise(reason)
        field_expr = pl.when(hit).then(pl.lit(name)).otherwise(field_expr)
    return df.with_columns(_reason=reason, _field=field_expr)


def _typed(schema: RecordSchema, records: list[dict]) -> pl.DataFrame:
    pl_schema = {n: _PL_TYPES[f.type] for n, f in schema.fields.items()}
    return pl.from_dicts(records, schema=pl_schema) if records else pl.DataFrame(schema=pl_schema)


def _cast_timestamps(df: pl.DataFrame, fields: dict[str, FieldSpec]) -> pl.DataFrame:
    ts = [n for n, f in fields.items() if f.type == "timestamp"]
    return df.with_columns(
        pl.col(n).str.to_datetime(time_zone="UTC", time_unit="us", strict=False) for n in ts)


@dataclass(frozen=True)
class DecodedBatch:
    """Up to `batch_lines` lines of a file: the rows that fit (typed, with their `_line`
    number), where the others went, how many lines it held, how many were erased and how
    many blank."""

    table: pl.DataFrame
    quarantine: list[dict]
    lines: int
    erased: int
    blank: int = 0


def decoded_batches(path: DataPath, schema: RecordSchema, *, source_name: str,
                    batch_lines: int = 100_000, limits: IngestConfig | None = None,
                    day: date | None = None, processes: int = 1) -> Iterator[DecodedBatch]:
    """The file decoded against `schema` a batch at a time (memory stays flat), by
    `processes` processes side by side. `day`: the partition's date, which
    `limits.day_field` must fall in."""
    limits = limits or IngestConfig()
    return decoded_range(path, schema, ByteRange(0, 0, None), source_name=source_name,
                         limits=limits, day=day, processes=processes, batch_lines=batch_lines)


def decoded_lines(lines: Iterable[tuple[int, bytes | None]], schema: RecordSchema, *,
                  source_name: str, batch_lines: int = 100_000,
                  limits: IngestConfig | None = None, day: date | None = None
                  ) -> Iterator[DecodedBatch]:
    """`decoded_batches` of numbered lines from anywhere (None: a line over the limit)."""
    limits = limits or IngestConfig()
    decode = _decoder(schema).decode
    names = list(schema.fields)
    for batch in _iter_batches(lines, batch_lines):
        records, numbers, erased = [], [], 0
        bad = [{"source_file": source_name, "line_number": n, "reason": "line_too_long",
                "field": None} for n in batch.too_long]
        decoded: list[bytes] = []
        for number, line in batch.lines:
            if line.rstrip() == ERASED_LINE:  # an erased user's line (see `erasure`)
                erased += 1
                continue
            try:
                records.append(decode(line))
                numbers.append(number)
                decoded.append(line)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
                    RecursionError) as exc:
                reason, field_name = _classify(exc, line)
                bad.append({"source_file": source_name, "line_number": number,
                            "reason": reason, "field": field_name})
        dups = duplicate_keys(decoded, [len(r) for r in records], names)
        if any(d is not None for d in dups):
            bad.extend({"source_file": source_name, "line_number": n,
                        "reason": "duplicate_key", "field": d}
                       for n, d in zip(numbers, dups, strict=True) if d is not None)
            kept = [i for i, d in enumerate(dups) if d is None]
            records, numbers = [records[i] for i in kept], [numbers[i] for i in kept]
        df = _value_checks(_typed(schema, records).with_columns(
            _line=pl.Series(numbers, dtype=pl.Int64)), schema, limits, day)
        failed = df.filter(pl.col("_reason").is_not_null())
        bad.extend(failed.select(source_file=pl.lit(source_name), line_number="_line",
                                 reason="_reason", field="_field").to_dicts())
        yield DecodedBatch(_cast_timestamps(df.filter(pl.col("_reason").is_null())
                                            .drop("_reason", "_field"), schema.fields),
                           bad, len(batch.lines) + batch.blank + len(batch.too_long),
                           erased, batch.blank)


def _stats(stage: str, rows_in: int, rows_out: int, erased: int, blank: int,
           quarantine: pl.DataFrame) -> StageStats:
    counts = quarantine.group_by("reason").len().sort("reason").rows()
    dropped = {k: v for k, v in {"erased": erased, "blank_line": blank}.items() if v}
    return StageStats(stage=stage, rows_in=rows_in, rows_out=rows_out, dropped=dropped,
                      quarantined={reason: n for reason, n in counts})


def read_records(path: DataPath, schema: RecordSchema, *, source_name: str,
                 batch_lines: int = 100_000, limits: IngestConfig | None = None,
                 day: date | None = None, processes: int = 1) -> IngestResult:
    """Parse one JSON-lines file against `schema`. Rows in = rows out + dropped (erased,
    blank) + quarantined."""
    return records_of(decoded_batches(path, schema, source_name=source_name,
                                      batch_lines=batch_lines, limits=limits, day=day,
                                      processes=processes), schema)


def records_of(decoded: Iterable[DecodedBatch], schema: RecordSchema) -> IngestResult:
    """The table, quarantine and stats of decoded batches (`decoded_lines`)."""
    batches = list(decoded)
    table = pl.concat([b.table for b in batches]) if batches else _cast_timestamps(
        _typed(schema, []).with_columns(_line=pl.lit(None, dtype=pl.Int64)), schema.fields)
    quarantine = pl.DataFrame([q for b in batches for q in b.quarantine],
                              schema=QUARANTINE_SCHEMA).sort("line_number")
    stats = _stats("ingest", sum(b.lines for b in batches), table.height,
                   sum(b.erased for b in batches), sum(b.blank for b in batches), quarantine)
    return IngestResult(table.drop("_line"), quarantine, stats.check_balanced())


def ingest_events(path: DataPath, schema: RecordSchema, *, source_name: str,
                  key: str = "event_id", limits: IngestConfig | None = None,
                  day: date | None = None, processes: int = 1) -> IngestResult:
    """Parse events and drop exact re-deliveries of the same event id (at-least-once feeds)."""
    result = read_records(path, schema, source_name=source_name, limits=limits, day=day,
                          processes=processes)
    deduped = result.table.unique(subset=[key], keep="first", maintain_order=True)
    stats = result.stats
    duplicates = result.table.height - deduped.height
    stats.rows_out = deduped.height
    if duplicates:
        stats.dropped["duplicate_event"] = duplicates
    return IngestResult(deduped, result.quarantine, stats.check_balanced())


def user_shard_of(schema: RecordSchema, user_col: str, key: bytes, n: int
                  ) -> Callable[[pl.DataFrame], pl.Series]:
    """Which of `n` shards each raw row goes to: a keyed hash of the raw field the purpose's
    user column is the pseudonym of (`account_id`), so all of a user's rows land in one shard
    and the split reveals nothing without the key."""
    fields = [n for n in schema.with_handling("pseudonymize") if schema.fields[n].as_ == user_col]
    if not fields:
        raise ConfigError(f"no event field is pseudonymized as {user_col!r}, so a large day "
                          "cannot be split by user")
    digest = hmac_expr(fields[0], key).str.slice(0, 8).str.to_integer(base=16)

    def shard_of(df: pl.DataFrame) -> pl.Series:
        return df.select((digest % n).cast(pl.Int32)).to_series()

    return shard_of


# Two 64-bit hashes of an event id: 128 bits, so two ids collide with odds of ~1e-25 at 100M
# events. They never leave the run: they only say which lines repeat an earlier event id.
_ID_SEEDS = ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
             (0xA4093822, 0x299F31D0, 0x082EFA98, 0xEC4E6C89))


@dataclass(frozen=True)
class RangeSplit:
    """What one range's split gives back (its rows are in spill files): line counts, and its
    quarantine with line numbers within the range."""

    index: int
    lines: int
    erased: int
    blank: int
    quarantine: list[dict]


def split_range(path: DataPath, schema: RecordSchema, r: ByteRange, *, source_name: str, n: int,
                shard_of: Callable[[pl.DataFrame], pl.Series],
                spill: Callable[[str, int, pl.DataFrame], None], key: str = "event_id",
                limits: IngestConfig | None = None, day: date | None = None,
                processes: int = 1) -> RangeSplit:
    """Decode one range of a day too large to hold, batch by batch, and hand each batch's
    rows to `spill(f"s{shard}", batch, rows)` by the user's shard (0..n-1), and the hashes of
    their event ids to `spill(f"b{bucket}", batch, ids)` by the id's bucket (0..n-1), so
    re-deliveries meet in one bucket whichever users and ranges they came in."""
    limits = limits or IngestConfig()
    lines = erased = blank = 0
    bad: list[dict] = []
    for b, batch in enumerate(decoded_range(path, schema, r, source_name=source_name,
                                            limits=limits, day=day, processes=processes)):
        lines, erased, blank = lines + batch.lines, erased + batch.erased, blank + batch.blank
        bad.extend(batch.quarantine)
        table = batch.table
        for i, piece in table.with_columns(_shard=shard_of(table)).partition_by(
                "_shard", as_dict=True, include_key=False).items():
            spill(f"s{int(i[0]):05d}", b, piece)
        ids = table.select(_h1=pl.col(key).hash(*_ID_SEEDS[0]),
                           _h2=pl.col(key).hash(*_ID_SEEDS[1]), _line="_line")
        for j, piece in ids.with_columns(_bucket=(pl.col("_h1") % n).cast(pl.Int32)).partition_by(
                "_bucket", as_dict=True, include_key=False).items():
            spill(f"b{int(j[0]):05d}", b, piece)
    return RangeSplit(r.index, lines, erased, blank, bad)


def with_global_lines(pieces: Iterable[tuple[int, pl.DataFrame]], offsets: list[int]
                      ) -> list[pl.DataFrame]:
    """Spilled pieces of (range, rows) with `_line` numbered within the file."""
    return [t.with_columns(pl.col("_line") + offsets[r]) for r, t in pieces]


def repeated_lines(ids: list[pl.DataFrame]) -> pl.Series:
    """Of one bucket's (id hashes, file line) rows, the lines that repeat an event id seen on
    an earlier line: re-deliveries, dropped as the one-piece path drops them (first kept)."""
    if not ids:
        return pl.Series("_line", [], dtype=pl.Int64)
    table = pl.concat(ids)
    return table.filter(pl.col("_line") != pl.col("_line").min().over("_h1", "_h2")
                        ).get_column("_line").sort()


def assembled_shard(rows: list[pl.DataFrame], schema: RecordSchema, repeated: pl.Series
                    ) -> tuple[pl.DataFrame, int]:
    """One user shard from its spilled rows (lines numbered within the file): in line order,
    re-deliveries dropped; and how many were."""
    table = (pl.concat(rows) if rows else _cast_timestamps(
        _typed(schema, []).with_columns(_line=pl.lit(None, dtype=pl.Int64)), schema.fields))
    kept = (table.filter(~pl.col("_line").is_in(repeated.implode())) if repeated.len()
            else table)
    return kept.sort("_line").drop("_line"), table.height - kept.height


def split_stats(parts: list[RangeSplit], offsets: list[int], rows_out: int, repeated: int
                ) -> tuple[pl.DataFrame, StageStats]:
    """The day's quarantine (lines numbered within the file) and stats from its ranges."""
    quarantine = pl.DataFrame([{**q, "line_number": q["line_number"] + offsets[p.index]}
                               for p in parts for q in p.quarantine],
                              schema=QUARANTINE_SCHEMA).sort("line_number")
    out = _stats("ingest", sum(p.lines for p in parts), rows_out,
                 sum(p.erased for p in parts), sum(p.blank for p in parts), quarantine)
    if repeated:
        out.dropped["duplicate_event"] = repeated
    return quarantine, out.check_balanced()
