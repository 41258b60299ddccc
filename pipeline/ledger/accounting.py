"""Privacy accounting and noise mechanisms as values, chosen once from config.

An `Accountant` says how releases add up in a window: pure accounting adds up ε; zCDP adds up ρ,
counting a pure ε release as ε²/2, which composes many small releases far more tightly (and is
stated as (ε, δ)-DP). A `Mechanism` says how a release's noise is drawn: Laplace for pure ε-DP,
Gaussian for ρ-zCDP, whose error grows with the square root of the cohorts a user may touch
rather than linearly. The config literals `pure` / `zcdp` are mapped to these objects in
`pipeline.config.settings` and nowhere else (the shape of PipelineDP's `budget_accounting.py`:
accounting is an injected object, mechanisms are values, not string branches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

from pipeline.core.errors import ConfigError


class Priced(Protocol):
    """What an accountant needs of a release."""

    @property
    def feature_set(self) -> str: ...
    @property
    def release_date(self) -> str: ...
    @property
    def epsilon(self) -> float | None: ...
    @property
    def rho(self) -> float: ...


@dataclass(frozen=True)
class Mechanism:
    """How a release's noise is drawn and what its privacy parameter measures."""

    label: str  # in the release's mechanism string
    pure: bool  # ε-DP (Laplace) rather than ρ-zCDP (Gaussian)

    def scale(self, *, budget: float, share: float, n_stats: int, per_user: int,
              bound: float) -> float:
        """Noise scale of one statistic that gets `share` of the release's `budget` (ε or ρ),
        split over `n_stats` statistics, when a user is in at most `per_user` rows, each moving
        it by at most `bound`: k·B / ε in L1 (Laplace), √k·B / √(2ρ) in L2 (Gaussian)."""
        part = budget * share / n_stats
        if self.pure:
            return per_user * bound / part
        return math.sqrt(per_user) * bound / math.sqrt(2 * part)

    def calibrate(self, loss_at_unit_scale: float, budget: float) -> float:
        """The scale at which a query OpenDP charges `loss_at_unit_scale` at scale 1 costs
        `budget`: ε falls as 1/scale, ρ as 1/scale²."""
        ratio = loss_at_unit_scale / budget
        return ratio if self.pure else math.sqrt(ratio)

    def variance(self, scale: float) -> float:
        """Variance of one draw of the noise at `scale` (2b² for Laplace, σ² for Gaussian)."""
        return 2 * scale**2 if self.pure else scale**2

    def measure(self, dp: SimpleNamespace) -> Any:
        """The OpenDP privacy measure the release is checked under."""
        return dp.max_divergence() if self.pure else dp.zero_concentrated_divergence()

    def accuracy(self, dp: SimpleNamespace) -> Any:
        """OpenDP's (scale, alpha) -> error bound for this noise."""
        return dp.laplace_accuracy if self.pure else dp.gaussian_accuracy


LAPLACE = Mechanism(label="Laplace, pure DP", pure=True)
GAUSSIAN = Mechanism(label="Gaussian, ρ-zCDP", pure=False)


@dataclass(frozen=True)
class Accountant:
    """How releases add up in a budget window."""

    unit: str  # ε or ρ
    zcdp: bool

    def cost(self, release: Priced) -> float:
        """What `release` counts against a window: ρ under zCDP (a pure release's ε²/2), else
        ε (a zCDP release cannot be added up in ε)."""
        if self.zcdp:
            return release.rho
        if release.epsilon is None:
            raise ConfigError(
                f"{release.feature_set} {release.release_date} is a zCDP release "
                f"(ρ={release.rho:g}); pure accounting cannot add it up: set "
                "budget.accounting: zcdp")
        return release.epsilon

    def admits(self, mechanism: Mechanism) -> bool:
        return self.zcdp or mechanism.pure

    def as_epsilon(self, spent: float, delta: float) -> float | None:
        """The ε of (ε, δ)-DP a zCDP spend amounts to (Bun & Steinke 2016, Prop. 1.3); None
        under pure accounting, where the spend is ε already."""
        if not self.zcdp:
            return None
        return spent + 2 * math.sqrt(spent * math.log(1 / delta))


PURE = Accountant(unit="ε", zcdp=False)
ZCDP = Accountant(unit="ρ", zcdp=True)
