"""The consent log: imported from the landing file with line numbers, chained and MACed; a
removed, edited, reordered or inserted record stops the run naming the line, never the id. On
SQLite and on the real Postgres at 127.0.0.1:5432 (database `test`)."""

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.errors import ConsentLogIntegrityError
from pipeline.core.keys import KeyRing, MasterKey
from pipeline.ledger.backends import Postgres, Sqlite
from pipeline.ledger.consent_log import FILE, ConsentLog, LogHead, RecordCipher
from pipeline.ledger.store import Sealer
from pipeline.transforms.erasure import erase_raw_lines
from tests.conftest import PG, TEST_SECRET, postgres_up

ACCOUNTS = [f"acct-{i:04d}" for i in range(6)]


def _line(account: str, status: str = "granted", hour: int = 8) -> str:
    return json.dumps({"account_id": account, "purpose": "personalization", "status": status,
                       "recorded_at": f"2026-11-01T{hour:02d}:00:00+00:00"})


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.from_ring(KeyRing(MasterKey("test-key-1", TEST_SECRET)))


@pytest.fixture
def cipher() -> RecordCipher:
    return RecordCipher("test-key-1", MasterKey("test-key-1", TEST_SECRET).staging_key())


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path, sealer: Sealer, cipher: RecordCipher
        ) -> Iterator[ConsentLog]:
    if request.param == "sqlite":
        yield ConsentLog(Sqlite(tmp_path / FILE, secure_delete=True), sealer, cipher)
        return
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg

    schema = f"consent_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    try:
        yield ConsentLog(Postgres(f"{PG}?options=-csearch_path%3D{schema}", "Postgres (test)",
                                  lock_table="consent_log"), sealer, cipher)
    finally:
        with psycopg.connect(PG, autocommit=True) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "consent" / "consent.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(_line(a) + "\n" for a in ACCOUNTS))
    return path


def _stops(log: ConsentLog, landing: Path, line: int) -> str:
    with pytest.raises(ConsentLogIntegrityError) as err:
        log.sync(landing)
    message = str(err.value)
    assert f"line {line}" in message
    assert not any(a in message for a in ACCOUNTS)  # never the id
    return message


def test_when_lines_are_appended_then_only_the_new_ones_are_imported(
        log: ConsentLog, landing: Path) -> None:
    first = log.sync(landing)
    assert first.imported == 6 and [n for n, _ in first.log.records] == [1, 2, 3, 4, 5, 6]
    assert log.sync(landing).imported == 0
    with landing.open("a") as fh:
        fh.write("\n" + _line(ACCOUNTS[0], "paused", 12) + "\n")
    again = log.sync(landing)
    assert again.imported == 1 and again.log.records[-1][0] == 8  # with its line number
    assert again.log.records[-1][1] == _line(ACCOUNTS[0], "paused", 12).encode()


@pytest.mark.parametrize("change", ["edited", "removed", "reordered", "inserted", "truncated",
                                    "blanked"])
def test_when_an_imported_line_is_changed_then_the_sync_stops_naming_the_line(
        log: ConsentLog, landing: Path, change: str) -> None:
    log.sync(landing)
    lines = landing.read_text().splitlines()
    line = 3
    if change == "edited":  # a withdrawal turned back into consent, say
        lines[2] = _line(ACCOUNTS[2], "revoked")
    elif change == "removed":
        del lines[2]
    elif change == "reordered":
        lines[2], lines[3] = lines[3], lines[2]
    elif change == "inserted":
        lines.insert(2, _line("acct-9999"))
    elif change == "truncated":
        lines = lines[:2]
    elif change == "blanked":
        lines[2] = ""
    landing.write_text("\n".join(lines) + "\n")
    _stops(log, landing, line)


@pytest.mark.parametrize(("statement", "params", "what"), [
    ("UPDATE consent_log SET record = ? WHERE line = 2",
     (_line(ACCOUNTS[1], "revoked").encode(),), "record imported from line 2 is not encrypted"),
    ("UPDATE consent_log SET record = (SELECT record FROM consent_log WHERE line = 3) "
     "WHERE line = 2", (), "record imported from line 2 cannot be decrypted"),
    ("UPDATE consent_log SET record = NULL, nonce = NULL WHERE line = 4", (),
     "line 4 was emptied outside an erasure"),
    ("DELETE FROM consent_log WHERE line = 5", (), "the chain breaks"),
    ("UPDATE consent_log SET imported_at = '2020-01-01T00:00:00+00:00' WHERE line = 1", (),
     "line 1 does not match its MAC"),
])
def test_when_the_store_is_tampered_with_then_verification_stops(
        tmp_path: Path, sealer: Sealer, cipher: RecordCipher, landing: Path, statement: str,
        params: tuple, what: str) -> None:
    log = ConsentLog(Sqlite(tmp_path / FILE), sealer, cipher)
    log.sync(landing)
    with sqlite3.connect(tmp_path / FILE) as con:
        con.execute(statement, params)
    with pytest.raises(ConsentLogIntegrityError, match=what):
        log.verify()
    with pytest.raises(ConsentLogIntegrityError):
        log.sync(landing)


def test_when_a_worker_reads_another_copy_then_it_stops(log: ConsentLog, landing: Path) -> None:
    head = log.sync(landing).log.head
    assert head is not None
    assert len(log.verify(head).records) == 6
    with pytest.raises(ConsentLogIntegrityError, match="not the log this run imported"):
        log.verify(LogHead(head.seq, "0" * 64))
    with pytest.raises(ConsentLogIntegrityError, match="not the log this run imported"):
        log.verify(LogHead(head.seq + 1, head.mac))


def test_when_a_user_is_erased_then_the_log_keeps_no_trace_and_still_verifies(
        log: ConsentLog, landing: Path, tmp_path: Path) -> None:
    log.sync(landing)
    gone = ACCOUNTS[2]
    # Lines of an account with an erasure request are imported as the erased marker.
    with landing.open("a") as fh:
        fh.write(_line(gone, "revoked", 9) + "\n")
    assert log.sync(landing, erasing=[gone]).imported == 1
    assert log.erase([gone]) == 1  # the one record held as received
    assert log.erase([gone]) == 0
    # before the landing file is rewritten, and after
    assert log.sync(landing, erasing=[gone]).imported == 0
    assert erase_raw_lines(landing, [gone]) == 2
    result = log.sync(landing)
    assert result.log.erased == 1
    held = b"".join(r or b"" for _, r in result.log.records)
    assert gone.encode() not in held and ACCOUNTS[3].encode() in held
    # SQLite: encrypted at rest, so no account is in any page, and the erased row's ciphertext
    # is gone from every page too
    files = [p for p in tmp_path.glob(f"{FILE}*") if p.is_file()]
    assert all(a.encode() not in p.read_bytes() for a in ACCOUNTS for p in files)
    # An erasure marker where no erasure was recorded is a hidden record.
    lines = landing.read_text().splitlines()
    lines[3] = '{"_erased": true}'
    landing.write_text("\n".join(lines) + "\n")
    _stops(log, landing, 4)


def test_when_a_line_is_too_long_then_it_is_held_by_its_digest_only(
        log: ConsentLog, landing: Path) -> None:
    from pipeline.config import IngestConfig

    limits = IngestConfig(max_line_bytes=1024)
    with landing.open("a") as fh:
        fh.write('{"account_id": "' + "x" * 5000 + '"}\n')
    result = log.sync(landing, limits=limits)
    assert result.imported == 7 and result.log.records[-1] == (7, None)
    assert log.sync(landing, limits=limits).imported == 0
    text = landing.read_text().replace("x" * 5000, "y" * 5000)
    landing.write_text(text)
    with pytest.raises(ConsentLogIntegrityError, match="line 7"):
        log.sync(landing, limits=limits)


def test_when_the_staging_key_rotates_then_records_are_re_encrypted_and_stay_readable(
        tmp_path: Path, sealer: Sealer, cipher: RecordCipher, landing: Path) -> None:
    ConsentLog(Sqlite(tmp_path / FILE), sealer, cipher).sync(landing)
    raw = sqlite3.connect(tmp_path / FILE).execute("SELECT record FROM consent_log").fetchall()
    assert all(ACCOUNTS[0].encode() not in bytes(r[0]) for r in raw)  # encrypted at rest
    new = RecordCipher("test-key-2", MasterKey("test-key-2", b"\x02" * 32).staging_key())
    with pytest.raises(ConsentLogIntegrityError,
                       match="key id 'test-key-1', which the key ring does not hold"):
        ConsentLog(Sqlite(tmp_path / FILE), sealer, new).verify()
    rotating = RecordCipher(new.key_id, new.key, {"test-key-1": cipher.key}.__getitem__)
    assert len(ConsentLog(Sqlite(tmp_path / FILE), sealer, rotating).sync(landing).log.records) == 6
    # re-encrypted under the new key by that import: the old one is no longer needed
    records = ConsentLog(Sqlite(tmp_path / FILE), sealer, new).verify().records
    assert [r for _, r in records] == [_line(a).encode() for a in ACCOUNTS]


@pytest.mark.parametrize("row", [
    (1, 7, "record", "ab" * 32, "2026-11-01T00:00:00+00:00", ""),
    (2, None, "erasure", "cd" * 32, "2026-11-01T00:00:00+00:00", "ef" * 32),
    (3, 9, "too_long", 'a"b\\c', "2026-11-01T00:00:00+00:00", "x"),  # tampered: escapes
    (4, 10, "record", "é\u2028", "\x00\n", "p"),  # non-ASCII and control characters
    (5, True, "record", "ab", "t", "p"),  # a bool where a number belongs
])
def test_a_rows_mac_covers_exactly_the_json_it_always_covered(row: tuple) -> None:
    """The MAC's input is written directly for speed; it must be byte for byte what
    `json.dumps` gave when the log's rows were sealed, or stored logs stop verifying."""
    import hashlib
    import hmac

    from pipeline.ledger.consent_log import _Row, _row_mac

    seq, line, kind, line_mac, imported_at, prev = row
    r = _Row(seq, line, kind, None, None, line_mac, imported_at, "k", "", "")
    was = json.dumps(["consent-log", seq, line, kind, line_mac, imported_at, prev]).encode()
    assert _row_mac(b"k" * 32, r, prev) == hmac.new(b"k" * 32, was, hashlib.sha256).hexdigest()
