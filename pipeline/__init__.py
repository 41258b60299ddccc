"""privacy-pipeline: raw app events to privacy-safe features, stage by stage.

The public surface is what `__all__` names; everything else may change between releases. Names
are imported on first use, so `import pipeline.stages` (what the Airflow DAG file does) costs no
more than the standard library.
"""

import os as _os
import typing as _typing
from importlib import import_module as _import_module

# Polars' allocator (jemalloc) hands freed pages back to the system within a second, so a
# stage that reads a large day shard by shard peaks at about one shard rather than at
# everything it has read. Measured on a 3M-event day, as a task: generalize 2.2 -> 1.3 GB for
# 17 -> 20 s, the DP release 3.1 -> 1.9 GB. Polars' own setting never returns "muzzy" pages;
# `import polars` writes it into the environment, where child processes (Dask workers, a
# benchmark's runs) would inherit it, so it is replaced here too. Any other value already in
# the environment wins. Read when Polars loads: in a process that imported Polars first, this
# reaches only its children.
_POLARS_ALLOCATOR = "dirty_decay_ms:500,muzzy_decay_ms:-1"
if _os.environ.get("_RJEM_MALLOC_CONF", _POLARS_ALLOCATOR) == _POLARS_ALLOCATOR:
    _os.environ["_RJEM_MALLOC_CONF"] = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"

_EXPORTS = {
    "STAGES": "pipeline.stages",
    "BudgetExceededError": "pipeline.core.errors",
    "ConfigError": "pipeline.core.errors",
    "ErasureRequestError": "pipeline.core.errors",
    "KeyProvider": "pipeline.core.keys",
    "KeyRing": "pipeline.core.keys",
    "KeyUnavailableError": "pipeline.core.errors",
    "LedgerIntegrityError": "pipeline.core.errors",
    "MissingInputError": "pipeline.core.errors",
    "PipelineConfig": "pipeline.config",
    "PiiPolicyError": "pipeline.core.errors",
    "PipelineError": "pipeline.core.errors",
    "StorageError": "pipeline.core.errors",
    "ValidationFailedError": "pipeline.core.errors",
    "load_config": "pipeline.config",
    "load_key_ring": "pipeline.core.keys",
    "rekey": "pipeline.run",
    "run_all": "pipeline.run",
    "run_stage": "pipeline.run",
}
__all__ = list(_EXPORTS)

if _typing.TYPE_CHECKING:
    from pipeline.config import PipelineConfig as PipelineConfig
    from pipeline.config import load_config as load_config
    from pipeline.core.errors import (
        BudgetExceededError as BudgetExceededError,
    )
    from pipeline.core.errors import (
        ConfigError as ConfigError,
    )
    from pipeline.core.errors import (
        ErasureRequestError as ErasureRequestError,
    )
    from pipeline.core.errors import (
        KeyUnavailableError as KeyUnavailableError,
    )
    from pipeline.core.errors import (
        LedgerIntegrityError as LedgerIntegrityError,
    )
    from pipeline.core.errors import (
        MissingInputError as MissingInputError,
    )
    from pipeline.core.errors import (
        PiiPolicyError as PiiPolicyError,
    )
    from pipeline.core.errors import (
        PipelineError as PipelineError,
    )
    from pipeline.core.errors import (
        StorageError as StorageError,
    )
    from pipeline.core.errors import (
        ValidationFailedError as ValidationFailedError,
    )
    from pipeline.core.keys import KeyProvider as KeyProvider
    from pipeline.core.keys import KeyRing as KeyRing
    from pipeline.core.keys import load_key_ring as load_key_ring
    from pipeline.run import rekey as rekey
    from pipeline.run import run_all as run_all
    from pipeline.run import run_stage as run_stage
    from pipeline.stages import STAGES as STAGES


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(_import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
