"""The consent log: every consent decision as received, in a chain of MACed rows that cannot be
rewritten unseen.

The landing side appends decisions to `raw/consent/consent.jsonl`, a plain file anyone with
write access could edit. Each run imports the lines added since the last one into this log (a
table beside the privacy ledger: the same SQLite file's folder by default, the same Postgres
database when `budget.ledger_dsn_env` is set), each with its line number, and checks that every
line imported before is still in the landing file as it was: a record removed, edited,
reordered, or inserted among imported lines stops the run, naming the line, never the account.
Stages read consent from here, never from the landing file.

A row's `line_mac` is the HMAC of a random nonce and the line as received; `mac` chains the
row to the one before (as the ledger's rows are: `pipeline.ledger.store.Sealer`'s keys, so
rotated-out keys verify here too). Erasure empties a row's record and nonce in place and
appends an `erasure` row naming the lines it emptied: the chain still verifies, and what is
left (line number, the MAC of a nonce that is gone) cannot be linked to the erased account even
with the key. An emptied row not named by an erasure row is tampering. SQLite zeroes what it
deletes here and the write-ahead log is emptied after an erasure; on Postgres the old row
versions go at the next vacuum (autovacuum, or `VACUUM consent_log` after erasing).

Lines of an account with an erasure request are imported as the erased marker (its data is
never copied here), and may stay in the landing file until the erase stage replaces them.

The records are personal data (an account and its decisions), so they are encrypted at rest as
the staging zones are (AES-GCM under the staging key, bound to the row's sequence number:
`RecordCipher`); each import re-encrypts rows written under a rotated-out key with the active
one, so the log stays readable once the old key leaves the ring.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.config import BudgetConfig, IngestConfig
from pipeline.core.errors import ConsentLogIntegrityError, KeyUnavailableError
from pipeline.core.fs import DataPath
from pipeline.core.keys import KeyRing
from pipeline.ledger.backends import (
    Backend,
    Postgres,
    Sqlite,
    execute,
    execute_many,
    query,
    transaction,
)
from pipeline.ledger.store import Sealer, ledger_dsn, ledger_sealer
from pipeline.transforms.erasure import holds_any
from pipeline.transforms.ingest import BOM, ERASED_LINE, line_chunks, open_raw

TABLE = "consent_log"
FILE = "consent_log.sqlite"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq         BIGINT PRIMARY KEY,   -- 1, 2, ... in import order
    line        BIGINT,               -- in the landing file; NULL for an erasure row
    kind        TEXT NOT NULL,        -- record | too_long | erasure
    record      {{blob}},             -- the line as received; NULL once erased
    nonce       {{blob}},             -- NULL once erased
    line_mac    TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    mac_key_id  TEXT NOT NULL,
    prev_mac    TEXT NOT NULL,
    mac         TEXT NOT NULL
)"""
_COLUMNS = ("seq", "line", "kind", "record", "nonce", "line_mac", "imported_at", "mac_key_id",
            "prev_mac", "mac")
RECORD, TOO_LONG, ERASURE = "record", "too_long", "erasure"


@dataclass(frozen=True)
class LogHead:
    """The chain's last row: what a worker's read of the log must reach, so every shard is
    filtered by the decisions the run imported."""

    seq: int
    mac: str


@dataclass(frozen=True)
class _Row:
    seq: int
    line: int | None
    kind: str
    record: bytes | None
    nonce: bytes | None
    line_mac: str
    imported_at: str
    mac_key_id: str
    prev_mac: str
    mac: str

    @property
    def erased(self) -> bool:
        return self.kind != ERASURE and self.nonce is None


@dataclass(frozen=True)
class VerifiedLog:
    """The log as checked: its head, and the records it holds (line number, the line as
    received; None for a line too long to hold), erased ones left out."""

    head: LogHead | None
    records: tuple[tuple[int, bytes | None], ...]
    last_line: int
    erased: int

    def lines(self) -> Iterator[tuple[int, bytes | None]]:
        return iter(self.records)


@dataclass(frozen=True)
class RecordCipher:
    """Encrypts the log's records at rest under the staging key (`key_id`); `read_key` gives
    a rotated-out key by its id, for rows not re-encrypted yet."""

    key_id: str
    key: bytes
    read_key: Callable[[str], bytes] | None = None
    # one cipher object per key, for this cipher's life (a log's rows are opened by the
    # hundred thousand, under one or two keys)
    _aeads: dict[bytes, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def _aead(self, key: bytes) -> AESGCM:
        if key not in self._aeads:
            self._aeads[key] = AESGCM(key)
        return self._aeads[key]

    def seal(self, record: bytes, seq: int) -> bytes:
        nonce, kid = secrets.token_bytes(12), self.key_id.encode()
        return (_SEALED + bytes([len(kid)]) + kid + nonce
                + self._aead(self.key).encrypt(nonce, record, _aad(seq)))

    def open(self, blob: bytes, seq: int) -> tuple[bytes, str]:
        """(the record, the key id it was sealed under)."""
        if not blob.startswith(_SEALED):
            raise ValueError("is not encrypted as the log writes records")
        n = blob[len(_SEALED)]
        start = len(_SEALED) + 1
        kid = blob[start:start + n].decode()
        try:
            key = self.key if kid == self.key_id else (
                self.read_key(kid) if self.read_key is not None else None)
        except (KeyUnavailableError, KeyError):
            key = None
        if key is None:
            raise ValueError(f"is encrypted under key id {kid!r}, which the key ring does not "
                             "hold (put a rotated-out key back as retired)")
        nonce = blob[start + n:start + n + 12]
        try:
            return self._aead(key).decrypt(nonce, blob[start + n + 12:], _aad(seq)), kid
        except InvalidTag:
            raise ValueError(f"cannot be decrypted under key id {kid!r}: that key id now names "
                             "another key, or the row was moved or altered") from None


_SEALED = b"PPCL1"


def _aad(seq: int) -> bytes:
    return f"consent-log:{seq}".encode()


@dataclass(frozen=True)
class SyncResult:
    imported: int
    log: VerifiedLog


@dataclass(frozen=True)
class _Seen:
    """This process's verdict on a log's rows: the digest of the stored rows it checked, and
    what checking them found (the head, the last landing line, how many were erased). Only
    that: the rows themselves are opened again on each read, so no consent record stays in
    memory between reads (at 1.6M rows they were over a gigabyte)."""

    digest: bytes
    head: LogHead | None
    last_line: int
    erased: int


_SEEN: dict[tuple[str, str], _Seen] = {}  # one entry per log and key ring


def _digest(raw: Sequence[Sequence[Any]]) -> bytes:
    """SHA-256 of the stored rows as read (their every byte, in order)."""
    try:
        data = pickle.dumps(list(map(tuple, raw)), protocol=5)
    except TypeError:  # a driver's memoryview
        data = pickle.dumps([tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                             for r in raw], protocol=5)
    return hashlib.sha256(data).digest()


class ConsentLog:
    """The chained table (see the module docstring) in `db`, sealed by `sealer`."""

    def __init__(self, db: Backend, sealer: Sealer, cipher: RecordCipher | None = None
                 ) -> None:
        """`cipher`: records encrypted at rest (every deployment's log: `from_config`);
        without one they are stored as received."""
        self._db, self.sealer, self._cipher = db, sealer, cipher
        self._stale: list[int] = []  # rows sealed under a key other than the cipher's
        self._raw_digest = b""  # of the rows `_rows` read last
        with closing(db.connect()) as con:  # autocommit: the table exists before any lock
            execute(db, con, _SCHEMA)

    @classmethod
    def from_config(cls, cfg: BudgetConfig, folder: Path, keys: KeyRing,
                    cipher: RecordCipher) -> ConsentLog:
        """Where the ledger is: Postgres when `ledger_dsn_env` is set, else a SQLite file in
        `folder` (the local `consent_log` zone); sealed with the ledger's MAC keys, records
        encrypted with `cipher`."""
        sealer = ledger_sealer(cfg, keys)
        if cfg.ledger_dsn_env is None:
            return cls(Sqlite(folder / FILE, secure_delete=True), sealer, cipher)
        return cls(Postgres(ledger_dsn(cfg), f"Postgres (${cfg.ledger_dsn_env})",
                            lock_table=TABLE), sealer, cipher)

    @property
    def where(self) -> str:
        return f"consent log {self._db.where}"

    # reading -------------------------------------------------------------------------------

    def _rows(self, con: Any = None) -> list[_Row]:
        statement = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} ORDER BY seq"
        raw = (execute(self._db, con, statement).fetchall() if con is not None
               else query(self._db, statement))
        self._raw_digest = _digest(raw)
        self._stale = []
        return [_Row(int(r[0]), None if r[1] is None else int(r[1]), r[2],
                     self._opened(r[3], int(r[0]), r[1]), None if r[4] is None else bytes(r[4]),
                     *r[5:]) for r in raw]

    @property
    def _slot(self) -> tuple[str, str]:
        """Which log this is, under which keys (what opening and checking its rows depend
        on, besides the rows)."""
        keys = sorted(self.sealer.keys.items())
        cipher = (self._cipher.key_id, self._cipher.key) if self._cipher is not None else None
        return self._db.where, hashlib.sha256(repr((keys, cipher)).encode()).hexdigest()

    def _opened(self, stored: Any, seq: int, line: Any) -> bytes | None:
        if stored is None or self._cipher is None:
            return None if stored is None else bytes(stored)
        try:
            record, kid = self._cipher.open(bytes(stored), seq)
        except ValueError as exc:
            where = f"line {line}" if line is not None else f"erasure entry {seq}"
            self._tampered(f"the record imported from {where} {exc}")
        if kid != self._cipher.key_id:
            self._stale.append(seq)
        return record

    def _sealed(self, record: bytes | None, seq: int) -> bytes | None:
        if record is None or self._cipher is None:
            return record
        return self._cipher.seal(record, seq)

    def verify(self, expect: LogHead | None = None) -> VerifiedLog:
        """Check the chain (order, links, MACs, every record against its MAC, every emptied
        record named by an erasure row) and, with `expect`, that it holds that head: raises
        ConsentLogIntegrityError naming the row's landing line.

        Rows this process checked before under the same keys are not checked again when the
        stored rows are byte for byte those it checked (a SHA-256 of them as read): the same
        rows and keys give the same verdict, and every stage of a run reads the log."""
        return self._checked(self._rows(), expect)

    def _checked(self, rows: Sequence[_Row], expect: LogHead | None = None) -> VerifiedLog:
        """`_verified` of the rows `_rows` just read; when this process checked the same
        stored rows under the same keys before, their records without checking them again
        (the same rows and keys give the same verdict)."""
        seen = _SEEN.get(self._slot)
        if seen is None or seen.digest != self._raw_digest:
            log = self._verified(rows, expect)
            _SEEN[self._slot] = _Seen(self._raw_digest, log.head, log.last_line, log.erased)
            return log
        return self._held(VerifiedLog(seen.head, _records(rows), seen.last_line, seen.erased),
                          rows, expect)

    def _held(self, log: VerifiedLog, rows: Sequence[_Row], expect: LogHead | None
              ) -> VerifiedLog:
        """`log`, after checking it holds `expect` (see `_verified`)."""
        if expect is not None and (len(rows) < expect.seq
                                   or rows[expect.seq - 1].mac != expect.mac):
            self._tampered("it is not the log this run imported (rewound, or another copy: a "
                           "worker on another machine needs the log in Postgres, "
                           "budget.ledger_dsn_env)")
        return log

    def _verified(self, rows: Sequence[_Row], expect: LogHead | None = None) -> VerifiedLog:
        prev, last_line, named, emptied = "", 0, set(), []
        for i, row in enumerate(rows, start=1):
            where = f"line {row.line}" if row.line is not None else f"erasure entry {i}"
            if row.seq != i or row.prev_mac != prev:
                self._tampered(f"the chain breaks at {where} (a row was removed, inserted or "
                               "reordered)")
            key = self.sealer.keys.get(row.mac_key_id)
            if key is None:
                self._tampered(f"{where} is sealed under key id {row.mac_key_id!r}, which the "
                               "key ring does not hold (put a rotated-out key back as retired, "
                               "or its MAC key in budget.retired_mac_keys_env)")
            if not hmac.compare_digest(row.mac, _row_mac(key, row, prev)):
                self._tampered(f"{where} does not match its MAC under key id "
                               f"{row.mac_key_id!r}: it was altered, or that key id now "
                               "names another key")
            if row.kind == ERASURE:
                named.update(json.loads(row.record or b"[]"))
            else:
                if row.line is None or row.line <= last_line:
                    self._tampered(f"{where} is out of order")
                last_line = row.line
                if row.erased:
                    emptied.append(row.line)
                elif row.kind == RECORD and (row.record is None or not hmac.compare_digest(
                        row.line_mac, _line_mac(key, row.nonce or b"", [row.record]))):
                    self._tampered(f"the record imported from line {row.line} was altered")
            prev = row.mac
        unnamed = [n for n in emptied if n not in named]
        if unnamed:
            self._tampered(f"the record imported from line {unnamed[0]} was emptied outside "
                           "an erasure")
        head = LogHead(rows[-1].seq, rows[-1].mac) if rows else None
        return self._held(VerifiedLog(head, _records(rows), last_line, len(emptied)), rows,
                          expect)

    def _tampered(self, what: str) -> NoReturn:
        raise ConsentLogIntegrityError(
            f"{self.where}: {what}. Nobody's consent can be trusted from it; nothing was run. "
            "Restore the log from backup (and the landing file, if it was edited).")

    # importing -----------------------------------------------------------------------------

    def sync(self, landing: DataPath, *, erasing: Sequence[str] = (),
             limits: IngestConfig | None = None) -> SyncResult:
        """Check every line imported before is still in `landing` as it was, then import the
        lines added since, in one transaction. `erasing`: accounts with an erasure request,
        whose lines are imported as the erased marker and may still be in the landing file."""
        limits = limits or IngestConfig()
        holds = holds_any(erasing)
        with transaction(self._db) as con:
            rows = self._rows(con)
            log = self._checked(rows)
            by_line = {r.line: r for r in rows if r.line is not None}
            keys, active = self.sealer.keys, self.sealer.active
            now = datetime.now(UTC).isoformat(timespec="seconds")
            prev, seq, seen = (rows[-1].mac if rows else ""), len(rows), 0
            new: list[_Row] = []
            for number, line, digest in _landing_lines(landing, limits.max_line_bytes):
                seen = number
                if number <= log.last_line:
                    self._compare(landing, number, by_line.get(number), line, digest, holds)
                    continue
                if line is not None and not line.strip():
                    continue
                kind, record = (TOO_LONG, None) if line is None else (RECORD, line)
                if line is not None and line != ERASED_LINE and holds(line):
                    record = ERASED_LINE  # an erasing account's data is never copied here
                nonce, seq = secrets.token_bytes(16), seq + 1
                body = [digest] if record is None else [record]
                row = _with_mac(_Row(seq, number, kind, record, nonce,
                                     _line_mac(keys[active], nonce, body), now, active, prev,
                                     ""), keys[active], prev)
                new.append(row)
                prev = row.mac
            if seen < log.last_line:
                raise ConsentLogIntegrityError(
                    f"{landing}: line {seen + 1}: the consent log holds records imported from "
                    f"lines {seen + 1} to {log.last_line}, which the file no longer has "
                    "(truncated, or lines removed); nothing was run. Restore the landing file.")
            self._insert(con, *new)
            by_seq = {r.seq: r for r in rows}
            for seq in self._stale:  # written under a rotated-out key: under the active one
                execute(self._db, con, f"UPDATE {TABLE} SET record = ? WHERE seq = ?",
                        [self._sealed(by_seq[seq].record, seq), seq])
        return SyncResult(len(new), self._verified([*rows, *new]) if new else log)

    def _compare(self, landing: DataPath, number: int, row: _Row | None, line: bytes | None,
                 digest: bytes, holds: Callable[[bytes], bool]) -> None:
        """Line `number`, imported before, must be as it was (or erased, or an erasing
        account's line the erase stage has not replaced yet)."""
        if row is None:
            if line is None or line.strip():
                self._landing_changed(landing, number, "holds a record, but was blank when "
                                      "imported (a line inserted among imported lines)")
            return
        if line is not None and holds(line):
            return  # the erase stage replaces it next
        if row.erased:
            if line == ERASED_LINE:
                return
            self._landing_changed(landing, number, "holds a record where the consent log "
                                  "holds an erased one")
        if row.kind == TOO_LONG and line == ERASED_LINE:
            return  # a line rejected unread, since erased
        body = [digest] if line is None else [line]
        mac = _line_mac(self.sealer.keys[row.mac_key_id], row.nonce or b"", body)
        if hmac.compare_digest(mac, row.line_mac):
            return
        if line == ERASED_LINE:
            self._landing_changed(landing, number, "was replaced by the erasure marker, but "
                                  "no erasure of it is in the consent log")
        self._landing_changed(landing, number, "differs from the record imported from it "
                              f"on {row.imported_at[:10]} (edited, or lines removed, inserted "
                              "or reordered)")

    def _landing_changed(self, landing: DataPath, number: int, what: str) -> NoReturn:
        raise ConsentLogIntegrityError(
            f"{landing}: line {number}: {what}; nothing was run. Consent records are "
            f"append-only: restore the landing file, and record a change of mind as a new line.")

    def _insert(self, con: Any, *rows: _Row) -> None:
        execute_many(self._db, con, f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES "
                     f"({', '.join('?' for _ in _COLUMNS)})",
                     ([row.seq, row.line, row.kind, self._sealed(row.record, row.seq), row.nonce,
                       row.line_mac, row.imported_at, row.mac_key_id, row.prev_mac, row.mac]
                      for row in rows))

    # erasing -------------------------------------------------------------------------------

    def erase(self, account_ids: Sequence[str]) -> int:
        """Empty every record holding one of the accounts (by meaning, as erasure finds raw
        lines) and append an erasure row naming their lines; returns records emptied."""
        if not account_ids:
            return 0
        holds = holds_any(account_ids)
        with transaction(self._db) as con:
            rows = self._rows(con)
            self._checked(rows)
            hit = [r for r in rows if r.kind == RECORD and not r.erased and r.record is not None
                   and r.record != ERASED_LINE and holds(r.record)]
            if not hit:
                return 0
            for r in hit:
                execute(self._db, con, f"UPDATE {TABLE} SET record = NULL, nonce = NULL "
                        "WHERE seq = ?", [r.seq])
            active = self.sealer.active
            record = json.dumps(sorted(int(r.line or 0) for r in hit)).encode()
            key = self.sealer.keys[active]
            row = _Row(len(rows) + 1, None, ERASURE, record, None,
                       _line_mac(key, b"", [record]),
                       datetime.now(UTC).isoformat(timespec="seconds"), active, rows[-1].mac, "")
            self._insert(con, _with_mac(row, key, rows[-1].mac))
        _SEEN.pop(self._slot, None)  # the erased records leave this process's memory too
        if isinstance(self._db, Sqlite):
            self._db.forget()
        return len(hit)


def _records(rows: Sequence[_Row]) -> tuple[tuple[int, bytes | None], ...]:
    """The records rows hold once checked (see `VerifiedLog.records`): every landing line's
    row not emptied by an erasure, with the line as received (None for a line too long)."""
    return tuple((r.line, r.record if r.kind == RECORD else None) for r in rows
                 if r.kind != ERASURE and not r.erased and r.line is not None)


def _line_mac(key: bytes, nonce: bytes, body: Iterable[bytes]) -> str:
    # one-shot HMAC (OpenSSL's, in C): the log checks every row's on every read
    return hmac.digest(key, b"consent-line\x00" + nonce + b"".join(body), "sha256").hex()


def _row_mac(key: bytes, row: _Row, prev: str) -> str:
    return hmac.digest(key, _row_fields(row, prev), "sha256").hex()


def _row_fields(row: _Row, prev: str) -> bytes:
    """What a row's MAC covers: the JSON list `["consent-log", seq, line, kind, line_mac,
    imported_at, prev]` as `json.dumps` writes it. Written directly when every string is
    printable ASCII without quotes or backslashes (what the log writes: `json.dumps` would
    write them as they are), else by `json.dumps` itself; the bytes are the same."""
    texts = (row.kind, row.line_mac, row.imported_at, prev)
    if all(type(t) is str for t in texts) and _PLAIN.fullmatch("".join(texts)) \
            and type(row.seq) is int and (row.line is None or type(row.line) is int):
        line = "null" if row.line is None else row.line
        return (f'["consent-log", {row.seq}, {line}, "{row.kind}", "{row.line_mac}", '
                f'"{row.imported_at}", "{prev}"]').encode()
    fields = ["consent-log", row.seq, row.line, row.kind, row.line_mac, row.imported_at, prev]
    return json.dumps(fields).encode()


_PLAIN = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII but `"` and `\`: JSON writes it as is


def _with_mac(row: _Row, key: bytes, prev: str) -> _Row:
    return _Row(row.seq, row.line, row.kind, row.record, row.nonce, row.line_mac,
                row.imported_at, row.mac_key_id, prev, _row_mac(key, row, prev))


def _landing_lines(path: DataPath, limit: int) -> Iterator[tuple[int, bytes | None, bytes]]:
    """(number, the line without its end, b"") of every line, read as ingest reads it (gzip by
    its magic number, a leading BOM removed); a line over `limit` comes as (number, None, its
    SHA-256), hashed in bounded chunks, never held whole."""
    if not path.is_file():
        return
    with open_raw(path) as fh:
        for line in line_chunks(fh, limit):
            head = line.head.removeprefix(BOM) if line.number == 1 else line.head
            if not line.too_long:
                yield line.number, head.rstrip(b"\r\n"), b""
                continue
            digest = hashlib.sha256(head)
            for chunk in line.rest:
                digest.update(chunk)
            yield line.number, None, digest.digest()
