"""Row accounting: every stage says how many rows came in, went out, and why the rest left.

The run report adds these up and refuses a funnel that does not balance: nothing is lost
silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core.errors import PipelineError


@dataclass
class StageStats:
    stage: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def check_balanced(self) -> StageStats:
        removed = sum(self.dropped.values()) + sum(self.quarantined.values())
        if self.rows_in != self.rows_out + removed:
            raise PipelineError(
                f"stage {self.stage}: rows do not add up: in={self.rows_in} out={self.rows_out} "
                f"dropped+quarantined={removed}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        return cls(**d)
