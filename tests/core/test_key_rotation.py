"""Key providers, key rings and rotation: retired keys read for a window, then `rekey`."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import KeysConfig, RotationConfig
from pipeline.core.errors import KeyUnavailableError
from pipeline.core.keys import KeyRing, load_key_ring, parse_key_ring
from pipeline.core.storage import Storage
from pipeline.stages import Zone
from tests.conftest import TEST_KEY_TEXT

# Obviously fake second key.
NEW_SECRET = b"TEST-ONLY-rotated-fake-key-00002"
NEW_KEY_TEXT = f"test-key-2:{base64.b64encode(NEW_SECRET).decode()}"
RETIRED = {"test-key-1": date(2026, 11, 2)}
ROTATION = KeysConfig(airflow_conn_id=None, rotation=RotationConfig(readable_days=30,
                                                                    retired=RETIRED))


def _ring() -> KeyRing:
    return parse_key_ring(f"{NEW_KEY_TEXT}\n{TEST_KEY_TEXT}", ROTATION, source="test")


class StaticProvider:
    """What a user's own provider (e.g. Vault) looks like."""

    description = "test provider"

    def __init__(self, text: str | None) -> None:
        self.text = text

    def load(self) -> str | None:
        return self.text


def test_when_ring_has_two_keys_then_first_is_active_and_second_readable_in_window() -> None:
    ring = _ring()
    assert ring.active.key_id == "test-key-2" and ring.key_ids == ["test-key-2", "test-key-1"]
    assert ring.for_reading("test-key-1", on=date(2026, 12, 2)).key_id == "test-key-1"


def test_when_window_has_passed_then_retired_key_refused_and_rekey_named() -> None:
    with pytest.raises(KeyUnavailableError, match="rekey") as info:
        _ring().for_reading("test-key-1", on=date(2026, 12, 3))
    assert "TEST-ONLY" not in str(info.value)


def test_when_retired_key_has_no_date_then_ring_is_refused() -> None:
    with pytest.raises(KeyUnavailableError, match="keys.rotation.retired"):
        parse_key_ring(f"{NEW_KEY_TEXT},{TEST_KEY_TEXT}", KeysConfig(), source="test")


def test_when_providers_are_given_then_first_with_a_key_wins() -> None:
    ring = load_key_ring(ROTATION, [StaticProvider(None), StaticProvider(NEW_KEY_TEXT)])
    assert ring.active.key_id == "test-key-2" and ring.retired == ()
    with pytest.raises(KeyUnavailableError, match="tried test provider"):
        load_key_ring(ROTATION, [StaticProvider(None)])


def test_when_partition_written_under_retired_key_then_still_readable_after_rotation(
        tmp_path: Path) -> None:
    zone = Zone("x", "staging/x", sensitive=True)
    ring = _ring()
    old, new = ring.for_reading("test-key-1", on=date(2026, 11, 1)), ring.active
    df = pl.DataFrame({"a": [1, 2]})
    Storage(tmp_path, old.staging_key(), old.key_id).write(zone, "2026-11-01", df)
    rotated = Storage(tmp_path, new.staging_key(), new.key_id,
                      read_key=lambda kid: ring.for_reading(kid, on=date(2026, 11, 3))
                      .staging_key())
    assert rotated.written_key_id(zone, "2026-11-01") == "test-key-1"
    assert rotated.read(zone, "2026-11-01").equals(df)
