"""The privacy ledger: every DP release, charged once, kept for reruns.

SQLite by default. A release is recorded (its ε, δ, mechanism, library version and the released
table itself) in one transaction before anything is published. Asking again for a release that
exists returns the stored table: fresh noise for the same release would let an averaging
attacker undo the privacy. A release that would push any rolling window containing its date
over the window's budget is refused, which also keeps backfills honest.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipeline.errors import BudgetExceededError, LedgerIntegrityError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    purpose        TEXT NOT NULL,
    feature_set    TEXT NOT NULL,
    release_date   TEXT NOT NULL,
    epsilon        REAL NOT NULL,
    delta          REAL NOT NULL,
    mechanism      TEXT NOT NULL,
    library        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    payload        BLOB NOT NULL,
    PRIMARY KEY (purpose, feature_set, release_date)
)"""


@dataclass(frozen=True)
class Release:
    purpose: str
    feature_set: str
    release_date: str
    epsilon: float
    delta: float
    mechanism: str
    library: str
    payload: bytes
    created_at: str = ""

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@dataclass(frozen=True)
class WindowBudget:
    days: int
    epsilon: float


class PrivacyLedger:
    """Per-purpose ledger of DP releases in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get(self, purpose: str, feature_set: str, release_date: str) -> Release | None:
        with closing(self._connect()) as con:
            row = con.execute(
                "SELECT purpose, feature_set, release_date, epsilon, delta, mechanism, library, "
                "payload, created_at, payload_sha256 FROM releases "
                "WHERE purpose=? AND feature_set=? AND release_date=?",
                (purpose, feature_set, release_date)).fetchone()
        if row is None:
            return None
        release = Release(*row[:9])
        if release.payload_sha256 != row[9]:
            raise LedgerIntegrityError(
                f"ledger {self.path}: stored release {purpose}/{feature_set}/{release_date} "
                "does not match its checksum; refusing to redraw noise")
        return release

    def spent(self, purpose: str, start: date, end: date) -> float:
        """ε of releases for `purpose` dated within [start, end]."""
        with closing(self._connect()) as con:
            (total,) = con.execute(
                "SELECT COALESCE(SUM(epsilon), 0) FROM releases WHERE purpose=? "
                "AND release_date BETWEEN ? AND ?",
                (purpose, start.isoformat(), end.isoformat())).fetchone()
        return float(total)

    def history(self, purpose: str) -> list[tuple[str, str, float]]:
        with closing(self._connect()) as con:
            return con.execute(
                "SELECT release_date, feature_set, epsilon FROM releases WHERE purpose=? "
                "ORDER BY release_date, feature_set", (purpose,)).fetchall()

    def check_budget(self, purpose: str, release_date: str, epsilon: float,
                     budget: WindowBudget) -> float:
        """Raise if any window holding `release_date` would exceed its budget; return the
        largest window total after this release."""
        with closing(self._connect()) as con:
            return self._check_budget(con, purpose, release_date, epsilon, budget)

    def _check_budget(self, con: sqlite3.Connection, purpose: str, release_date: str,
                      epsilon: float, budget: WindowBudget) -> float:
        d = date.fromisoformat(release_date)
        lo, hi = d - timedelta(days=budget.days - 1), d + timedelta(days=budget.days - 1)
        rows = con.execute("SELECT release_date, epsilon FROM releases WHERE purpose=? "
                           "AND release_date BETWEEN ? AND ?",
                           (purpose, lo.isoformat(), hi.isoformat())).fetchall()
        worst = 0.0
        for offset in range(budget.days):  # every window [end - days + 1, end] holding d
            end = d + timedelta(days=offset)
            start = end - timedelta(days=budget.days - 1)
            total = epsilon + sum(e for r, e in rows
                                  if start <= date.fromisoformat(r) <= end)
            worst = max(worst, total)
            if total > budget.epsilon + 1e-12:
                raise BudgetExceededError(
                    f"purpose {purpose!r}: releasing ε={epsilon:g} on {release_date} would spend "
                    f"ε={total:g} in the {budget.days}-day window {start}..{end}, over its "
                    f"budget of ε={budget.epsilon:g}; nothing was released")
        return worst

    def record(self, release: Release, budget: WindowBudget) -> Release:
        """Charge and store `release` in one transaction; an existing release wins."""
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                existing = con.execute(
                    "SELECT 1 FROM releases WHERE purpose=? AND feature_set=? AND "
                    "release_date=?",
                    (release.purpose, release.feature_set, release.release_date)).fetchone()
                if existing:
                    con.execute("ROLLBACK")
                    stored = self.get(release.purpose, release.feature_set, release.release_date)
                    assert stored is not None
                    return stored
                self._check_budget(con, release.purpose, release.release_date,
                                   release.epsilon, budget)
                created = datetime.now(UTC).isoformat(timespec="seconds")
                con.execute(
                    "INSERT INTO releases VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (release.purpose, release.feature_set, release.release_date,
                     release.epsilon, release.delta, release.mechanism, release.library,
                     created, release.payload_sha256, release.payload))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return Release(**{**release.__dict__, "created_at": created})
