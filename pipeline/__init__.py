"""privacy-pipeline: raw app events to privacy-safe features, stage by stage.

The public surface is what `__all__` names; everything else may change between releases.
"""

from pipeline.config import PipelineConfig, load_config
from pipeline.core.errors import (
    BudgetExceededError,
    ConfigError,
    KeyUnavailableError,
    LedgerIntegrityError,
    MissingInputError,
    PiiPolicyError,
    PipelineError,
    ValidationFailedError,
)
from pipeline.core.keys import KeyProvider, KeyRing, load_key_ring
from pipeline.run import STAGES, rekey, run_all, run_stage

__all__ = [
    "STAGES",
    "BudgetExceededError",
    "ConfigError",
    "KeyProvider",
    "KeyRing",
    "KeyUnavailableError",
    "LedgerIntegrityError",
    "MissingInputError",
    "PipelineConfig",
    "PiiPolicyError",
    "PipelineError",
    "ValidationFailedError",
    "load_config",
    "load_key_ring",
    "rekey",
    "run_all",
    "run_stage",
]
