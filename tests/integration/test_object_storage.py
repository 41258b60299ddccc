"""The data root in an object store: a day runs against a real S3 API server (moto's server
mode, as s3fs tests itself), sharded, embedded and on a 2-worker Dask cluster whose tasks read
and write their shards in the bucket themselves, and everything a run writes under the data root is
there, readable: partitions (encrypted staging included), quarantine, the published table,
DP features that Feast materializes and serves, reports and records."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.core.fs import data_path
from pipeline.outputs.feast import online_features
from pipeline.run import run_all
from tests.conftest import TEST_KEY_TEXT, write_config

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ["embedded", "dask"])
def test_when_the_data_root_is_s3_then_a_sharded_day_runs_and_publishes_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: str, engine: str) -> None:
    from pipeline.demo.generate import generate

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    options = {"client_kwargs": {"endpoint_url": s3}}
    config = write_config(tmp_path, paths__data_root="s3://lake/data",
                          paths__local_root=str(tmp_path / "local"),
                          paths__storage_options=options,
                          scale={"events_per_shard": 1000, "engine": engine,
                                 "lock": "object_store"})  # leases in the bucket
    root = data_path("s3://lake/data", options)
    generate(root, start=date.fromisoformat(DAY), days=1, users=300, seed=4)

    ctx, published = run_all(DAY, config)

    assert published
    assert not (tmp_path / "data").exists()
    local = sorted(p.relative_to(tmp_path / "local").parts[0]
                   for p in (tmp_path / "local").iterdir())
    assert local == ["audit_log", "consent_log", "feature_repo", "ledger",
                     "validation"]  # local files (the run locks are leases in the bucket)
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert not [p for p in written if p.startswith(".locks/")]  # every lease released
    staging = [p for p in written if p.startswith("staging/personalization/generalized/")]
    assert len(staging) > 1 and all(p.endswith(".parquet.enc") for p in staging)
    for expected in (f"quarantine/personalization/events/date={DAY}/part.parquet",
                     f"features/cohort_daily/date={DAY}/part.parquet",
                     f"reports/personalization/date={DAY}/report.html",
                     f"reports/personalization/date={DAY}/manifest.json",
                     f"runs/personalization/date={DAY}/validation.json",
                     "keys/fingerprints.json"):
        assert expected in written, expected
    assert not [p for p in written if p.endswith(".tmp") or "/_spill/" in p]
    table = ctx.storage.read(ctx.zone("published"), DAY)
    assert table.height > 0
    quarantined = pl.read_parquet(io.BytesIO(
        (root / f"quarantine/personalization/events/date={DAY}/part.parquet").read_bytes()))
    assert quarantined.height > 0 and "reason" in quarantined.columns
    # Feast reads its offline source from the bucket, and serves what it materialized.
    released = pl.read_parquet(io.BytesIO(
        (root / f"features/cohort_daily/date={DAY}/part.parquet").read_bytes()))
    cohort, users = released.select("cohort_id", "active_users").row(0)
    served = online_features(load_config(config), [cohort], ["active_users"])
    assert served["active_users"] == [users]
