"""The same stage code on a Dask cluster: a 2-worker cluster on this machine runs the table
stages one task per shard, and the day publishes exactly what the embedded run publishes."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from pipeline.core.records import ValidationRecord
from pipeline.run import run_all
from pipeline.stages import FUNNEL
from tests.conftest import generated_day

pytest.importorskip("distributed", reason="the distributed extra (dask) is not installed")

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


def test_when_shards_run_on_a_dask_cluster_then_the_published_rows_and_k_are_the_embedded_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs, seconds = {}, {}
    for engine in ("embedded", "dask"):
        (tmp_path / engine).mkdir()
        config, _ = generated_day(tmp_path / engine, monkeypatch, users=500, seed=12, scale={
            "events_per_shard": 1200, "engine": engine, "dask_workers": 2})
        start = time.perf_counter()
        ctx, published = run_all(DAY, config)
        seconds[engine] = time.perf_counter() - start
        assert published
        runs[engine] = ctx
    print(f"embedded {seconds['embedded']:.1f} s, dask (2 workers) {seconds['dask']:.1f} s")
    embedded, dask = runs["embedded"], runs["dask"]
    tables = [c.storage.read(c.zone("published"), DAY) for c in (embedded, dask)]
    assert tables[0].height > 0
    assert tables[1].sort(tables[1].columns).equals(tables[0].sort(tables[0].columns))
    assert len(dask.storage.parts(dask.zone("published"), DAY)) > 2
    for stage in FUNNEL:
        a, b = (c.records(DAY).stats()[stage] for c in (embedded, dask))
        assert (b.rows_in, b.rows_out, b.dropped, b.quarantined) == (
            a.rows_in, a.rows_out, a.dropped, a.quarantined), stage
    generalized = [c.records(DAY).stats()["generalize"].details for c in (embedded, dask)]
    assert generalized[0] == generalized[1] and generalized[0].k_achieved >= 5
    checks = [{(c.expectation, c.column): (c.success, c.observed)
               for c in c_.records(DAY).load(ValidationRecord).checks}
              for c_ in (embedded, dask)]
    assert checks[0] == checks[1]
    # ingest's byte ranges, each shard's suite and the DP release's bounding ran as tasks too
    outcomes = dask.records(DAY).outcomes()
    for stage in ("ingest", "consent", "validate", "features"):
        assert (outcomes[stage].mapped_s or 0) > 0, stage
    docs = Path(str(dask.records(DAY).load(ValidationRecord).data_docs_index))
    assert docs.name == "data_docs.html" and "shard 0" in docs.read_text()


def test_when_a_dask_worker_holds_another_key_then_the_stage_stops_and_nothing_is_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    from pipeline.distributed import close_clients

    other = "other-key:" + base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", other)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        config, _ = generated_day(tmp_path, monkeypatch, users=200, seed=3, scale={
            "events_per_shard": 1000, "engine": "dask",
            "dask_scheduler": cluster.scheduler_address})  # the run's own key, not the worker's
        ctx, published = run_all(DAY, config)
        close_clients()
    assert not published
    ingest = ctx.records(DAY).outcomes()["ingest"]  # its byte ranges are the first tasks
    assert ingest.status == "failed" and ingest.error == "KeyUnavailableError"
    assert "not the run's" in (ingest.message or "")
    assert not ctx.storage.exists(ctx.zone("ingested"), DAY)
