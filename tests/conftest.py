"""Shared fixtures: a config pointing at a temporary data root, and an obviously fake key."""

from __future__ import annotations

import base64
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.config import PipelineConfig, load_config
from pipeline.core.keys import MasterKey

ROOT = Path(__file__).resolve().parents[1]
# 32 bytes that say what they are. Never a real key.
TEST_SECRET = b"TEST-ONLY-not-a-secret-key-00001"
TEST_KEY_TEXT = f"test-key-1:{base64.b64encode(TEST_SECRET).decode()}"


PG = "postgresql://postgres@127.0.0.1:5432/test"  # this machine's PostgreSQL, trust auth


def postgres_up() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 5432)) == 0


@pytest.fixture(autouse=True, scope="session")
def _close_dask_clusters() -> Iterator[None]:
    """Local Dask clusters a test run started are closed while pytest still captures output
    (at interpreter exit their shutdown would log to closed streams)."""
    yield
    if "pipeline.distributed" in sys.modules:
        sys.modules["pipeline.distributed"].close_clients()


@pytest.fixture
def master_key() -> MasterKey:
    return MasterKey(key_id="test-key-1", secret=TEST_SECRET)


def write_config(tmp_path: Path, purpose: str = "personalization", **overrides: object) -> Path:
    """A copy of config/pipeline.yaml whose data root is under tmp_path; for another purpose,
    also a copy of its config (config/<purpose>.yaml, which extends the first), returned."""
    doc = yaml.safe_load((ROOT / "config" / "pipeline.yaml").read_text())
    doc["paths"] = {"data_root": str(tmp_path / "data"),
                    "event_schema": str(ROOT / "schemas" / "events.yaml"),
                    "consent_schema": str(ROOT / "schemas" / "consent.yaml"),
                    "purposes_dir": str(ROOT / "schemas" / "purposes"),
                    "access_policy": str(ROOT / "config" / "access.yaml")}
    doc["keys"] = {"airflow_conn_id": None, "env_var": "PRIVACY_PIPELINE_TEST_KEY",
                   "file_env_var": "PRIVACY_PIPELINE_TEST_KEY_FILE", "file": None}
    # Tests run days of a few dozen users: the volume minimums are for production days (the
    # guardrail tests set them back); the quarantine share and the volume check stay on.
    doc["guardrails"].update({"min_rows_in": 1, "min_users_after_consent": 1})
    # PDFs cost about a second a run: written only where a test reads them (reports__pdf=True)
    doc["reports"] = {"pdf": False}
    for dotted, value in overrides.items():
        node = doc
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    if purpose != "personalization":
        path = tmp_path / f"{purpose}.yaml"
        path.write_text((ROOT / "config" / f"{purpose}.yaml").read_text())
    return path


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    return write_config(tmp_path)


@pytest.fixture
def cfg(config_path: Path) -> PipelineConfig:
    return load_config(config_path)


def key_material(key: MasterKey, purpose: str = "personalization") -> dict[str, bytes]:
    """Every form a key could leak in: the secret (raw, base64, hex) and the derived keys."""
    derived = {"pseudonym": key.pseudonym_key(purpose), "token": key.token_key(purpose),
               "staging": key.staging_key()}
    forms = {"secret": key.secret, "secret base64": base64.b64encode(key.secret),
             "secret hex": key.secret.hex().encode()}
    for name, value in derived.items():
        forms[f"{name} key"] = value
        forms[f"{name} key hex"] = value.hex().encode()
    return forms


def files_holding(roots: list[Path], forms: dict[str, bytes]) -> list[str]:
    """`file: form` for every file under `roots` whose bytes contain one of `forms`."""
    hits = []
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            hits += [f"{path}: {name}" for name, value in forms.items() if value in data]
    return hits


def readable_text(paths: list[Path]) -> list[str]:
    """What each file says once decoded: Parquet cells (compressed pages hide values from a
    byte search), anything else as text. Encrypted staging (`.enc`) stays as bytes: holding
    raw values only encrypted is its property, which a byte search checks."""
    import io

    import polars as pl

    return [pl.read_parquet(io.BytesIO(p.read_bytes())).write_csv() if p.suffix == ".parquet"
            else p.read_bytes().decode("utf-8", "replace") for p in paths]


def generated_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, users: int, seed: int,
                  days: int = 1, start: str = "2026-11-01", drift: object = None,
                  **overrides: object) -> tuple[Path, Path]:
    """What a run-level test starts from: the fake key in the environment, a config under
    `tmp_path` (with `overrides`, as for `write_config`) and `days` of generated raw events
    (with `drift`, a `pipeline.demo.generate.Drift`, injected). Returns (config path, data
    root)."""
    from datetime import date

    from pipeline.demo.generate import generate

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path, **overrides)
    generate(tmp_path / "data", start=date.fromisoformat(start), days=days, users=users,
             seed=seed, drift=drift)  # type: ignore[arg-type]
    return config, tmp_path / "data"


def reports_of(data: Path, day: object, purpose: str = "personalization") -> Path:
    """Where a run's report and manifest for `day` are."""
    return data / "reports" / purpose / f"date={day}"


def records_of(data: Path, day: object, purpose: str = "personalization") -> Path:
    """Where a run's stage records for `day` are."""
    return data / "runs" / purpose / f"date={day}"


def mark_validated(ctx: object, day: object) -> None:
    """Records of a day that passed the input guardrails and validation, for tests that write
    a stage's input partition directly instead of running the stages before it."""
    from pipeline.core.records import GuardrailRecord, ValidationRecord

    records = ctx.records(day)
    records.save(GuardrailRecord(rows_in=100, rows_valid=100, rows_quarantined=0,
                                 users_after_consent=50, passed=True))
    records.save(ValidationRecord(success=True))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3 API server with an empty bucket `lake`; its endpoint."""
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    try:
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    except Exception as exc:  # noqa: BLE001 - the reason is the skip message
        pytest.skip(f"could not start moto's S3 server: {type(exc).__name__}: {exc}")
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lake")  # moto's state is
    # per process, shared by every server it starts: reset, so the bucket starts empty
    yield endpoint
    server.stop()
