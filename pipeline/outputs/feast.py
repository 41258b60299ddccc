"""Publish DP cohort features to a Feast feature store.

Offline: the released feature partitions (`features/<feature_set>/date=D/part.parquet`) are the
Feast file source. Online: SQLite by default, Redis or Postgres when `feature_store.online_store`
says so; the same config files switch between them. `feature_store.yaml` is generated from the
pipeline config on every publish, so there is one source of truth.

ML teams read features with `pipeline.outputs.feast.open_store(cfg)` and Feast's own API:
`get_online_features` for serving, `get_historical_features` for point-in-time training sets.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import FeatureStoreConfig, PipelineConfig, PostgresStore, RedisStore
from pipeline.core.errors import ConfigError
from pipeline.core.storage import atomic_write_bytes
from pipeline.transforms.features import DIMENSIONS, count_features, released_columns

if TYPE_CHECKING:
    from feast import FeatureStore

ENTITY = "cohort"
JOIN_KEY = "cohort_id"


def feature_repo_dir(cfg: PipelineConfig) -> Path:
    return cfg.paths.data_root / "feature_repo"


def features_dir(cfg: PipelineConfig) -> Path:
    from pipeline.transforms.features import features_zone

    return cfg.paths.data_root / features_zone(cfg.features).name


def _online_store(cfg: FeatureStoreConfig, repo: Path) -> dict[str, Any]:
    store = cfg.online_store
    if isinstance(store, RedisStore):
        return {"type": "redis", "connection_string": store.connection_string}
    if isinstance(store, PostgresStore):
        password = ""
        if store.password_env:  # Feast reads `${VAR}` from the environment: no secret on disk
            if not os.environ.get(store.password_env):
                raise ConfigError(f"feature_store.online_store.password_env: environment "
                                  f"variable {store.password_env} is not set")
            password = "${" + store.password_env + "}"
        return {"type": "postgres", "host": store.host, "port": store.port,
                "database": store.database, "db_schema": store.db_schema, "user": store.user,
                "password": password, "sslmode": store.sslmode}
    return {"type": "sqlite", "path": str(repo / "online_store.db")}


def write_feature_store_yaml(cfg: PipelineConfig) -> Path:
    """Render `feature_store.yaml` from the pipeline config."""
    repo = feature_repo_dir(cfg)
    online = _online_store(cfg.feature_store, repo)
    doc = {"project": cfg.feature_store.project, "provider": "local",
           "registry": str(repo / "registry.db"), "online_store": online,
           "offline_store": {"type": "file"}, "entity_key_serialization_version": 3}
    path = repo / "feature_store.yaml"
    atomic_write_bytes(path, yaml.safe_dump(doc, sort_keys=False).encode())
    return path


def open_store(cfg: PipelineConfig) -> FeatureStore:
    """The configured Feast store (writes its feature_store.yaml first)."""
    from feast import FeatureStore

    write_feature_store_yaml(cfg)
    return FeatureStore(repo_path=str(feature_repo_dir(cfg)))


def feature_definitions(cfg: PipelineConfig) -> list:
    """Entity and feature view for the DP cohort features."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String

    counts = count_features(cfg.features)
    schema = [Field(name=n, dtype=String) for n in DIMENSIONS]
    for name in released_columns(cfg.features):
        dtype = (Bool if name.endswith("_unreliable") else Int64 if name in counts else Float64)
        schema.append(Field(name=name, dtype=dtype))
    cohort = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.STRING,
                    description="region|age_band|device_type, from the public cohort grid")
    source = FileSource(name=f"{cfg.features.feature_set}_source", path=str(features_dir(cfg)),
                        timestamp_field="event_timestamp")
    view = FeatureView(
        name=cfg.features.feature_set, entities=[cohort], schema=schema, source=source,
        ttl=timedelta(days=cfg.feature_store.ttl_days), online=True,
        description="User-level differentially private cohort features (OpenDP). Each value "
                    "has its noise scale in <feature>_noise_scale, a 95% error bound in "
                    "<feature>_error95 and <feature>_unreliable where that bound exceeds it.",
        tags={"privacy": "differential-privacy", "purpose": cfg.purpose})
    return [cohort, view]


def publish(cfg: PipelineConfig, release_date: str) -> dict[str, Any]:
    """Apply the definitions and materialize the day's features into the online store."""
    store = open_store(cfg)
    store.apply(feature_definitions(cfg))
    day = datetime.fromisoformat(release_date).replace(tzinfo=UTC)
    store.materialize(start_date=day, end_date=day + timedelta(days=1))
    return {"feature_repo": str(feature_repo_dir(cfg)), "feature_view": cfg.features.feature_set,
            "online_store": cfg.feature_store.online_store.type,
            "offline_source": str(features_dir(cfg))}


def online_features(cfg: PipelineConfig, cohort_ids: list[str],
                    features: list[str] | None = None) -> dict[str, list]:
    """Read features for cohorts from the online store, as ML serving would."""
    store = open_store(cfg)
    fv = cfg.features.feature_set
    refs = [f"{fv}:{f}" for f in (features or ["active_users", "mean_session_seconds"])]
    return store.get_online_features(features=refs,
                                     entity_rows=[{JOIN_KEY: c} for c in cohort_ids]).to_dict()
