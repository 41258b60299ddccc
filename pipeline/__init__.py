"""privacy-pipeline: raw app events to privacy-safe features, stage by stage.

The public surface is what `__all__` names; everything else may change between releases.
"""

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import (
    BudgetExceededError,
    ConfigError,
    KeyUnavailableError,
    LedgerIntegrityError,
    MissingInputError,
    PipelineError,
    ValidationFailedError,
)
from pipeline.run import STAGES, run_all, run_stage

__all__ = [
    "STAGES",
    "BudgetExceededError",
    "ConfigError",
    "KeyUnavailableError",
    "LedgerIntegrityError",
    "MissingInputError",
    "PipelineConfig",
    "PipelineError",
    "ValidationFailedError",
    "load_config",
    "run_all",
    "run_stage",
]
