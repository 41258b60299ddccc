"""Where the pseudonymization key comes from, and the per-use keys derived from it.

A master key is `<key_id>:<base64 of >= 32 random bytes>`. It comes from an Airflow connection
(inside Airflow), an environment variable, or a key file, in that order; with none the run stops.
Each use gets its own key by HKDF-SHA256, so pseudonyms made for one purpose cannot be joined
with another's, and the staging encryption key is unrelated to either. Key material never
appears in `repr`, logs, errors or outputs: only the key id does.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.config import KeysConfig
from pipeline.errors import KeyUnavailableError

MIN_KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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

    def pseudonym_key(self, purpose: str) -> bytes:
        return self.derive(f"pseudonym:{purpose}")

    def staging_key(self) -> bytes:
        return self.derive("staging-encryption")


def parse_key(text: str, *, source: str) -> MasterKey:
    """Parse `<key_id>:<base64>`; errors name the source, never the content."""
    key_id, sep, b64 = text.strip().partition(":")
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


def _from_airflow(conn_id: str) -> MasterKey | None:
    """Connection password holds the key; only tried when running inside an Airflow task."""
    if not os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return None
    from airflow.sdk import BaseHook  # imported lazily: Airflow is optional outside DAGs
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None  # not configured here: fall through to the env var and key file
    if not conn.password:
        return None
    return parse_key(conn.password, source=f"Airflow connection {conn_id!r}")


def load_master_key(cfg: KeysConfig) -> MasterKey:
    """Find the key in the configured places, or stop the run with a clear error."""
    if cfg.airflow_conn_id and (key := _from_airflow(cfg.airflow_conn_id)):
        return key
    if value := os.environ.get(cfg.env_var):
        return parse_key(value, source=f"environment variable {cfg.env_var}")
    file_value = os.environ.get(cfg.file_env_var)
    path = Path(file_value) if file_value else cfg.file
    if path is not None and path.is_file():
        return parse_key(path.read_text(), source=f"key file {path}")
    tried = [f"environment variable {cfg.env_var}", f"key file (${cfg.file_env_var} or {cfg.file})"]
    if cfg.airflow_conn_id:
        tried.insert(0, f"Airflow connection {cfg.airflow_conn_id!r}")
    raise KeyUnavailableError(
        "no pseudonymization key found; tried " + ", ".join(tried)
        + ". Create a development key with `privacy-pipeline init-key`, or provide one from "
        "your secret store. The run stops rather than publish unkeyed data.")


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
