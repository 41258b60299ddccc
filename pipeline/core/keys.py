"""Where the pseudonymization keys come from, rotation, and the per-use keys derived from them.

A master key is `<key_id>:<base64 of >= 32 random bytes>`. Keys come from providers tried in
order (`KeyProvider`: an Airflow connection inside Airflow, an environment variable, a key file;
pass your own, e.g. for Vault); with none the run stops. A provider may hold a key ring: the
active key first, then retired keys still readable for a configured window (`KeyRing`).
Each use gets its own key by HKDF-SHA256, so pseudonyms made for one purpose cannot be joined
with another's, and the staging encryption key is unrelated to either. Key material never
appears in `repr`, logs, errors or outputs: only the key id does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.config import KeysConfig
from pipeline.core.errors import KeyUnavailableError
from pipeline.core.fs import DataPath, atomic_write_bytes

MIN_KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENTRY_SEP = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class MasterKey:
    """The secret and its public id. `repr` shows the id only."""

    key_id: str
    secret: bytes = field(repr=False)

    def derive(self, use: str) -> bytes:
        """A 32-byte key for one use (e.g. `pseudonym:personalization`), by HKDF-SHA256."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=f"privacy-pipeline/{use}".encode())
        return hkdf.derive(self.secret)

    def fingerprint(self) -> str:
        """A public check value for this id's secret: HMAC of the id under a key derived for
        nothing else, so it reveals nothing about the keys that do work."""
        return hmac.new(self.derive("fingerprint"), self.key_id.encode(),
                        hashlib.sha256).hexdigest()[:32]

    def pseudonym_key(self, purpose: str) -> bytes:
        return self.derive(f"pseudonym:{purpose}")

    def token_key(self, purpose: str) -> bytes:
        """Key for the typed tokens that replace PII in free text
        (`pipeline.transforms.pii.tokens`)."""
        return self.derive(f"pii-token:{purpose}")

    def staging_key(self) -> bytes:
        return self.derive("staging-encryption")

    def issue(self, purpose: str) -> PurposeKey:
        """The key material one purpose's tasks need, and nothing more (see `PurposeKey`)."""
        return PurposeKey(self.key_id, b"", purpose=purpose,
                          subkeys={use: self.derive(use) for use in purpose_uses(purpose)})


# What a purpose key holds: its own pseudonym, token and published-pseudonym keys, and the keys
# every purpose's run shares today (staging encryption, which also seals the consent log; user
# sharding; the ledger's and consent log's MACs; the fingerprint check). No purpose's key holds
# another's pseudonym or token key, and none holds the master.
SHARED_USES = ("staging-encryption", "shard", "ledger-mac", "fingerprint")


def purpose_uses(purpose: str) -> tuple[str, ...]:
    return (f"pseudonym:{purpose}", f"pii-token:{purpose}", f"epoch-pseudonym:{purpose}",
            *SHARED_USES)


@dataclass(frozen=True)
class PurposeKey(MasterKey):
    """A purpose's key, issued from the master by an operator (`privacy-pipeline issue-key`):
    the derived keys of `purpose_uses`, as the master derives them, so a purpose moves to its
    own key without one pseudonym changing. `key_id` is the master's (what data records);
    the text is `<key id>@<purpose>:<base64 of the keys>`. Asked for any other purpose's key,
    it raises KeyUnavailableError: the analytics workers cannot compute, or check, a
    personalization pseudonym or token."""

    purpose: str = ""
    subkeys: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def derive(self, use: str) -> bytes:
        if use in self.subkeys:
            return self.subkeys[use]
        raise KeyUnavailableError(
            f"the key {self.key_id!r} issued to purpose {self.purpose!r} holds no "
            f"{use.split(':')[0]} key" + (f" for purpose {use.split(':', 1)[1]!r}" if ":" in use
                                         else "") + ": each purpose's tasks get their own key "
            "(`privacy-pipeline issue-key --purpose <purpose>`, from the master)")

    def issue(self, purpose: str) -> PurposeKey:
        raise KeyUnavailableError(f"a purpose key ({self.purpose!r}) cannot issue keys; the "
                                  "master key can")

    def text(self) -> str:
        """What goes into the purpose's secret store (one ring entry)."""
        blob = b"".join(self.subkeys[u] for u in purpose_uses(self.purpose))
        return f"{self.key_id}@{self.purpose}:{base64.b64encode(blob).decode()}"

    def own_fingerprint(self) -> str:
        """This purpose key's public check value (the master's `fingerprint` is the data's)."""
        return hmac.new(self.derive("fingerprint"), f"{self.key_id}@{self.purpose}".encode(),
                        hashlib.sha256).hexdigest()[:32]


def _purpose_key(key_id: str, purpose: str, b64: str, *, source: str) -> PurposeKey:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", purpose):
        raise KeyUnavailableError(f"key from {source}: the purpose after '@' is not a purpose "
                                  "name")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise KeyUnavailableError(f"key from {source}: the part after ':' is not base64"
                                  ) from None
    uses = purpose_uses(purpose)
    if len(blob) != 32 * len(uses):
        raise KeyUnavailableError(f"key from {source}: a purpose key holds {len(uses)} keys of "
                                  f"32 bytes; this one is {len(blob)} bytes")
    return PurposeKey(key_id, b"", purpose=purpose,
                      subkeys={u: blob[32 * i:32 * (i + 1)] for i, u in enumerate(uses)})


def parse_key(text: str, *, source: str) -> MasterKey:
    """Parse `<key_id>:<base64>` (a master key) or `<key_id>@<purpose>:<base64>` (a purpose
    key); errors name the source, never the content."""
    key_id, sep, b64 = text.strip().partition(":")
    key_id, at, purpose = key_id.partition("@")
    if sep and at and _KEY_ID.match(key_id):
        return _purpose_key(key_id, purpose, b64, source=source)
    if not sep or not _KEY_ID.match(key_id):
        raise KeyUnavailableError(
            f"key from {source} is not '<key_id>:<base64 key>' (key id: letters, digits, . _ -)")
    try:
        secret = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise KeyUnavailableError(f"key from {source}: the part after ':' is not base64") from None
    if len(secret) < MIN_KEY_BYTES:
        raise KeyUnavailableError(
            f"key from {source} has {len(secret)} bytes; at least {MIN_KEY_BYTES} are required")
    return MasterKey(key_id=key_id, secret=secret)


@dataclass(frozen=True)
class KeyRing:
    """The active key (used for everything new) and retired keys still allowed for reading.

    A key source holds one key per line (or separated by commas): the first is active, the rest
    are retired. A retired key reads data (e.g. staging partitions encrypted under it) only
    until `retired date + readable_days`, measured against the run's date, never the clock;
    after that the run stops and asks for `privacy-pipeline rekey`.
    """

    active: MasterKey
    retired: tuple[MasterKey, ...] = ()
    retired_on: dict[str, date] = field(default_factory=dict)
    readable_days: int = 0

    @property
    def keys(self) -> list[MasterKey]:
        """The active key, then the retired ones."""
        return [self.active, *self.retired]

    @property
    def key_ids(self) -> list[str]:
        return [k.key_id for k in self.keys]

    def for_reading(self, key_id: str, *, on: date) -> MasterKey:
        """The key with this id, if it may still read data on the run date `on`."""
        if key_id == self.active.key_id:
            return self.active
        for key in self.retired:
            if key.key_id == key_id:
                until = self.retired_on[key_id] + timedelta(days=self.readable_days)
                if on > until:
                    raise KeyUnavailableError(
                        f"key id {key_id!r} was retired on {self.retired_on[key_id]} and was "
                        f"readable until {until}; run `privacy-pipeline rekey` for older "
                        "partitions before its window ends, then remove it from the key ring")
                return key
        raise KeyUnavailableError(f"key id {key_id!r} is not in the key ring "
                                  f"(ids present: {', '.join(self.key_ids)})")


class KeyProvider(Protocol):
    """A place keys come from. `load` returns the key ring text, or None if not set there."""

    @property
    def description(self) -> str: ...

    def load(self) -> str | None: ...


@dataclass(frozen=True)
class AirflowConnectionProvider:
    """The connection's password holds the key ring; consulted only inside an Airflow task."""

    conn_id: str

    @property
    def description(self) -> str:
        return f"Airflow connection {self.conn_id!r}"

    def load(self) -> str | None:
        if not os.environ.get("AIRFLOW_CTX_DAG_ID"):
            return None
        from airflow.sdk import BaseHook  # imported lazily: Airflow is optional outside DAGs
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None  # not configured here: fall through to the next provider
        return conn.password or None


@dataclass(frozen=True)
class EnvProvider:
    var: str

    @property
    def description(self) -> str:
        return f"environment variable {self.var}"

    def load(self) -> str | None:
        return os.environ.get(self.var) or None


@dataclass(frozen=True)
class FileProvider:
    """A key file; its path may be overridden by an environment variable (e.g. a mounted
    Docker/Kubernetes secret)."""

    path: Path | None
    path_env_var: str | None = None

    def _path(self) -> Path | None:
        override = os.environ.get(self.path_env_var) if self.path_env_var else None
        return Path(override) if override else self.path

    @property
    def description(self) -> str:
        return f"key file (${self.path_env_var} or {self.path})"

    def load(self) -> str | None:
        path = self._path()
        if path is None or not path.is_file():
            return None
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyUnavailableError(
                f"key file {path} is readable by others (mode {mode:o}); it must be 0600 "
                f"(chmod 600 {path}). The run stops rather than use an exposed key.")
        return path.read_text()


def providers_from_config(cfg: KeysConfig) -> list[KeyProvider]:
    """The configured providers in the order they are tried."""
    providers: list[KeyProvider] = []
    if cfg.airflow_conn_id:
        providers.append(AirflowConnectionProvider(cfg.airflow_conn_id))
    providers += [EnvProvider(cfg.env_var), FileProvider(cfg.file, cfg.file_env_var)]
    return providers


def parse_key_ring(text: str, cfg: KeysConfig, *, source: str) -> KeyRing:
    """Parse one or more `<key_id>:<base64>` entries; the first is the active key."""
    keys = [parse_key(entry, source=source) for entry in _ENTRY_SEP.split(text.strip()) if entry]
    if not keys:
        raise KeyUnavailableError(f"key from {source} is empty")
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise KeyUnavailableError(f"key ring from {source} repeats a key id")
    undated = [i for i in ids[1:] if i not in cfg.rotation.retired]
    if undated:
        raise KeyUnavailableError(
            f"key ring from {source} holds retired key ids {', '.join(undated)} without a date "
            "in keys.rotation.retired (the date the next key took over)")
    return KeyRing(active=keys[0], retired=tuple(keys[1:]),
                   retired_on={i: cfg.rotation.retired[i] for i in ids[1:]},
                   readable_days=cfg.rotation.readable_days)


def load_key_ring(cfg: KeysConfig, providers: Sequence[KeyProvider] | None = None) -> KeyRing:
    """The first provider that has a key wins; with none, stop the run with a clear error."""
    providers = providers_from_config(cfg) if providers is None else providers
    for provider in providers:
        if (text := provider.load()) is not None:
            return parse_key_ring(text, cfg, source=provider.description)
    raise KeyUnavailableError(
        "no pseudonymization key found; tried " + ", ".join(p.description for p in providers)
        + ". Create a development key with `privacy-pipeline init-key`, or provide one from "
        "your secret store. The run stops rather than publish unkeyed data.")


def check_purpose(ring: KeyRing, purpose: str, *, purpose_key_only: bool) -> None:
    """Every key of the ring is this purpose's own (or a master, unless `purpose_key_only`)."""
    for key in ring.keys:
        if isinstance(key, PurposeKey) and key.purpose != purpose:
            raise KeyUnavailableError(
                f"key {key.key_id!r} was issued to purpose {key.purpose!r}; purpose {purpose!r} "
                f"needs its own (`privacy-pipeline issue-key --purpose {purpose}`, from the "
                "master)")
        if purpose_key_only and not isinstance(key, PurposeKey):
            raise KeyUnavailableError(
                f"key {key.key_id!r} is a master key, and keys.purpose_key_only is set: this "
                f"purpose's tasks take only its own key (`privacy-pipeline issue-key --purpose "
                f"{purpose}`)")


def check_fingerprints(ring: KeyRing, path: DataPath) -> None:
    """Stop when a key id comes back with another secret: everything written under that id
    would silently change (pseudonyms, tokens, staging encryption). New ids are recorded in
    `path` (id -> fingerprint; no key material)."""
    known: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    changed = [k.key_id for k in ring.keys
               if k.key_id in known and known[k.key_id] != k.fingerprint()]
    if changed:
        raise KeyUnavailableError(
            f"key id(s) {changed} were used before with a different secret ({path}): reusing "
            "an id would silently change every pseudonym and token written under it. Give a "
            "new key a new id.")
    new = {k.key_id: k.fingerprint() for k in ring.keys if k.key_id not in known}
    if new:
        atomic_write_bytes(path, json.dumps({**known, **new}, indent=2, sort_keys=True).encode())


def create_key_file(path: Path, *, key_id: str) -> MasterKey:
    """Write a new random development key, readable by its owner only (mode 0600)."""
    if not _KEY_ID.match(key_id):
        raise KeyUnavailableError("key id may hold only letters, digits, '.', '_' and '-'")
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(MIN_KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{key_id}:{base64.b64encode(secret).decode()}\n")
    return MasterKey(key_id=key_id, secret=secret)
