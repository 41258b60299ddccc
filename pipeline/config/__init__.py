"""Typed configuration, in three layers: data contracts (`contracts`: event schemas and purpose
allowlists), run settings (`settings`: one section per concern) and the loader (`loader`:
YAML files to a checked `PipelineConfig`, cross-section rules in one `check_compatible`).

Everything is re-exported here, so `from pipeline.config import load_config, PiiConfig` works.
"""

from pipeline.config.contracts import (
    Domain,
    FieldSpec,
    FieldType,
    Handling,
    Profile,
    PurposeSpec,
    RecordSchema,
)
from pipeline.config.loader import check_compatible, load_config
from pipeline.config.settings import (
    GENERALIZABLE,
    BudgetConfig,
    FeaturesConfig,
    FeatureSpecs,
    FeatureStoreConfig,
    GeneralizeConfig,
    GuardrailsConfig,
    IngestConfig,
    KAnonymityConfig,
    KeysConfig,
    MonitorConfig,
    PathsConfig,
    PiiConfig,
    PipelineConfig,
    PostgresStore,
    RedisStore,
    RetentionConfig,
    RotationConfig,
    SqliteStore,
    age_band_labels,
)
from pipeline.features.base import FeatureShare
from pipeline.features.category_votes import CategoryVotesFeature
from pipeline.features.events_per_category import EventCountsFeature
from pipeline.features.mean_session import MeanFeature

__all__ = [
    "GENERALIZABLE", "BudgetConfig", "CategoryVotesFeature", "Domain", "EventCountsFeature",
    "FeatureShare", "FeatureSpecs", "Profile",
    "FeatureStoreConfig", "FeaturesConfig", "FieldSpec", "FieldType", "GeneralizeConfig",
    "GuardrailsConfig", "IngestConfig",
    "Handling", "KAnonymityConfig", "KeysConfig", "MeanFeature", "MonitorConfig", "PathsConfig",
    "PiiConfig",
    "PipelineConfig", "PostgresStore", "PurposeSpec", "RecordSchema", "RedisStore",
    "RetentionConfig", "RotationConfig", "SqliteStore", "age_band_labels", "check_compatible",
    "load_config",
]
