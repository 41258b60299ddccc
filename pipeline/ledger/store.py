"""The privacy ledger: every DP release, charged once, kept for reruns.

A SQLite file by default, Postgres when configured. A release is recorded (its ε or ρ, δ, the
days of data it covers, mechanism, library version and the released table itself) in one
transaction, under a lock, before anything is published. Asking again for a release that exists
returns the stored table: fresh noise for the same release would let an averaging attacker undo
the privacy. A release that would push any rolling window overlapping its data over the window's
budget is refused, which also keeps backfills honest.

Two accountings: `pure` adds up ε; `zcdp` adds up ρ (a pure ε release costs ε²/2 there), which
composes many small releases far more tightly. δ (from private cohort selection) adds up in
both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, cast

from pipeline.config import BudgetConfig
from pipeline.core.errors import BudgetExceededError, ConfigError, LedgerIntegrityError
from pipeline.core.fs import DataPath
from pipeline.core.keys import KeyRing
from pipeline.core.storage import atomic_write_json
from pipeline.ledger.accounting import PURE, Accountant
from pipeline.ledger.backends import Backend, Postgres, Sqlite, execute, query, transaction
from pipeline.ledger.budget import PrivacyBudget, RhoZCDP, ledger_epsilon, release_budget

TABLE = "privacy_releases"
_COLUMNS = ("purpose", "feature_set", "release_date", "period_start", "period_end", "epsilon",
            "rho", "delta", "mechanism", "library", "created_at", "payload_sha256", "payload",
            "seq", "mac_key_id", "prev_mac", "mac")
# The chain's columns, added by `_add_seal_columns` to new and old ledgers alike: seq numbers
# a purpose's releases 1, 2, ...; mac is the HMAC of the row and prev_mac.
_SEAL = {"seq": "BIGINT", "mac_key_id": "TEXT", "prev_mac": "TEXT", "mac": "TEXT"}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    purpose        TEXT NOT NULL,
    feature_set    TEXT NOT NULL,
    release_date   TEXT NOT NULL,
    period_start   TEXT NOT NULL,
    period_end     TEXT NOT NULL,
    epsilon        DOUBLE PRECISION,            -- NULL for a zCDP (Gaussian) release
    rho            DOUBLE PRECISION NOT NULL,   -- a pure release's epsilon^2 / 2
    delta          DOUBLE PRECISION NOT NULL,
    mechanism      TEXT NOT NULL,
    library        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    payload        {{blob}} NOT NULL,
    PRIMARY KEY (purpose, feature_set, release_date)
)"""


@dataclass(frozen=True)
class Release:
    """One DP release. `epsilon` is None for a zCDP release, which is charged by `rho`."""

    purpose: str
    feature_set: str
    release_date: str
    period_start: str  # first day of data the release covers
    epsilon: float | None
    rho: float
    delta: float
    mechanism: str
    library: str
    payload: bytes
    created_at: str = ""
    seq: int | None = None  # set when recorded
    mac_key_id: str | None = None
    prev_mac: str | None = None
    mac: str | None = None

    @property
    def period_end(self) -> str:
        return self.release_date

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def budget(self) -> PrivacyBudget:
        """What the release cost, as a budget value (`pipeline.ledger.budget`)."""
        return release_budget(epsilon=self.epsilon, rho=self.rho, delta=self.delta)

    @classmethod
    def drawn(cls, charge: Charge, *, delta: float, mechanism: str, library: str,
              payload: bytes) -> Release:
        """The release drawn for `charge`, with the δ private selection actually spent: its
        ledger columns (ε, or none for a zCDP release; ρ, a pure release's ε²/2; δ)."""
        return cls(purpose=charge.purpose, feature_set=charge.feature_set,
                   release_date=charge.release_date, period_start=charge.period_start,
                   epsilon=ledger_epsilon(charge.budget), rho=charge.budget.to(RhoZCDP).rho,
                   delta=delta, mechanism=mechanism, library=library, payload=payload)


@dataclass(frozen=True)
class Charge:
    """What a release will cost before it is drawn: checked against every window its data
    touches first, so no noise is drawn for a release the budget refuses."""

    purpose: str
    feature_set: str
    release_date: str
    period_start: str  # first day of data the release covers
    planned: PrivacyBudget  # ε or ρ
    delta: float = 0.0  # what private cohort selection may add

    @property
    def period_end(self) -> str:
        return self.release_date

    @property
    def budget(self) -> PrivacyBudget:
        """The charge with its δ, as the ledger adds it up."""
        return release_budget(epsilon=ledger_epsilon(self.planned),
                              rho=self.planned.to(RhoZCDP).rho, delta=self.delta)


@dataclass(frozen=True)
class WindowBudget:
    """At most `limit` (in the accountant's unit) and `delta` per `days`-day window."""

    days: int
    limit: float
    accountant: Accountant = PURE
    delta: float = 0.0

    @classmethod
    def from_config(cls, cfg: BudgetConfig) -> WindowBudget:
        return cls(cfg.window_days, cfg.limit, cfg.accountant, cfg.delta_per_window)

    @property
    def unit(self) -> str:
        return self.accountant.unit

    @property
    def allowed(self) -> PrivacyBudget:
        """The window's limit as a budget in the accountant's type."""
        return self.accountant.budget(self.limit, self.delta)

    @property
    def conversion_delta(self) -> float:
        """The δ at which a zCDP spend is stated as (ε, δ)-DP: the window's δ, or 1e-6."""
        return self.delta or 1e-6

    def as_epsilon(self, spent: float) -> float | None:
        """A zCDP spend as the ε of (ε, `conversion_delta`)-DP; None under pure accounting."""
        stated = self.accountant.budget(spent).restated(self.conversion_delta)
        return None if stated is None else stated.epsilon


@dataclass(frozen=True)
class WindowSpend:
    start: date
    end: date
    total: PrivacyBudget  # in the accountant's type

    @property
    def spent(self) -> float:
        """ε or ρ, as the budget accounts."""
        return self.total.value

    @property
    def delta(self) -> float:
        return self.total.delta


MAC_USE = "ledger-mac"


def mac_key_lines(ring: KeyRing) -> list[str]:
    """`<key id>:<base64 MAC key>` for every key in the ring: what to keep (in the variable
    `budget.retired_mac_keys_env` names) before a retired master key is removed, so the ledger
    rows it sealed are still checked."""
    return [f"{k.key_id}:{base64.b64encode(k.derive(MAC_USE)).decode()}" for k in ring.keys]


def parse_mac_keys(text: str, *, source: str) -> dict[str, bytes]:
    """The inverse of `mac_key_lines` (lines or commas); errors name the source, never the
    content."""
    out = {}
    for n, entry in enumerate((e for e in re.split(r"[\s,]+", text) if e), start=1):
        key_id, sep, b64 = entry.partition(":")
        try:
            key = base64.b64decode(b64, validate=True)
        except ValueError:
            key = b""
        if not sep or not key_id or len(key) != 32:
            raise ConfigError(f"{source}: entry {n} is not `<key id>:<base64 of a 32-byte MAC "
                              "key>` (as `privacy-pipeline ledger --export-mac-keys` prints)")
        out[key_id] = key
    return out


@dataclass(frozen=True)
class Sealer:
    """MACs ledger rows into a chain per purpose, under a key derived from the master key (the
    active one for new rows; retired ones still verify theirs). Without the key, a row cannot
    be edited, and no row can be removed or replaced, without the chain showing it."""

    keys: Mapping[str, bytes]  # key id -> MAC key
    active: str

    @classmethod
    def from_ring(cls, ring: KeyRing, verify_only: Mapping[str, bytes] | None = None
                  ) -> Sealer:
        """The ring's MAC keys, plus `verify_only` ones: the MAC keys of master keys removed
        after a rotation (`mac_key_lines`), which check the rows they sealed and can do
        nothing else (no pseudonym, token or staging key derives from them)."""
        return cls({**(verify_only or {}), **{k.key_id: k.derive(MAC_USE) for k in ring.keys}},
                   ring.active.key_id)

    def mac(self, key_id: str, release: Release, seq: int, prev: str) -> str:
        fields = [release.purpose, release.feature_set, release.release_date,
                  release.period_start, release.period_end, release.epsilon, release.rho,
                  release.delta, release.mechanism, release.library, release.created_at,
                  release.payload_sha256, seq, prev]
        return hmac.new(self.keys[key_id], json.dumps(fields).encode(),
                        hashlib.sha256).hexdigest()


def ledger_sealer(cfg: BudgetConfig, keys: KeyRing) -> Sealer:
    """The ring's MAC keys, and the rotated-out ones `budget.retired_mac_keys_env` holds."""
    extra = os.environ.get(cfg.retired_mac_keys_env or "")
    return Sealer.from_ring(keys, parse_mac_keys(
        extra, source=f"${cfg.retired_mac_keys_env}") if extra else None)


def ledger_dsn(cfg: BudgetConfig) -> str:
    """The ledger's Postgres DSN, from `budget.ledger_dsn_env` (never logged)."""
    dsn = os.environ.get(cfg.ledger_dsn_env or "")
    if not dsn:
        raise ConfigError(f"budget.ledger_dsn_env: environment variable {cfg.ledger_dsn_env} is "
                          "not set; no release without the ledger")
    return dsn


@dataclass(frozen=True)
class Head:
    """A released row's place in its chain, kept beside the released partition: the ledger
    must still hold exactly this row, or it was reset, truncated or rewritten."""

    purpose: str
    feature_set: str
    release_date: str
    seq: int
    mac: str


HEAD_FILE = "_ledger_head.json"  # beside a released partition; "_" keeps Parquet readers off it


def write_head(partition: DataPath, release: Release) -> None:
    atomic_write_json(partition.parent / HEAD_FILE, asdict(Head(
        release.purpose, release.feature_set, release.release_date, cast(int, release.seq),
        cast(str, release.mac))))


def read_heads(area: DataPath) -> list[Head]:
    """The heads kept beside every released partition of an area."""
    return [Head(**json.loads(p.read_text())) for p in sorted(area.glob(f"date=*/{HEAD_FILE}"))]


class PrivacyLedger:
    """Per-purpose ledger of DP releases (see the module docstring)."""

    def __init__(self, path: Path | None = None, *, dsn: str | None = None,
                 dsn_name: str = "Postgres", sealer: Sealer | None = None) -> None:
        if (path is None) == (dsn is None):
            raise ConfigError("a ledger lives in a SQLite file or a Postgres database")
        self._db: Backend = (Sqlite(path) if path is not None
                             else Postgres(dsn or "", dsn_name, lock_table=TABLE))
        self.sealer = sealer
        with closing(self._db.connect()) as con:  # both connect in autocommit mode
            self._execute(con, _SCHEMA)
        with self._transaction() as con:
            self._add_seal_columns(con)
            if isinstance(self._db, Sqlite):
                _migrate_v1(con)

    def _add_seal_columns(self, con: Any) -> None:
        """The chain's columns, on a new ledger and on one written before rows were chained
        (its rows stay unsealed: a prefix the chain starts after)."""
        if isinstance(self._db, Sqlite):
            have = {r[1] for r in con.execute(f"PRAGMA table_info({TABLE})").fetchall()}
            for name, kind in _SEAL.items():
                if name not in have:
                    con.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {kind}")
        else:
            for name, kind in _SEAL.items():
                con.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {name} {kind}")

    @classmethod
    def from_config(cls, cfg: BudgetConfig, data_root: Path, keys: KeyRing) -> PrivacyLedger:
        sealer = ledger_sealer(cfg, keys)
        if cfg.ledger_dsn_env is None:
            return cls(data_root / cfg.ledger_path, sealer=sealer)
        return cls(dsn=ledger_dsn(cfg), dsn_name=f"Postgres (${cfg.ledger_dsn_env})",
                   sealer=sealer)

    def verify(self, purpose: str, heads: Sequence[Head] = ()) -> int:
        """Check the purpose's chain (order, links, MACs) and that every head kept beside a
        released partition is still in it; return the number of sealed rows. Raises
        LedgerIntegrityError, so nothing is released from a ledger that was reset or edited."""
        sealed = [self._release(r) for r in self._query(
            f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE purpose=? AND seq IS NOT NULL "
            "ORDER BY seq", (purpose,))]  # rows from before chaining have no seq
        prev = ""
        for i, r in enumerate(sealed, start=1):
            if r.seq != i or r.prev_mac != prev or r.mac is None:
                self._tampered(purpose, f"the chain breaks at release {r.release_date}")
            if self.sealer and r.mac_key_id not in self.sealer.keys:
                # an unknown key id must not mean "unchecked": keep retired keys in the
                # ring (as retired) for as long as the ledger holds rows they sealed
                self._tampered(purpose, f"release {r.release_date} is sealed under key id "
                                        f"{r.mac_key_id!r}, which the key ring does not hold "
                                        "(if it was rotated out, put it back as retired, or "
                                        "its MAC key in budget.retired_mac_keys_env)")
            if self.sealer and r.mac != self.sealer.mac(cast(str, r.mac_key_id), r, i, prev):
                self._tampered(purpose, f"release {r.release_date} was altered")
            prev = r.mac
        if sealed:  # rows from before chaining all precede the chain's first row
            late = self._query(f"SELECT release_date FROM {TABLE} WHERE purpose=? AND seq IS "
                               "NULL AND release_date >= ?", (purpose, sealed[0].release_date))
            if late:
                self._tampered(purpose, f"release {late[0][0]} is not sealed in the chain")
        by_seq = {r.seq: r.mac for r in sealed}
        for h in heads:
            if h.purpose == purpose and by_seq.get(h.seq) != h.mac:
                self._tampered(purpose, f"the release of {h.release_date} ({h.feature_set}), "
                                        "published earlier, is no longer in it as released")
        return len(sealed)

    def _tampered(self, purpose: str, what: str) -> NoReturn:
        raise LedgerIntegrityError(
            f"ledger {self.where}, purpose {purpose!r}: {what}. The ledger was reset, truncated "
            "or edited; nothing is released from it (a fresh draw could be averaged against "
            "what was published). Restore it from backup.")

    @property
    def where(self) -> str:
        return self._db.where

    def _transaction(self) -> AbstractContextManager[Any]:
        return transaction(self._db)

    def _execute(self, con: Any, statement: str, params: Sequence[object] = ()) -> Any:
        return execute(self._db, con, statement, params)

    def _query(self, statement: str, params: Sequence[object] = ()) -> list[tuple]:
        return query(self._db, statement, params)

    def get(self, purpose: str, feature_set: str, release_date: str) -> Release | None:
        cols = ", ".join(_COLUMNS)
        rows = self._query(f"SELECT {cols} FROM {TABLE} WHERE purpose=? AND feature_set=? "
                           "AND release_date=?", (purpose, feature_set, release_date))
        return self._release(rows[0]) if rows else None

    def _release(self, row: tuple) -> Release:
        v = dict(zip(_COLUMNS, row, strict=True))
        release = Release(purpose=v["purpose"], feature_set=v["feature_set"],
                          release_date=v["release_date"], period_start=v["period_start"],
                          epsilon=v["epsilon"], rho=v["rho"], delta=v["delta"],
                          mechanism=v["mechanism"], library=v["library"],
                          payload=bytes(v["payload"]), created_at=v["created_at"],
                          seq=v["seq"], mac_key_id=v["mac_key_id"], prev_mac=v["prev_mac"],
                          mac=v["mac"])
        if release.payload_sha256 != v["payload_sha256"]:
            raise LedgerIntegrityError(
                f"ledger {self.where}: stored release {release.purpose}/{release.feature_set}/"
                f"{release.release_date} does not match its checksum; refusing to redraw noise")
        return release

    def history(self, purpose: str) -> list[tuple[str, str, float | None, float, float]]:
        """(release date, feature set, ε, ρ, δ) of every release for `purpose`."""
        return self._query(f"SELECT release_date, feature_set, epsilon, rho, delta FROM {TABLE} "
                           "WHERE purpose=? ORDER BY release_date, feature_set", (purpose,))

    def window_spend(self, purpose: str, end: date, budget: WindowBudget) -> WindowSpend:
        """What releases overlapping the window ending on `end` have spent."""
        start = end - timedelta(days=budget.days - 1)
        rows = self._overlapping(None, purpose, start, end)
        return WindowSpend(start, end, _spent(budget, rows))

    def _overlapping(self, con: Any, purpose: str, start: date, end: date) -> list[Release]:
        statement = (f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE purpose=? "
                     "AND period_end >= ? AND period_start <= ?")
        params = (purpose, start.isoformat(), end.isoformat())
        rows = (self._execute(con, statement, params).fetchall() if con is not None
                else self._query(statement, params))
        return [self._release(r) for r in rows]

    def check_budget(self, release: Release | Charge, budget: WindowBudget) -> WindowSpend:
        """Raise if any window overlapping the release's data would exceed its budget; return
        the fullest such window with the release counted."""
        with closing(self._db.connect()) as con:
            return self._check_budget(con, release, budget)

    def _check_budget(self, con: Any, release: Release | Charge, budget: WindowBudget
                      ) -> WindowSpend:
        first, last = (date.fromisoformat(release.period_start),
                       date.fromisoformat(release.period_end))
        span = timedelta(days=budget.days - 1)
        rows = self._overlapping(con, release.purpose, first - span, last + span)
        windows = []
        for offset in range((last - first).days + budget.days):  # every window overlapping it
            end = first + timedelta(days=offset)
            start = end - span
            inside = [r for r in rows if r.period_end >= start.isoformat()
                      and r.period_start <= end.isoformat()]
            window = WindowSpend(start, end, _spent(budget, [release, *inside]))
            if not window.total.within(budget.allowed, rel=1e-12):
                raise BudgetExceededError(
                    f"purpose {release.purpose!r}: releasing {release.feature_set} for "
                    f"{release.release_date} would spend {budget.unit}={window.spent:g}, "
                    f"δ={window.delta:g} in the {budget.days}-day window {start}..{end}, over "
                    f"its budget of {budget.unit}={budget.limit:g}, δ={budget.delta:g}; "
                    "nothing was released")
            windows.append(window)
        return max(windows, key=lambda w: w.spent)  # the first of the fullest

    def release_once(self, charge: Charge, budget: WindowBudget, draw: Callable[[], Release]
                     ) -> tuple[Release, bool]:
        """The release protocol: a stored release is returned as is (never fresh noise);
        otherwise the budget is checked before any work, `draw()` makes the release, and it is
        charged and stored in one transaction. Returns (release, whether it was stored)."""
        stored = self.get(charge.purpose, charge.feature_set, charge.release_date)
        if stored is not None:
            return stored, True
        self.check_budget(charge, budget)
        return self.record(draw(), budget), False

    def record(self, release: Release, budget: WindowBudget) -> Release:
        """Charge and store `release` in one transaction; an existing release wins."""
        with self._transaction() as con:
            existing = self._execute(
                con, f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE purpose=? AND "
                "feature_set=? AND release_date=?",
                (release.purpose, release.feature_set, release.release_date)).fetchone()
            if existing:
                return self._release(existing)
            self._check_budget(con, release, budget)
            last = self._execute(con, f"SELECT seq, mac FROM {TABLE} WHERE purpose=? AND seq IS "
                                 "NOT NULL ORDER BY seq DESC LIMIT 1",
                                 (release.purpose,)).fetchone()
            seq, prev = (int(last[0]) + 1, last[1] or "") if last else (1, "")
            stored = replace(release, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                             seq=seq, prev_mac=prev)
            if self.sealer is not None:
                key_id = self.sealer.active
                stored = replace(stored, mac_key_id=key_id,
                                 mac=self.sealer.mac(key_id, stored, seq, prev))
            values = {c: getattr(stored, c) for c in _COLUMNS}
            self._execute(con, f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES "
                          f"({', '.join('?' for _ in _COLUMNS)})", list(values.values()))
        return stored


def _spent(budget: WindowBudget, releases: Sequence[Release | Charge]) -> PrivacyBudget:
    """The releases' total in the window's accounting (each converted, then composed)."""
    total = budget.accountant.zero()
    for r in releases:
        total = total + budget.accountant.cost(r)
    return total


def _migrate_v1(con: sqlite3.Connection) -> None:
    """Ledgers written before zCDP accounting kept pure daily releases in `releases`."""
    if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='releases'"
                   ).fetchone():
        con.execute(f"INSERT INTO {TABLE} ({', '.join(_COLUMNS[:13])}) SELECT purpose, "
                    "feature_set, release_date, "
                    "release_date, release_date, epsilon, epsilon * epsilon / 2, delta, "
                    "mechanism, library, created_at, payload_sha256, payload FROM releases")
        con.execute("DROP TABLE releases")
