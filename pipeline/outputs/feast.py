"""Publish DP cohort features to a Feast feature store.

Offline: the released feature partitions (`features/<feature_set>/date=D/part.parquet`) are the
Feast file source. Online: SQLite by default, Redis or Postgres when `feature_store.online_store`
says so; the same config files switch between them. Feast's `RepoConfig` is built in memory from
the pipeline config, so there is one source of truth; `feature_store.yaml` is written beside the
registry at publish for the `feast` CLI.

ML teams read features with `pipeline.outputs.feast.open_store(cfg)` and Feast's own API:
`get_online_features` for serving, `get_historical_features` for point-in-time training sets.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import FeatureStoreConfig, PipelineConfig, PostgresStore, RedisStore
from pipeline.core.errors import ConfigError
from pipeline.core.fs import DataPath
from pipeline.core.records import PublishRecord
from pipeline.core.storage import atomic_write_bytes
from pipeline.transforms.features import DIMENSIONS, count_features, released_columns

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

ENTITY = "cohort"
JOIN_KEY = "cohort_id"


def feature_repo_dir(cfg: PipelineConfig) -> Path:
    return cfg.paths.local / cfg.zone("feature_store").path


def features_dir(cfg: PipelineConfig) -> DataPath:
    return cfg.paths.root / cfg.zone("features").path


def _online_store(cfg: FeatureStoreConfig, repo: Path, *, secrets: bool) -> dict[str, Any]:
    """The online store's Feast settings. A Postgres password is read from its environment
    variable when `secrets` (the in-memory config), else written as `${VAR}`, which Feast's
    YAML loader expands: no secret on disk."""
    store = cfg.online_store
    if isinstance(store, RedisStore):
        return {"type": "redis", "connection_string": store.connection_string}
    if isinstance(store, PostgresStore):
        password = ""
        if store.password_env:
            value = os.environ.get(store.password_env)
            if not value:
                raise ConfigError(f"feature_store.online_store.password_env: environment "
                                  f"variable {store.password_env} is not set")
            password = value if secrets else "${" + store.password_env + "}"
        return {"type": "postgres", "host": store.host, "port": store.port,
                "database": store.database, "db_schema": store.db_schema, "user": store.user,
                "password": password, "sslmode": store.sslmode}
    return {"type": "sqlite", "path": str(repo / "online_store.db")}


def _repo_doc(cfg: PipelineConfig, *, secrets: bool) -> dict[str, Any]:
    repo = feature_repo_dir(cfg)
    return {"project": cfg.feature_store.project, "provider": "local",
            "registry": str(repo / "registry.db"),
            "online_store": _online_store(cfg.feature_store, repo, secrets=secrets),
            "offline_store": {"type": "file"}, "entity_key_serialization_version": 3}


def repo_config(cfg: PipelineConfig) -> RepoConfig:
    """Feast's own config object, built from the pipeline config (the one source of truth)."""
    from feast.repo_config import RepoConfig

    repo = RepoConfig(**_repo_doc(cfg, secrets=True))
    repo.repo_path = feature_repo_dir(cfg)
    return repo


def write_feature_store_yaml(cfg: PipelineConfig) -> Path:
    """`feature_store.yaml` beside the registry, for the `feast` CLI; the pipeline itself uses
    `repo_config`."""
    path = feature_repo_dir(cfg) / "feature_store.yaml"
    atomic_write_bytes(path, yaml.safe_dump(_repo_doc(cfg, secrets=False),
                                            sort_keys=False).encode())
    return path


def open_store(cfg: PipelineConfig) -> FeatureStore:
    """The configured Feast store."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(feature_repo_dir(cfg)), config=repo_config(cfg))


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
    endpoint = cfg.paths.storage_options.get("client_kwargs", {}).get("endpoint_url")
    source = FileSource(name=f"{cfg.features.feature_set}_source", path=str(features_dir(cfg)),
                        timestamp_field="event_timestamp", s3_endpoint_override=endpoint)
    view = FeatureView(
        name=cfg.features.feature_set, entities=[cohort], schema=schema, source=source,
        ttl=timedelta(days=cfg.feature_store.ttl_days), online=True,
        description="User-level differentially private cohort features (OpenDP). Each value "
                    "has its noise scale in <feature>_noise_scale, a 95% error bound in "
                    "<feature>_error95 and <feature>_unreliable where that bound exceeds it.",
        tags={"privacy": "differential-privacy", "purpose": cfg.purpose})
    return [cohort, view]


def materialize(cfg: PipelineConfig, day: date) -> PublishRecord:
    """Apply the definitions and materialize the day's features into the online store."""
    write_feature_store_yaml(cfg)
    store = open_store(cfg)
    store.apply(feature_definitions(cfg))
    start = datetime.combine(day, time(), tzinfo=UTC)
    store.materialize(start_date=start, end_date=start + timedelta(days=1))
    return PublishRecord(feature_repo=str(feature_repo_dir(cfg)),
                         feature_view=cfg.features.feature_set,
                         online_store=cfg.feature_store.online_store.type,
                         offline_source=str(features_dir(cfg)))


def online_features(cfg: PipelineConfig, cohort_ids: list[str],
                    features: list[str] | None = None) -> dict[str, list]:
    """Read features for cohorts from the online store, as ML serving would."""
    store = open_store(cfg)
    fv = cfg.features.feature_set
    refs = [f"{fv}:{f}" for f in (features or ["active_users", "mean_session_seconds"])]
    return store.get_online_features(features=refs,
                                     entity_rows=[{JOIN_KEY: c} for c in cohort_ids]).to_dict()
