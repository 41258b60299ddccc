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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import FeatureStoreConfig, PipelineConfig, PostgresStore, RedisStore
from pipeline.core.errors import ConfigError
from pipeline.core.fs import DataPath
from pipeline.core.layout import Layout, partition_name
from pipeline.core.records import PublishRecord
from pipeline.core.storage import atomic_write_bytes
from pipeline.features import DIMENSIONS
from pipeline.transforms.features import Release, mechanism_of

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from pipeline.access.policy import AccessPolicy

ENTITY = "cohort"
JOIN_KEY = "cohort_id"


def feature_repo_dir(cfg: PipelineConfig) -> Path:
    return _layout(cfg).local_area(cfg.zone("feature_store"))


def features_dir(cfg: PipelineConfig) -> DataPath:
    return _layout(cfg).area(cfg.zone("features"))


def _layout(cfg: PipelineConfig) -> Layout:
    return Layout(cfg.paths.root, cfg.paths.local)


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


def privacy_tags(cfg: PipelineConfig) -> dict[str, str]:
    """What a consumer must know to use the features honestly, as Feast tags (shown by
    `feast feature-views describe`, the UI and the registry): the DP guarantee of one
    release, its mechanism and privacy unit, and which ledger chain accounts for it."""
    f = cfg.features
    budget = f.release_budget
    ledger = (f"postgres (${cfg.budget.ledger_dsn_env})" if cfg.budget.ledger_dsn_env
              else f"sqlite {cfg.budget.ledger_path.as_posix()}")
    return {"privacy": "differential-privacy", "purpose": cfg.purpose,
            "privacy.feature_set": f.feature_set,
            f"privacy.{budget.param}_per_release": f"{budget.value:g}",
            "privacy.delta_per_release": f"{f.delta:g}",
            "privacy.accounting": cfg.budget.accounting,
            "privacy.mechanism": mechanism_of(f),
            "privacy.unit": f"user (pseudonym), up to {f.max_cohorts_per_user} cohort(s) per "
                            f"{f.period}",
            "privacy.period": f.period,
            "privacy.ledger_chain": f"purpose {cfg.purpose} in {ledger}"}


def project_definition(cfg: PipelineConfig) -> Any:
    """The Feast project (its name from `feature_store.project`), described."""
    from feast import Project

    return Project(name=cfg.feature_store.project,
                   description="Features released by the privacy pipeline: user-level "
                               "differentially private cohort features, each release "
                               "charged to the privacy ledger")


def service_name(cfg: PipelineConfig) -> str:
    return f"{cfg.features.feature_set}_serving"


def feature_definitions(cfg: PipelineConfig) -> list:
    """Entity, feature view and feature service (the values to serve: shrunk estimates where
    they exist) for the DP cohort features."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String

    dtypes = {"int": Int64, "float": Float64, "bool": Bool}
    tags = privacy_tags(cfg)
    schema = [Field(name=n, dtype=String, description=f"cohort {n.replace('_', ' ')} (public "
                    "grid)") for n in DIMENSIONS]
    schema += [Field(name=c.name, dtype=dtypes[c.dtype], description=c.description)
               for c in Release.of(cfg.features).columns()]
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
        tags=tags)
    serving = FeatureService(
        name=service_name(cfg), features=[view[Release.of(cfg.features).to_serve()]],
        description="What to serve and train on: each feature's shrunk estimate where it has "
                    "one (pooled toward its parents in the cohort grid, less noisy for small "
                    "cohorts), else its DP value.", tags=tags)
    return [cohort, view, serving]


DEFINITIONS = '''"""Feast definitions of the privacy pipeline's DP cohort features ({feature_set}).

Generated from {config} by every publish; do not edit (change the config instead). `feast
plan` and `feast apply` in this folder see exactly what the pipeline applies, so neither
deletes what a publish registered.
"""

from pipeline.access.policy import load_policy
from pipeline.config import load_config
from pipeline.outputs.feast import feature_definitions, permissions, project_definition

_cfg = load_config({config!r})
project = project_definition(_cfg)
{entity}, {view}, {service} = feature_definitions(_cfg)
# each permission under its own name ({feature_set}_readers, {feature_set}_writers)
globals().update({{p.name.replace("-", "_"): p
                  for p in permissions(_cfg, load_policy(_cfg.paths.access_policy))}})
'''


def write_definitions(cfg: PipelineConfig) -> Path:
    """The feature repo's Python definitions for the config's feature set, for the `feast`
    CLI (`plan`, `apply`, `ui`): Feast finds objects in a repo's modules by their global
    names, so each gets one."""
    fs = cfg.features.feature_set
    text = DEFINITIONS.format(feature_set=fs, config=str(cfg.source_path.resolve()),
                              entity=ENTITY, view=fs, service=service_name(cfg))
    path = feature_repo_dir(cfg) / f"{fs}_definitions.py"
    atomic_write_bytes(path, text.encode())
    return path


def permissions(cfg: PipelineConfig, policy: AccessPolicy) -> list:
    """Feast permissions for the feature view, from the access matrix: the roles that may
    `read_features` for the purpose read it (online, offline, its description); those that
    may `release` write it. Enforced by a Feast server with an auth manager (OIDC or
    Kubernetes, whose roles carry these names); the embedded store checks none."""
    from feast import FeatureView
    from feast.permissions.action import AuthzedAction
    from feast.permissions.permission import Permission
    from feast.permissions.policy import RoleBasedPolicy

    name, purpose = cfg.features.feature_set, cfg.purpose
    out = []
    for suffix, action, actions in (
            ("readers", "read_features", [AuthzedAction.READ_ONLINE,
                                          AuthzedAction.READ_OFFLINE,
                                          AuthzedAction.DESCRIBE]),
            ("writers", "release", [AuthzedAction.WRITE_ONLINE, AuthzedAction.WRITE_OFFLINE,
                                    AuthzedAction.CREATE, AuthzedAction.UPDATE,
                                    AuthzedAction.DELETE, AuthzedAction.DESCRIBE])):
        roles = policy.readers(purpose, action)
        if roles:
            out.append(Permission(
                name=f"{name}-{suffix}", types=[FeatureView],  # type: ignore[list-item]
                name_patterns=[name],
                actions=actions, policy=RoleBasedPolicy(roles=roles),
                tags={"purpose": purpose, "access_matrix_sha256": policy.sha256[:16]}))
    return out


def materialize(cfg: PipelineConfig, day: date, *, release: DataPath | None = None,
                policy: AccessPolicy | None = None) -> PublishRecord:
    """Apply the definitions and write the day's release to the online store, forward only.

    A cohort's online value is replaced only by a release at least as recent as the one it
    holds: re-running or backfilling an older date refreshes the offline store (its own
    partition, which Feast reads for training) and never rolls serving back to that date's
    values. Feast's own `materialize` writes whatever the window holds, so the release is
    written with `write_to_online_store`, after reading the stored timestamps. `release`: the
    day's released partition file (default: where the features stage writes it)."""
    import polars as pl

    write_feature_store_yaml(cfg)
    write_definitions(cfg)
    store = open_store(cfg)
    definitions = feature_definitions(cfg)
    project, granted = project_definition(cfg), permissions(cfg, policy) if policy else []
    store.apply([project, *definitions, *granted])
    _record_infra(store, project, definitions, granted)
    view = definitions[1]
    path = release or features_dir(cfg) / partition_name(day) / "part.parquet"
    table = pl.read_parquet(path.read_bytes())
    stored = online_timestamps(store, cfg, table["cohort_id"].to_list())
    ts = table["event_timestamp"].dt.replace_time_zone("UTC").to_list()
    newer = [c for c, t in zip(table["cohort_id"], ts, strict=True)
             if stored.get(c) is not None and stored[c] > t]
    forward = table.filter(~pl.col("cohort_id").is_in(newer))
    if forward.height:
        store.write_to_online_store(view.name, df=forward.to_pandas())
    return PublishRecord(feature_repo=str(feature_repo_dir(cfg)),
                         feature_view=cfg.features.feature_set,
                         online_store=cfg.feature_store.online_store.type,
                         offline_source=str(features_dir(cfg)),
                         online_written=forward.height, online_kept_newer=len(newer))


def _record_infra(store: FeatureStore, project: Any, definitions: list, granted: list
                  ) -> None:
    """Record the online tables in the registry's infra as `feast apply` does (the SDK's
    `apply` makes them but records none), so `feast plan` in the repo sees nothing to do."""
    from feast.repo_contents import RepoContents

    cohort, view, serving = definitions
    contents = RepoContents(projects=[project], data_sources=[view.batch_source],
                            feature_views=[view], on_demand_feature_views=[],
                            stream_feature_views=[], label_views=[], entities=[cohort],
                            feature_services=[serving], permissions=granted)
    _, _, infra = store.plan(contents)
    store.registry.update_infra(infra, store.project, commit=True)


def online_timestamps(store: FeatureStore, cfg: PipelineConfig, cohort_ids: list[str]
                      ) -> dict[str, datetime | None]:
    """cohort id -> the event timestamp of the value the online store holds (None: none),
    from Feast's online response (each value carries its timestamp and status)."""
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    if not cohort_ids:
        return {}
    response = store.get_online_features(
        features=[f"{cfg.features.feature_set}:active_users"],
        entity_rows=[{JOIN_KEY: c} for c in cohort_ids]).proto
    names = list(response.metadata.feature_names.val)
    vector = response.results[names.index("active_users")]
    held = {FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.OUTSIDE_MAX_AGE}
    return {c: ts.ToDatetime(tzinfo=UTC) if status in held else None
            for c, status, ts in zip(cohort_ids, vector.statuses, vector.event_timestamps,
                                     strict=True)}


def unknown_cohorts(cfg: PipelineConfig, cohort_ids: list[str]) -> list[str]:
    """The ids that are not cohorts of the public grid (region|age_band|device_type)."""
    f = cfg.features
    grid = {f"{r}|{a}|{d}" for r in f.regions for a in cfg.generalize.age_bands
            for d in f.device_types}
    return [c for c in cohort_ids if c not in grid]


def online_features(cfg: PipelineConfig, cohort_ids: list[str],
                    features: list[str] | None = None) -> dict[str, list]:
    """Read features for cohorts from the online store, as ML serving would (by default the
    value to serve of every enabled feature: shrunk estimates where they exist)."""
    store = open_store(cfg)
    fv = cfg.features.feature_set
    refs = [f"{fv}:{f}" for f in (features or Release.of(cfg.features).to_serve())]
    return store.get_online_features(features=refs,
                                     entity_rows=[{JOIN_KEY: c} for c in cohort_ids]).to_dict()


def training_features(cfg: PipelineConfig, entity_df: pd.DataFrame, features: list[str], *,
                      store: FeatureStore | None = None) -> pd.DataFrame:
    """Feast's point-in-time join with every entity row kept, in its order.

    `entity_df` holds `cohort_id` and `event_timestamp` (and anything else, carried through).
    Each row gets the latest release dated at or before its timestamp and within the view's
    TTL. A release of day D is dated D 23:59:59 and computed from day D's events, so give an
    event of day D the start of its day (D 00:00 UTC) as `event_timestamp`: it then joins the
    release of D-1, the one that existed before the event, never the one its own day made.

    Rows no release precedes (before the first release, past the TTL, a cohort outside the
    grid) come back with null features. Feast's file offline store drops such rows, returns
    the rest in its own order, and on a larger frame mixing them with matched rows fails in
    Dask ("Divisions calculation failed"); so only rows that have a release in their window
    are sent to Feast, and the others are joined back as nulls."""
    import pandas as pd
    import polars as pl

    store = store or open_store(cfg)
    names = [f.split(":", 1)[1] for f in features]
    on = [JOIN_KEY, "event_timestamp"]
    keys = pl.from_pandas(entity_df[on].drop_duplicates()).with_columns(
        pl.col("event_timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    released = _release_times(cfg)
    ttl = timedelta(days=cfg.feature_store.ttl_days)
    if released.height:
        keys = (keys.sort("event_timestamp")
                .join_asof(released.sort("_released_at"), left_on="event_timestamp",
                           right_on="_released_at", by=JOIN_KEY, strategy="backward",
                           tolerance=ttl, check_sortedness=False))
    else:
        keys = keys.with_columns(_released_at=pl.lit(None, pl.Datetime("us", "UTC")))
    matched = keys.filter(pl.col("_released_at").is_not_null()).select(on).with_row_index(
        "_key_row")
    values = matched.to_pandas()
    if len(values):
        joined = store.get_historical_features(entity_df=values, features=features).to_df()
        values = values.merge(joined[["_key_row", *names]], on="_key_row", how="left",
                              validate="one_to_one")
    else:
        values = values.assign(**{n: None for n in names})
    values = values.drop(columns="_key_row")
    rows = entity_df.reset_index(drop=True)
    stamps = pd.to_datetime(rows["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    values["event_timestamp"] = values["event_timestamp"].astype("datetime64[us, UTC]")
    out = rows.assign(_ts=stamps).merge(
        values.rename(columns={"event_timestamp": "_ts"}), on=[JOIN_KEY, "_ts"], how="left",
        validate="many_to_one")
    return out.drop(columns="_ts")


def _release_times(cfg: PipelineConfig) -> pl.DataFrame:
    """(cohort_id, _released_at) of every release in the offline source."""
    import polars as pl

    parts = [pl.read_parquet(p.read_bytes(), columns=[JOIN_KEY, "event_timestamp"])
             for p in sorted(features_dir(cfg).glob("date=*/part.parquet"))]
    if not parts:
        return pl.DataFrame(schema={JOIN_KEY: pl.String,
                                    "_released_at": pl.Datetime("us", "UTC")})
    return pl.concat(parts).select(
        JOIN_KEY, _released_at=pl.col("event_timestamp").dt.replace_time_zone("UTC")
        .dt.cast_time_unit("us"))
