"""Partitioned Parquet under the data root (a local folder or an object store, see
`pipeline.core.fs`): atomic writes, and encryption for sensitive zones.

Layout under `data_root`: `<zone>/date=YYYY-MM-DD/part.parquet`, or for a large day the same
folder split into shards by user (`part-00000-of-00008.parquet` ...; see `parts`). Every file is
written whole or not at all (a temporary file renamed into place, or one upload), so a crash
never leaves half a file, and a rerun simply replaces the partition.

Zones that still hold personal data (everything before `minimize`) are encrypted with AES-256-GCM
under a key derived from the master key, with the partition's path as associated data so a file
cannot be swapped for another. They are unreadable without the key, so a raw e-mail address in
them cannot turn up in a search of the disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core.errors import MissingInputError, StorageError
from pipeline.core.fs import AnyPath, DataPath, atomic_write_bytes, move, remove_tree
from pipeline.core.layout import Layout, partition_name
from pipeline.stages import Zone

_SHARD = re.compile(r"part-(\d{5})-of-(\d{5})\.")
_MAGIC = b"PPENC2"  # then: key id length (1 byte), key id, 12-byte nonce, ciphertext


def atomic_write_json(path: AnyPath, obj: object) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """Deterministic Parquet bytes (same table, same bytes), so reruns are byte-identical."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=False)
    return buf.getvalue()


def dated_partitions(area: DataPath) -> list[tuple[date, DataPath]]:
    """The `date=YYYY-MM-DD` folders of an area, oldest first. Anything else there (a stray
    `date=latest`, a temporary folder) is not a partition and is left alone."""
    out = []
    for p in area.glob("date=*"):
        try:
            out.append((date.fromisoformat(p.name.removeprefix("date=")), p))
        except ValueError:
            continue
    return sorted(o for o in out if o[1].is_dir())


def sha256_file(path: DataPath) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Storage:
    """Reads and writes date partitions under one data root.

    Encrypted partitions name the key id they were written under, so after a key rotation the
    previous key (looked up with `read_key`) still opens them until they are re-keyed.
    """

    root: DataPath  # a local folder or a path in an object store (`pipeline.core.fs`)
    encryption_key: bytes | None = field(default=None, repr=False)  # never printed
    key_id: str = ""
    read_key: Callable[[str], bytes] | None = field(default=None, repr=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def partition_dir(self, zone: Zone, day: date) -> DataPath:
        return self.layout.partition_dir(zone, day)

    def partition(self, zone: Zone, day: date) -> DataPath:
        """The file of an unsharded partition (`part.parquet`, `.enc` when sensitive)."""
        return self.partition_dir(zone, day) / f"part{_suffix(zone)}"

    def parts(self, zone: Zone, day: date) -> list[DataPath]:
        """The files a partition is made of: `part` alone, or one complete set of shards
        `part-00000-of-00004` ... (empty if the partition is absent). A mix, or a set with a
        shard missing (a crash while writing), is not a partition: StorageError; rerunning
        the stage that writes it rebuilds it."""
        whole = self.partition(zone, day)
        shards = sorted(self.partition_dir(zone, day).glob(f"part-*-of-*{_suffix(zone)}"))
        if not shards:
            return [whole] if whole.is_file() else []
        totals = {m.group(2) for p in shards if (m := _SHARD.match(p.name))}
        if whole.is_file() or len(totals) != 1 or len(shards) != int(totals.pop()):
            raise StorageError(f"{self.partition_dir(zone, day)}: incomplete or mixed shards "
                               "(interrupted write?); rerun the stage that writes it")
        return shards

    def dates(self, zone: Zone) -> list[date]:
        """The dates the zone holds a partition folder for, oldest first."""
        return [day for day, _ in dated_partitions(self.layout.area(zone))]

    def exists(self, zone: Zone, day: date) -> bool:
        return bool(self.parts(zone, day))

    def write(self, zone: Zone, day: date, df: pl.DataFrame) -> DataPath:
        """Replace the partition by one file holding `df`."""
        path = self.partition(zone, day)
        self.write_file(zone, day, path, df)
        self._remove_other_parts(zone, day, keep={path})
        return path

    def write_shards(self, zone: Zone, day: date, frames: Iterable[pl.DataFrame], n: int
                     ) -> DataPath:
        """Replace the partition by `n` shard files, written one frame at a time (so only one
        shard is in memory); with n = 1, the single `part` file. Returns the folder."""
        given = 0
        for i, df in enumerate(frames):
            self.write_file(zone, day, self.shard_file(zone, day, i, n), df)
            given += 1
        if given != n:
            raise StorageError(f"{self.partition_dir(zone, day)}: {given} of {n} shards were "
                               "given")
        return self.commit_shards(zone, day, n)

    def shard_file(self, zone: Zone, day: date, i: int, n: int) -> DataPath:
        """Where shard `i` of `n` of a partition goes (`part` itself when n = 1); a writer
        that fills them one by one, anywhere, ends with `commit_shards`."""
        if n == 1:
            return self.partition(zone, day)
        return self.partition_dir(zone, day) / f"part-{i:05d}-of-{n:05d}{_suffix(zone)}"

    def commit_shards(self, zone: Zone, day: date, n: int) -> DataPath:
        """After every `shard_file` of `n` was written: remove the partition's other files
        (an earlier run's shards, spills). Returns the folder."""
        keep = {self.shard_file(zone, day, i, n) for i in range(n)}
        missing = sorted(p.name for p in keep if not p.is_file())
        if missing:
            raise StorageError(f"{self.partition_dir(zone, day)}: {len(missing)} of {n} shards "
                               f"were not written (first: {missing[0]})")
        self._remove_other_parts(zone, day, keep=keep)
        return self.partition_dir(zone, day)

    def read(self, zone: Zone, day: date) -> pl.DataFrame:
        """The whole partition (every shard)."""
        frames = list(Shards(self, zone, day))
        return frames[0] if len(frames) == 1 else pl.concat(frames)

    def read_part(self, zone: Zone, day: date, path: DataPath) -> pl.DataFrame:
        """One file of a partition (see `parts`)."""
        data = path.read_bytes()
        if zone.sensitive:
            data = self._decrypt(data, aad=self._aad(zone, day, path), path=path)
        try:
            return pl.read_parquet(io.BytesIO(data))
        except (pl.exceptions.PolarsError, OSError):
            raise StorageError(f"{path}: not a readable Parquet partition (truncated or "
                               "altered)") from None

    def set_aside(self, zone: Zone, day: date) -> DataPath:
        """Move an unreadable partition's files to `quarantine/corrupt/...`, out of every
        reader's way; rerunning its date rebuilds it. Returns where they went."""
        folder = self.partition_dir(zone, day)
        files = sorted(folder.glob(f"part*{_suffix(zone)}"))
        target = self.layout.set_aside(folder)
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            move(path, target / path.name)
        return target / files[0].name if len(files) == 1 else target

    def written_key_id(self, zone: Zone, day: date) -> str | None:
        """The key id an encrypted partition was written under (None if absent)."""
        parts = self.parts(zone, day)
        if not parts:
            return None
        return _header(parts[0].read_bytes()[:_MAX_HEADER], parts[0])[0]

    def spill_dir(self, zone: Zone, day: date) -> DataPath:
        """Where a stage too large to hold may park pieces of a partition while it builds it
        (`write_file`/`read_part`, encrypted like the zone); cleared by the next write."""
        return self.partition_dir(zone, day) / "_spill"

    def write_file(self, zone: Zone, day: date, path: DataPath, df: pl.DataFrame) -> None:
        """One file of a partition (a shard, or a spilled piece), encrypted if the zone is."""
        data = parquet_bytes(df)
        if zone.sensitive:
            data = self._encrypt(data, aad=self._aad(zone, day, path))
        atomic_write_bytes(path, data)

    def _remove_other_parts(self, zone: Zone, day: date, *, keep: set[DataPath]) -> None:
        for path in self.partition_dir(zone, day).glob(f"part*{_suffix(zone)}"):
            if path not in keep:
                path.unlink(missing_ok=True)
        remove_tree(self.spill_dir(zone, day))

    def _aad(self, zone: Zone, day: date, path: DataPath) -> bytes:
        """What an encrypted file is bound to: its zone and date, and for a shard its name,
        so no file can be swapped for another."""
        where = f"{zone.path}/{partition_name(day)}"
        return (where if path.name.startswith("part.") else f"{where}/{path.name}").encode()

    def _key(self) -> bytes:
        if self.encryption_key is None:
            raise StorageError("this zone is encrypted and no staging key was given")
        return self.encryption_key

    def _encrypt(self, data: bytes, *, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        kid = self.key_id.encode()
        return _MAGIC + bytes([len(kid)]) + kid + nonce + AESGCM(self._key()).encrypt(
            nonce, data, aad)

    def _decrypt(self, blob: bytes, *, aad: bytes, path: DataPath) -> bytes:
        key_id, offset = _header(blob, path)
        if key_id == self.key_id:
            key = self._key()
        elif self.read_key is not None:
            key = self.read_key(key_id)
        else:
            raise StorageError(f"{path}: written under key id {key_id!r}, which is not loaded")
        nonce = blob[offset:offset + 12]
        try:
            return AESGCM(key).decrypt(nonce, blob[offset + 12:], aad)
        except InvalidTag:
            raise StorageError(
                f"{path}: cannot decrypt (written under another key, or moved/altered)") from None


_MAX_HEADER = len(_MAGIC) + 1 + 255


class Shards:
    """A partition's shards as tables, read one at a time each time it is iterated (so a
    stage may pass over them twice); the partition must exist."""

    def __init__(self, storage: Storage, zone: Zone, day: date) -> None:
        self.storage, self.zone, self.day = storage, zone, day
        self.parts = storage.parts(zone, day)
        if not self.parts:
            raise MissingInputError(f"{storage.partition(zone, day)}: partition not found "
                                    "(has the earlier stage run?)")

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        return (self.storage.read_part(self.zone, self.day, p) for p in self.parts)


def _suffix(zone: Zone) -> str:
    return ".parquet.enc" if zone.sensitive else ".parquet"


def _header(blob: bytes, path: DataPath) -> tuple[str, int]:
    """(key id, offset of the nonce) of an encrypted partition."""
    if not blob.startswith(_MAGIC) or len(blob) <= len(_MAGIC):
        raise StorageError(f"{path}: not an encrypted partition")
    n = blob[len(_MAGIC)]
    start = len(_MAGIC) + 1
    return blob[start:start + n].decode(errors="replace"), start + n
