"""The same config switches the online store to Redis or Postgres; publish and read back.

Uses the real servers on this machine (127.0.0.1:6379, 127.0.0.1:5432 database `test`) and
skips with a message when one is not reachable.
"""

from __future__ import annotations

import socket
import uuid
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.core.storage import atomic_write_bytes, parquet_bytes
from pipeline.outputs.feast import features_dir, materialize, online_features, open_store
from pipeline.transforms.features import release_features
from tests.conftest import write_config

DAY = "2026-11-01"
READ_BACK = ("active_users", "share_news_shrunk", "purchase_rate", "purchase_rate_unreliable")


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _publish_and_read(tmp_path: Path, online_store: dict) -> tuple[dict, pl.DataFrame]:
    config = write_config(tmp_path, feature_store__online_store=online_store,
                          feature_store__project=f"pp_test_{uuid.uuid4().hex[:10]}")
    cfg = load_config(config)
    events = pl.DataFrame({"user_pseudonym": [f"u{i}" for i in range(300)],
                           "region": ["Texas"] * 300, "age_band": ["25-34"] * 300,
                           "device_type": ["mobile"] * 300, "content_category": ["news"] * 300,
                           "event_type": ["purchase", "view", "view"] * 100,
                           "session_seconds": [120] * 300})
    release, _ = release_features(events, cfg.features, age_bands=cfg.generalize.age_bands,
                                  user_col="user_pseudonym", release_date=DAY)
    atomic_write_bytes(features_dir(cfg) / f"date={DAY}" / "part.parquet",
                       parquet_bytes(release.table))
    cohort = "Texas|25-34|mobile"
    try:
        materialize(cfg, date.fromisoformat(DAY))
        got = online_features(cfg, [cohort], list(READ_BACK))
    finally:
        open_store(cfg).teardown()  # leave the shared server as we found it
    return got, release.table.filter(pl.col("cohort_id") == cohort)


@pytest.mark.skipif(not _reachable(6379), reason="Redis is not running on 127.0.0.1:6379")
def test_when_online_store_is_redis_then_features_read_back(tmp_path: Path) -> None:
    got, expected = _publish_and_read(tmp_path, {"type": "redis",
                                                 "connection_string": "127.0.0.1:6379"})
    for feature in READ_BACK:
        assert got[feature] == expected[feature].to_list(), feature


@pytest.mark.skipif(not _reachable(5432), reason="PostgreSQL is not running on 127.0.0.1:5432")
def test_when_online_store_is_postgres_then_features_read_back(tmp_path: Path) -> None:
    got, expected = _publish_and_read(tmp_path, {"type": "postgres", "host": "127.0.0.1",
                                                 "port": 5432, "database": "test",
                                                 "user": "postgres", "sslmode": "disable"})
    for feature in READ_BACK:
        assert got[feature] == expected[feature].to_list(), feature


STORES = {
    "sqlite": ({"type": "sqlite"}, True),
    "redis": ({"type": "redis", "connection_string": "127.0.0.1:6379"}, _reachable(6379)),
    "postgres": ({"type": "postgres", "host": "127.0.0.1", "port": 5432, "database": "test",
                  "user": "postgres", "sslmode": "disable"}, _reachable(5432)),
}


def _write_release(cfg: object, day: str, users: int) -> pl.DataFrame:
    events = pl.DataFrame({"user_pseudonym": [f"{day}-u{i}" for i in range(users)],
                           "region": ["Texas"] * users, "age_band": ["25-34"] * users,
                           "device_type": ["mobile"] * users,
                           "content_category": ["news"] * users,
                           "event_type": ["view"] * users, "session_seconds": [60] * users})
    release, _ = release_features(events, cfg.features, age_bands=cfg.generalize.age_bands,
                                  user_col="user_pseudonym", release_date=day)
    atomic_write_bytes(features_dir(cfg) / f"date={day}" / "part.parquet",
                       parquet_bytes(release.table))
    return release.table


@pytest.mark.parametrize("backend", list(STORES))
def test_when_an_older_date_is_materialized_again_then_serving_keeps_the_latest(
        tmp_path: Path, backend: str) -> None:
    online_store, up = STORES[backend]
    if not up:
        pytest.skip(f"{backend} is not running on 127.0.0.1")
    cfg = load_config(write_config(tmp_path, feature_store__online_store=online_store,
                                   feature_store__project=f"pp_test_{uuid.uuid4().hex[:10]}"))
    days = {"2026-11-01": 200, "2026-11-02": 500, "2026-11-03": 900}
    tables = {d: _write_release(cfg, d, n) for d, n in days.items()}
    cohort = "Texas|25-34|mobile"
    try:
        for d in days:
            materialize(cfg, date.fromisoformat(d))
        latest = online_features(cfg, [cohort], ["active_users"])["active_users"]
        rerun = materialize(cfg, date.fromisoformat("2026-11-01"))  # a re-run or backfill
        after = online_features(cfg, [cohort], ["active_users"])["active_users"]
    finally:
        open_store(cfg).teardown()
    expected = tables["2026-11-03"].filter(pl.col("cohort_id") == cohort)["active_users"]
    assert latest == after == expected.to_list()
    assert after != tables["2026-11-01"].filter(
        pl.col("cohort_id") == cohort)["active_users"].to_list()
    n = tables["2026-11-01"].height
    assert (rerun.online_written, rerun.online_kept_newer) == (0, n)
