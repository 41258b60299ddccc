import base64
import hashlib
import hmac
import stat
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import KeysConfig, PipelineConfig
from pipeline.core.errors import KeyUnavailableError
from pipeline.core.keys import MasterKey, create_key_file, load_key_ring, parse_key
from pipeline.transforms.pseudonymize import is_pseudonym, pseudonymize_columns
from tests.conftest import TEST_SECRET


def test_when_hashed_then_digest_equals_python_hmac(master_key: MasterKey,
                                                    cfg: PipelineConfig) -> None:
    table = pl.DataFrame({"account_id": ["acct-1", "acct-2"], "device_id": ["d1", None]})
    out, stats = pseudonymize_columns(table, cfg.event_schema, master_key,
                                      purpose="personalization")
    key = master_key.pseudonym_key("personalization").hex().encode()
    assert out["user_pseudonym"].to_list() == [
        hmac.new(key, b"acct-1", hashlib.sha256).hexdigest(),
        hmac.new(key, b"acct-2", hashlib.sha256).hexdigest()]
    assert out["device_pseudonym"][1] is None
    assert "account_id" not in out.columns and "device_id" not in out.columns
    assert set(out["pseudonym_key_id"]) == {"test-key-1"} and stats.details.key_id
    assert all(is_pseudonym(p) for p in out["user_pseudonym"])


def test_when_purposes_differ_then_pseudonyms_do_not_join(master_key: MasterKey,
                                                          cfg: PipelineConfig) -> None:
    table = pl.DataFrame({"account_id": ["acct-1"], "device_id": ["d1"]})
    a, _ = pseudonymize_columns(table, cfg.event_schema, master_key, purpose="personalization")
    b, _ = pseudonymize_columns(table, cfg.event_schema, master_key, purpose="analytics")
    assert a["user_pseudonym"][0] != b["user_pseudonym"][0]
    assert a["user_pseudonym"][0] != hashlib.sha256(b"acct-1").hexdigest()


def test_when_no_key_anywhere_then_the_run_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVACY_PIPELINE_NO_SUCH_KEY", raising=False)
    cfg = KeysConfig(airflow_conn_id=None, env_var="PRIVACY_PIPELINE_NO_SUCH_KEY",
                     file_env_var="PRIVACY_PIPELINE_NO_SUCH_FILE", file=None)
    with pytest.raises(KeyUnavailableError, match="no pseudonymization key found"):
        load_key_ring(cfg)


def test_when_key_is_malformed_then_error_never_echoes_it() -> None:
    short = "k1:" + base64.b64encode(b"too-short-secret").decode()
    with pytest.raises(KeyUnavailableError) as err:
        parse_key(short, source="test")
    assert "too-short" not in str(err.value) and short not in str(err.value)
    assert "16 bytes" in str(err.value)


def test_when_key_file_created_then_mode_0600_and_loadable(tmp_path: Path) -> None:
    path = tmp_path / "k" / "pipeline.key"
    made = create_key_file(path, key_id="dev-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = KeysConfig(airflow_conn_id=None, env_var="PRIVACY_PIPELINE_NO_SUCH_KEY", file=path)
    assert load_key_ring(cfg).active == made
    assert TEST_SECRET.hex() not in repr(made) and made.secret.hex() not in repr(made)
