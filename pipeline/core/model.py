"""The base of every config model, in a module of its own so that the parts config is built
from (`pipeline.features`) can use it without importing `pipeline.config`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Frozen and strict: an unknown key is an error, named with its path, at load; so is
    an infinite or NaN number."""

    # inf and nan are refused: `epsilon_per_window: .inf` would disable the budget
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
