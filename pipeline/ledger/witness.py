"""An append-only witness of releases, outside the ledger and the data root.

The ledger is MAC-chained, and the run records are cross-checked against it before any release
(`pipeline.ledger.release.check_witnesses`), but both live where the pipeline writes: an insider
who can restore an older ledger file *and* the run records could still rewind a release and
have it drawn again with fresh noise. The witness is a Postgres table the pipeline may only
insert into and read (`GRANT SELECT, INSERT`; README "Privacy budget and the ledger"), and which
refuses UPDATE, DELETE and TRUNCATE by trigger even for its owner. Every release is recorded
there once it is in the ledger; before any release, each release the witness knows must still
be in the ledger with the same payload digest, or the run stops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import ConfigError, LedgerIntegrityError

TABLE = "privacy_release_witness"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    purpose text NOT NULL,
    feature_set text NOT NULL,
    release_date text NOT NULL,
    payload_sha256 text NOT NULL,
    epsilon double precision,
    rho double precision,
    delta double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purpose, feature_set, release_date)
);
CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{TABLE} is append-only';
END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{TABLE}_no_change'
                   AND tgrelid = '{TABLE}'::regclass) THEN
        CREATE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE}
            FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only();
        CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
            FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_append_only();
    END IF;
END $$;
"""


@dataclass(frozen=True)
class Witnessed:
    release_date: str
    payload_sha256: str


class ReleaseWitness:
    """The witness table in the Postgres database whose DSN is in `dsn_env` (never logged)."""

    def __init__(self, dsn: str, dsn_env: str) -> None:
        self._dsn, self.where = dsn, f"Postgres (${dsn_env}), table {TABLE}"

    @classmethod
    def from_env(cls, dsn_env: str | None) -> ReleaseWitness | None:
        if dsn_env is None:
            return None
        dsn = os.environ.get(dsn_env)
        if not dsn:
            raise ConfigError(f"budget.witness_dsn_env: environment variable {dsn_env} is not "
                              "set; no release without the witness")
        return cls(dsn, dsn_env)

    def _connect(self) -> Any:
        import psycopg

        try:
            con = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise ConfigError(f"release witness {self.where}: cannot connect "
                              f"({type(exc).__name__}); no release without it") from None
        con.execute(_SCHEMA)
        return con

    def known(self, purpose: str, feature_set: str) -> list[Witnessed]:
        """Every release of this feature set the witness has seen."""
        with self._connect() as con:
            rows = con.execute(f"SELECT release_date, payload_sha256 FROM {TABLE} "
                               "WHERE purpose = %s AND feature_set = %s ORDER BY release_date",
                               (purpose, feature_set)).fetchall()
        return [Witnessed(d, h) for d, h in rows]

    def record(self, purpose: str, feature_set: str, release_date: str, payload_sha256: str,
               *, epsilon: float | None, rho: float | None, delta: float) -> None:
        """Record a release (once: a rerun finds it there). A different digest already
        recorded for the date means two releases of one date: an integrity error."""
        with self._connect() as con:
            con.execute(f"INSERT INTO {TABLE} (purpose, feature_set, release_date, "
                        "payload_sha256, epsilon, rho, delta) VALUES (%s, %s, %s, %s, %s, %s, "
                        "%s) ON CONFLICT DO NOTHING",
                        (purpose, feature_set, release_date, payload_sha256, epsilon, rho,
                         delta))
            (seen,) = con.execute(f"SELECT payload_sha256 FROM {TABLE} WHERE purpose = %s AND "
                                  "feature_set = %s AND release_date = %s",
                                  (purpose, feature_set, release_date)).fetchone()
        if seen != payload_sha256:
            raise LedgerIntegrityError(
                f"release witness {self.where}: {feature_set} {release_date} was released "
                f"before with payload {seen[:12]}…, the ledger now holds {payload_sha256[:12]}…; "
                "the ledger was rewound and drawn again. Restore it from backup.")
