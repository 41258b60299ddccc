"""The audit log of sensitive actions: who released, erased, rekeyed, read a subject's data,
issued or exported keys, changed a purpose or the access matrix, and who was refused.

Beside the privacy ledger (the same SQLite folder by default, the same Postgres database when
`budget.ledger_dsn_env` is set), one chain of MACed rows per purpose, sealed as the ledger's
rows are (`pipeline.ledger.store.Sealer`: rotated-out keys still verify theirs). An entry
names the actor, their role, the action, its outcome and a pseudonymous subject where there is
one (a pseudonym, never an account id), with details that are counts, dates, key ids and
hashes, never a value from the data.

Append-only: the chain shows an edited, removed or reordered entry, and the purpose's last
entry is also kept beside the run records (`audit_head.json` in the data root, another store
than the database), so an entry removed from the end, or the whole log rolled back to an older
copy, shows too. Every run verifies the chain before it reads anything (`check_input`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

from pipeline.config import BudgetConfig
from pipeline.core.errors import AuditLogIntegrityError, KeyUnavailableError
from pipeline.core.fs import DataPath
from pipeline.core.keys import KeyRing
from pipeline.core.storage import atomic_write_json
from pipeline.ledger.backends import Backend, Postgres, Sqlite, execute, query, transaction
from pipeline.ledger.store import Sealer, ledger_dsn, ledger_sealer

TABLE = "audit_log"
FILE = "audit_log.sqlite"
HEAD_FILE = "audit_head.json"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq         BIGINT PRIMARY KEY,   -- over every purpose, in append order
    purpose     TEXT NOT NULL,
    n           BIGINT NOT NULL,      -- 1, 2, ... within the purpose's chain
    at          TEXT NOT NULL,        -- UTC, ISO 8601
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,        -- done | denied
    subject     TEXT,                 -- a pseudonym, never an account id
    detail      TEXT NOT NULL,        -- JSON: counts, dates, key ids, hashes
    mac_key_id  TEXT NOT NULL,
    prev_mac    TEXT NOT NULL,
    mac         TEXT NOT NULL,
    UNIQUE (purpose, n)
)"""
_COLUMNS = ("seq", "purpose", "n", "at", "actor", "role", "action", "outcome", "subject",
            "detail", "mac_key_id", "prev_mac", "mac")
Outcome = Literal["done", "denied"]


@dataclass(frozen=True)
class AuditEntry:
    purpose: str
    actor: str
    role: str
    action: str
    outcome: Outcome = "done"
    subject: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    at: str = ""
    n: int = 0


@dataclass(frozen=True)
class AuditHead:
    """A purpose's last entry: its number and MAC."""

    n: int
    mac: str


def _mac(key: bytes, e: AuditEntry, prev: str) -> str:
    fields = [e.purpose, e.n, e.at, e.actor, e.role, e.action, e.outcome, e.subject,
              json.dumps(dict(e.detail), sort_keys=True), prev]
    return hmac.new(key, json.dumps(fields).encode(), hashlib.sha256).hexdigest()


class AuditLog:
    """The chained table (see the module docstring) in `db`, sealed by `sealer`; the heads
    kept in `heads` (a folder in the data root: one `<purpose>/audit_head.json`)."""

    def __init__(self, db: Backend, sealer: Sealer, heads: DataPath) -> None:
        self._db, self.sealer, self.heads = db, sealer, heads
        with closing(db.connect()) as con:
            execute(db, con, _SCHEMA)

    @classmethod
    def from_config(cls, cfg: BudgetConfig, folder: Path, keys: KeyRing, heads: DataPath
                    ) -> AuditLog:
        sealer = ledger_sealer(cfg, keys)
        if cfg.ledger_dsn_env is None:
            return cls(Sqlite(folder / FILE), sealer, heads)
        return cls(Postgres(ledger_dsn(cfg), f"Postgres (${cfg.ledger_dsn_env})",
                            lock_table=TABLE), sealer, heads)

    def _head_path(self, purpose: str) -> DataPath:
        return self.heads / purpose / HEAD_FILE

    def _kept_head(self, purpose: str) -> AuditHead | None:
        path = self._head_path(purpose)
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return AuditHead(int(raw["n"]), str(raw["mac"]))

    def _rows(self, purpose: str, con: Any = None) -> list[tuple[Any, ...]]:
        statement = (f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE purpose = ? "
                     "ORDER BY seq")
        return (list(execute(self._db, con, statement, (purpose,)).fetchall())
                if con is not None else query(self._db, statement, (purpose,)))

    def _tampered(self, purpose: str, what: str) -> NoReturn:
        raise AuditLogIntegrityError(
            f"audit log {self._db.where}, purpose {purpose!r}: {what}. Nothing runs until it "
            "is restored from a trusted copy: sensitive actions may have been hidden")

    def verify(self, purpose: str) -> list[AuditEntry]:
        """The purpose's entries, oldest first, once the chain and the kept head check out.
        The head is read first: it is written only after its entry is committed, so a run
        appending meanwhile never makes the log look cut short."""
        kept = self._kept_head(purpose)
        return self._verified(purpose, self._rows(purpose), kept)

    def _verified(self, purpose: str, rows: list[tuple[Any, ...]],
                  kept: AuditHead | None) -> list[AuditEntry]:
        prev, out = "", []
        for i, r in enumerate(rows, start=1):
            row = dict(zip(_COLUMNS, r, strict=True))
            n = int(row["n"])
            if n != i:
                self._tampered(purpose, f"entry {i} is missing or out of order "
                                        f"(found entry {n} in its place)")
            if row["prev_mac"] != prev:
                self._tampered(purpose, f"entry {n} does not follow entry {n - 1}")
            key = self.sealer.keys.get(row["mac_key_id"])
            if key is None:
                raise KeyUnavailableError(
                    f"audit log entry {n} of {purpose!r} was sealed under key id "
                    f"{row['mac_key_id']!r}, which is not loaded: add its MAC key to "
                    "budget.retired_mac_keys_env")
            entry = AuditEntry(purpose=purpose, actor=row["actor"], role=row["role"],
                               action=row["action"], outcome=row["outcome"],
                               subject=row["subject"], detail=json.loads(row["detail"]),
                               at=row["at"], n=n)
            if not hmac.compare_digest(_mac(key, entry, prev), row["mac"]):
                self._tampered(purpose, f"entry {n} was edited (its MAC does not match)")
            prev = row["mac"]
            out.append(entry)
        if kept is not None:
            if len(out) < kept.n:
                self._tampered(purpose, f"it ends at entry {len(out)}, but entry {kept.n} was "
                                        "written (entries removed from the end, or the log "
                                        "rolled back)")
            if not hmac.compare_digest(rows[kept.n - 1][_COLUMNS.index("mac")], kept.mac):
                self._tampered(purpose, f"entry {kept.n} is not the one written")
        return out

    def append(self, entry: AuditEntry,
               unless: Callable[[list[AuditEntry]], bool] | None = None) -> AuditEntry | None:
        """Add an entry at the end of its purpose's chain (after verifying it), unless
        `unless(entries)` says it is there already (decided under the same lock, so two runs
        starting together log a change once); then keep the new head beside the run records."""
        key_id = self.sealer.active
        with transaction(self._db) as con:
            kept = self._kept_head(entry.purpose)  # <= what is committed: see `verify`
            rows = self._rows(entry.purpose, con)
            entries = self._verified(entry.purpose, rows, kept)
            if unless is not None and unless(entries):
                return None
            prev = rows[-1][_COLUMNS.index("mac")] if rows else ""
            (seq,) = execute(self._db, con, f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {TABLE}"
                             ).fetchone()
            done = AuditEntry(**{**asdict(entry), "n": len(rows) + 1,
                                 "at": entry.at or datetime.now(UTC).isoformat(
                                     timespec="seconds")})
            mac = _mac(self.sealer.keys[key_id], done, prev)
            execute(self._db, con,
                    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_COLUMNS))})",
                    (int(seq), done.purpose, done.n, done.at, done.actor, done.role,
                     done.action, done.outcome, done.subject,
                     json.dumps(dict(done.detail), sort_keys=True), key_id, prev, mac))
        # after the commit, and never backwards (two appenders may finish out of order)
        kept = self._kept_head(entry.purpose)
        if kept is None or kept.n < done.n:
            atomic_write_json(self._head_path(entry.purpose), {"n": done.n, "mac": mac})
        return done

    @property
    def where(self) -> str:
        return f"audit log {self._db.where}"
