"""Partitioned Parquet on disk: atomic writes, and encryption for sensitive zones.

Layout under `data_root`: `<zone>/date=YYYY-MM-DD/part.parquet`. Every write goes to a temporary
file in the same directory and is renamed into place, so a crash never leaves half a partition
and a rerun simply replaces it.

Zones that still hold personal data (everything before `minimize`) are encrypted with AES-256-GCM
under a key derived from the master key, with the partition's path as associated data so a file
cannot be swapped for another. They are unreadable without the key, so a raw e-mail address in
them cannot turn up in a search of the disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core.errors import MissingInputError, StorageError
from pipeline.stages import Zone

_MAGIC = b"PPENC2"  # then: key id length (1 byte), key id, 12-byte nonce, ciphertext


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A file to write `path` through: a temporary file in the same folder, renamed into
    place when the block ends without error, so the file is whole or absent, however large."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename; the file is whole or absent."""
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """Deterministic Parquet bytes (same table, same bytes), so reruns are byte-identical."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=False)
    return buf.getvalue()


def dated_partitions(area: Path) -> list[tuple[date, Path]]:
    """The `date=YYYY-MM-DD` folders of an area, oldest first. Anything else there (a stray
    `date=latest`, a temporary folder) is not a partition and is left alone."""
    out = []
    for p in area.glob("date=*"):
        try:
            out.append((date.fromisoformat(p.name.removeprefix("date=")), p))
        except ValueError:
            continue
    return sorted(o for o in out if o[1].is_dir())


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Storage:
    """Reads and writes date partitions under one data root.

    Encrypted partitions name the key id they were written under, so after a key rotation the
    previous key (looked up with `read_key`) still opens them until they are re-keyed.
    """

    root: Path
    encryption_key: bytes | None = field(default=None, repr=False)  # never printed
    key_id: str = ""
    read_key: Callable[[str], bytes] | None = field(default=None, repr=False)

    def partition_dir(self, zone: Zone, day: date) -> Path:
        return self.root / zone.path / f"date={day}"

    def partition(self, zone: Zone, day: date) -> Path:
        suffix = ".parquet.enc" if zone.sensitive else ".parquet"
        return self.partition_dir(zone, day) / f"part{suffix}"

    def write(self, zone: Zone, day: date, df: pl.DataFrame) -> Path:
        path = self.partition(zone, day)
        data = parquet_bytes(df)
        if zone.sensitive:
            data = self._encrypt(data, aad=self._aad(zone, day))
        atomic_write_bytes(path, data)
        return path

    def read(self, zone: Zone, day: date) -> pl.DataFrame:
        path = self.partition(zone, day)
        if not path.is_file():
            raise MissingInputError(f"{path}: partition not found (has the earlier stage run?)")
        data = path.read_bytes()
        if zone.sensitive:
            data = self._decrypt(data, aad=self._aad(zone, day), path=path)
        try:
            return pl.read_parquet(io.BytesIO(data))
        except (pl.exceptions.PolarsError, OSError):
            raise StorageError(f"{path}: not a readable Parquet partition (truncated or "
                               "altered)") from None

    def set_aside(self, zone: Zone, day: date) -> Path:
        """Move an unreadable partition to `quarantine/corrupt/...`, out of every reader's
        way; rerunning its date rebuilds it. Returns where it went."""
        path = self.partition(zone, day)
        target = self.root / "quarantine" / "corrupt" / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return target

    def written_key_id(self, zone: Zone, day: date) -> str | None:
        """The key id an encrypted partition was written under (None if absent)."""
        path = self.partition(zone, day)
        if not path.is_file():
            return None
        return _header(path.read_bytes()[:_MAX_HEADER], path)[0]

    def _aad(self, zone: Zone, day: date) -> bytes:
        return f"{zone.path}/date={day}".encode()

    def _key(self) -> bytes:
        if self.encryption_key is None:
            raise StorageError("this zone is encrypted and no staging key was given")
        return self.encryption_key

    def _encrypt(self, data: bytes, *, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        kid = self.key_id.encode()
        return _MAGIC + bytes([len(kid)]) + kid + nonce + AESGCM(self._key()).encrypt(
            nonce, data, aad)

    def _decrypt(self, blob: bytes, *, aad: bytes, path: Path) -> bytes:
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


def _header(blob: bytes, path: Path) -> tuple[str, int]:
    """(key id, offset of the nonce) of an encrypted partition."""
    if not blob.startswith(_MAGIC) or len(blob) <= len(_MAGIC):
        raise StorageError(f"{path}: not an encrypted partition")
    n = blob[len(_MAGIC)]
    start = len(_MAGIC) + 1
    return blob[start:start + n].decode(errors="replace"), start + n
