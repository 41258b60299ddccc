"""Erasure building blocks: raw lines, and partitions left short of k after a user leaves."""

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.records import ErasureRecord
from pipeline.core.storage import Storage
from pipeline.stages import Zone
from pipeline.transforms.erasure import erase_from_zone, erase_raw_lines
from pipeline.transforms.generalize.kanon import short_of
from pipeline.transforms.ingest import ERASED_LINE


def test_when_raw_lines_hold_the_id_then_they_become_markers_and_line_numbers_hold(
        tmp_path: Path) -> None:
    raw = tmp_path / "events.jsonl"
    lines = [json.dumps({"account_id": "acct-1", "n": 1}),
             json.dumps({"account_id": "acct-10", "n": 2}),  # a longer id is not a match
             '{"account_id": "acct-1", "broken',  # unparsable, still the user's
             json.dumps({"account_id": "acct-2", "note": "friend of acct-1"})]
    raw.write_text("\n".join(lines) + "\n")
    assert erase_raw_lines(raw, ["acct-1"]) == 2
    out = raw.read_bytes().splitlines()
    assert out == [ERASED_LINE, lines[1].encode(), ERASED_LINE, lines[3].encode()]


def test_when_a_user_leaves_a_published_group_then_a_group_short_of_k_goes_too(
        tmp_path: Path) -> None:
    storage, zone = Storage(tmp_path), Zone("published", "published/p")
    storage.write(zone, "2026-11-01", pl.DataFrame({
        "user_pseudonym": [f"u{i}" for i in range(5)] + [f"v{i}" for i in range(6)],
        "band": ["a"] * 5 + ["b"] * 6}))
    result = ErasureRecord()
    erase_from_zone(storage, zone, [], ["u0", "v0"], result,
                    short=short_of(["band"], "user_pseudonym", 5))
    left = storage.read(zone, "2026-11-01")
    assert left["user_pseudonym"].to_list() == [f"v{i}" for i in range(1, 6)]
    assert result.removed == {"published/p": 2, "published/p: groups now short of k or l": 4}
    assert result.partitions_rewritten == 1


def test_when_a_request_line_is_not_a_request_then_the_error_names_the_line_not_the_id(
        tmp_path: Path) -> None:
    from pipeline.core.errors import ErasureRequestError
    from pipeline.transforms.erasure import REQUESTS, read_requests

    path = tmp_path / REQUESTS
    path.parent.mkdir(parents=True)
    path.write_text('{"account_id": "acct-1"}\n{"acount_id": "acct-secret-7"}\n')
    with pytest.raises(ErasureRequestError, match=r"requests.jsonl:2: not an erasure request") \
            as err:
        read_requests(tmp_path)
    assert "acct-secret-7" not in str(err.value)


ACCOUNT = "acct-000002-7f31c4"


@pytest.mark.parametrize("form", ["escaped", "gzip", "bom", "nested", "not json, escaped"])
def test_when_raw_lines_hold_the_id_in_another_form_then_erasure_finds_them_by_meaning(
        tmp_path: Path, form: str) -> None:
    import gzip

    escaped = ACCOUNT.replace("-", "\\u002d")
    other = json.dumps({"account_id": "acct-000009-aaaaaa", "email": "x@example.org"})
    if form == "escaped":
        target = '{"account_id": "' + escaped + '", "email": "jane@example.org"}'
    elif form == "nested":
        target = json.dumps({"account_id": "acct-000003-bbbbbb", "ref": {"by": ACCOUNT}})
    elif form == "not json, escaped":
        target = '{"account_id": "' + escaped + '", "email": "jane@exa'
    else:
        target = json.dumps({"account_id": ACCOUNT, "email": "jane@example.org"})
    data = f"{target}\n{other}\n".encode()
    if form == "bom":
        data = b"\xef\xbb\xbf" + data
    path = tmp_path / "events.jsonl"
    path.write_bytes(gzip.compress(data) if form == "gzip" else data)

    assert erase_raw_lines(path, [ACCOUNT]) == 1
    text = gzip.decompress(path.read_bytes()) if form == "gzip" else path.read_bytes()
    assert text.splitlines() == [ERASED_LINE, other.encode()]  # line numbers hold
    assert b"jane" not in text
    assert erase_raw_lines(path, [ACCOUNT]) == 0  # a rerun finds nothing more


def test_when_ids_only_look_alike_then_nothing_is_erased(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [json.dumps({"account_id": ACCOUNT + "0", "text": f"not {ACCOUNT[:-1]}"}),
             json.dumps({"account_id": "acct-000004-cccccc", "text": "caf\u00e9 \n ok"})]
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    assert erase_raw_lines(path, [ACCOUNT]) == 0 and path.read_bytes() == before


@pytest.mark.parametrize("where", ["start", "chunk boundary", "escaped", "absent"])
def test_when_a_raw_line_is_over_the_length_limit_then_it_is_searched_in_bounded_chunks(
        tmp_path: Path, where: str) -> None:
    """Ingest quarantines such a line unread, but it still holds whatever the user sent; the
    search reads it 1 MiB at a time, with the end of the chunk before (a match may straddle)."""
    limit = 4096
    pad = "x" * (1 << 20)  # the first chunk read past the limit ends here
    ident = ACCOUNT.replace("-", "\\u002d") if where == "escaped" else ACCOUNT
    if where == "start":
        line = '{"account_id": "' + ident + '", "text": "' + pad * 3 + '"}'
    elif where == "absent":
        line = '{"account_id": "acct-000009-aaaaaa", "text": "' + pad * 3 + '"}'
    else:  # the id's JSON string across the boundary between two chunks read
        head = '{"text": "' + (pad * 2)[:(1 << 20) + limit + 1 - 32] + '", "account_id": "'
        line = head + ident + '", "more": "' + pad + '"}'
        boundary = limit + 1 + (1 << 20)  # where the second chunk ends
        assert line.index(ident) < boundary < line.index(ident) + len(ident)
    other = json.dumps({"account_id": "acct-000002-ffffff", "n": 2})
    path = tmp_path / "events.jsonl"
    path.write_text(f"{other}\n{line}\n{other}\n")
    before = path.read_bytes()

    found = erase_raw_lines(path, [ACCOUNT], max_line_bytes=limit)
    if where == "absent":
        assert found == 0 and path.read_bytes() == before
        return
    assert found == 1
    assert path.read_bytes().splitlines() == [other.encode(), ERASED_LINE, other.encode()]
