"""Partitions in one file or in shards: each shard is bound to its place, and a partition with
a shard missing or two sets mixed is refused, not read as if whole."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.errors import StorageError
from pipeline.core.storage import Storage
from pipeline.stages import Zone

DAY = date(2026, 11, 1)
ZONE = Zone("ingested", "staging/p/ingested", sensitive=True)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path, encryption_key=b"k" * 32, key_id="test-only")


def _frames(n: int) -> list[pl.DataFrame]:
    return [pl.DataFrame({"user": [f"u{i}-{j}" for j in range(3)], "shard": [i] * 3})
            for i in range(n)]


def test_when_shards_are_written_then_they_read_back_whole_and_replace_the_single_file(
        storage: Storage) -> None:
    storage.write(ZONE, DAY, pl.DataFrame({"user": ["old"], "shard": [-1]}))
    storage.write_shards(ZONE, DAY, iter(_frames(3)), 3)
    assert [p.name for p in storage.parts(ZONE, DAY)] == [
        f"part-0000{i}-of-00003.parquet.enc" for i in range(3)]
    assert storage.read(ZONE, DAY).equals(pl.concat(_frames(3)))
    storage.write(ZONE, DAY, _frames(1)[0])  # and back to one file
    assert [p.name for p in storage.parts(ZONE, DAY)] == ["part.parquet.enc"]


def test_when_two_shard_files_are_swapped_then_neither_decrypts(storage: Storage) -> None:
    storage.write_shards(ZONE, DAY, iter(_frames(2)), 2)
    a, b = storage.parts(ZONE, DAY)
    tmp = a.with_name("swap")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)
    with pytest.raises(StorageError, match="cannot decrypt"):
        storage.read(ZONE, DAY)


def test_when_a_shard_is_missing_then_the_partition_is_refused_and_set_aside_whole(
        storage: Storage) -> None:
    storage.write_shards(ZONE, DAY, iter(_frames(3)), 3)
    storage.parts(ZONE, DAY)[1].unlink()
    with pytest.raises(StorageError, match="incomplete or mixed shards"):
        storage.read(ZONE, DAY)
    moved = storage.set_aside(ZONE, DAY)
    assert sorted(p.name for p in moved.iterdir()) == [
        "part-00000-of-00003.parquet.enc", "part-00002-of-00003.parquet.enc"]
    assert storage.parts(ZONE, DAY) == []


def test_when_a_user_is_erased_from_a_sharded_day_then_only_their_shard_is_rewritten_and_spills_go(
        storage: Storage) -> None:
    """Erasure reads a sharded partition shard by shard (one in memory at a time), rewrites
    only the shard that held the user, and removes the pieces a crashed ingest left."""
    from pipeline.core.records import ErasureRecord
    from pipeline.transforms.erasure import erase_from_zone

    frames = [f.rename({"user": "account_id"}) for f in _frames(3)]
    storage.write_shards(ZONE, DAY, iter(frames), 3)
    untouched = {p.name: p.stat().st_mtime_ns for p in storage.parts(ZONE, DAY)}
    storage.write_file(ZONE, DAY, storage.spill_dir(ZONE, DAY) / "s00000-r00000-000000.parquet",
                       frames[1])
    result = ErasureRecord()
    erase_from_zone(storage, ZONE, ["u1-2"], [], result)
    assert result.removed == {ZONE.path: 1, f"{ZONE.path}: pieces a crashed run left": 1}
    assert not storage.spill_dir(ZONE, DAY).exists()
    after = storage.read(ZONE, DAY)
    assert "u1-2" not in after["account_id"].to_list() and after.height == 8
    changed = [p.name for p in storage.parts(ZONE, DAY)
               if p.stat().st_mtime_ns != untouched[p.name]]
    assert changed == ["part-00001-of-00003.parquet.enc"]
