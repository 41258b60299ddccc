"""Where the project's sealed tables live: a SQLite file by default, Postgres when configured.

The privacy ledger (`pipeline.ledger.store`) and the consent log (`pipeline.ledger.consent_log`)
are both chains of MACed rows in one of these; each statement is written once, with `?`
placeholders and `{blob}` for a binary column, and the backend translates it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol


class Backend(Protocol):
    where: str  # for messages: a file path, or the DSN's variable (never the DSN itself)

    def connect(self) -> Any: ...
    def begin_exclusive(self, con: Any) -> None: ...
    def sql(self, statement: str) -> str: ...


class Sqlite:
    """`secure_delete`: what is deleted or overwritten is zeroed in the file, not left in free
    pages (for a table that erasure rewrites; `forget` then empties the write-ahead log)."""

    def __init__(self, path: Path, *, secure_delete: bool = False) -> None:
        self.path = path
        self.where = str(path)
        self.secure_delete = secure_delete
        path.parent.mkdir(parents=True, exist_ok=True)

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        if self.secure_delete:
            con.execute("PRAGMA secure_delete=ON")
        return con

    def forget(self) -> None:
        """Copy the write-ahead log into the file and truncate it: old page images in it
        would still hold what was erased."""
        with closing(self.connect()) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def begin_exclusive(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")

    def sql(self, statement: str) -> str:
        return statement.replace("{blob}", "BLOB")


class Postgres:
    """`lock_table` is locked by every exclusive transaction, so two writers of one chain
    cannot both append after the same row."""

    def __init__(self, dsn: str, where: str, lock_table: str) -> None:
        self.dsn = dsn
        self.where = where  # never the DSN: it may hold a password
        self.lock_table = lock_table

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def begin_exclusive(self, con: Any) -> None:
        con.execute("BEGIN")
        con.execute(f"LOCK TABLE {self.lock_table} IN SHARE ROW EXCLUSIVE MODE")

    def sql(self, statement: str) -> str:
        return statement.replace("{blob}", "BYTEA").replace("?", "%s")


@contextmanager
def transaction(db: Backend) -> Iterator[Any]:
    """One exclusive transaction: committed when the block ends, rolled back if it raises."""
    with closing(db.connect()) as con:
        db.begin_exclusive(con)
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def execute(db: Backend, con: Any, statement: str, params: Sequence[object] = ()) -> Any:
    return con.execute(db.sql(statement), tuple(params))


def execute_many(db: Backend, con: Any, statement: str,
                 rows: Iterable[Sequence[object]]) -> None:
    """`statement` once per row, in one call (one round trip per batch on Postgres)."""
    cur = con.cursor()
    try:
        cur.executemany(db.sql(statement), [tuple(r) for r in rows])
    finally:
        cur.close()


def query(db: Backend, statement: str, params: Sequence[object] = ()) -> list[tuple]:
    with closing(db.connect()) as con:
        return list(execute(db, con, statement, params).fetchall())
