"""Noise mechanisms and window accounting as values, chosen once from config.

A `Mechanism` says how a release's noise is drawn and which budget type (`pipeline.ledger.budget`)
it is calibrated in: Laplace noise for ε-DP, Gaussian noise for ρ-zCDP, whose error grows with
the square root of the cohorts a user may touch rather than linearly. An `Accountant` says in
which budget type a window adds releases up: pure accounting adds (ε, δ); zCDP adds (ρ, δ),
counting a pure ε release as ε²/2, which composes many small releases far more tightly (and is
stated as (ε, δ)-DP). The config literals `pure` / `zcdp` are mapped to these objects in
`pipeline.config.settings` and nowhere else (the shape of PipelineDP's `budget_accounting.py`:
accounting is an injected object, mechanisms are values, not string branches).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar, Literal, Protocol

from pipeline.core.errors import ConfigError
from pipeline.ledger.budget import (
    ApproxDP,
    IncompatibleBudgetError,
    PrivacyBudget,
    PureDP,
    RhoZCDP,
)


class Priced(Protocol):
    """What an accountant needs of a release."""

    @property
    def feature_set(self) -> str: ...
    @property
    def release_date(self) -> str: ...
    @property
    def budget(self) -> PrivacyBudget: ...


class Mechanism(ABC):
    """How a release's noise is drawn, and the budget type it is calibrated in."""

    label: ClassVar[str]  # in the release's mechanism string
    noise: ClassVar[Literal["laplace", "gaussian"]]  # the distribution drawn
    budget_type: ClassVar[type[PrivacyBudget]]

    def budget(self, value: float) -> PrivacyBudget:
        """`value` (ε or ρ) as this mechanism's budget."""
        return self.budget_type(value)  # type: ignore[call-arg]

    @abstractmethod
    def scale(self, part: PrivacyBudget, *, per_user: int, bound: float) -> float:
        """Noise scale of one statistic given `part` of a release's budget, when a user is in
        at most `per_user` rows, each moving it by at most `bound`."""

    @abstractmethod
    def calibrate(self, loss_at_unit_scale: float, part: PrivacyBudget) -> float:
        """The scale at which a query OpenDP charges `loss_at_unit_scale` at scale 1 costs
        `part`."""

    @abstractmethod
    def variance(self, scale: float) -> float:
        """Variance of one draw of the noise at `scale`."""

    @abstractmethod
    def budget_growth(self, error_ratio: float) -> float:
        """How many times a budget must grow for this noise's error to shrink `error_ratio`
        times."""

    @abstractmethod
    def measure(self, dp: SimpleNamespace) -> Any:
        """The OpenDP privacy measure the release is checked under."""

    @abstractmethod
    def accuracy(self, dp: SimpleNamespace) -> Any:
        """OpenDP's (scale, alpha) -> error bound for this noise."""


class Laplace(Mechanism):
    label = "Laplace, pure DP"
    noise = "laplace"
    budget_type = PureDP

    def scale(self, part: PrivacyBudget, *, per_user: int, bound: float) -> float:
        """k·B / ε: a user moves the statistic by k·B in L1."""
        return per_user * bound / part.to(PureDP).epsilon

    def calibrate(self, loss_at_unit_scale: float, part: PrivacyBudget) -> float:
        return loss_at_unit_scale / part.to(PureDP).epsilon  # ε falls as 1/scale

    def variance(self, scale: float) -> float:
        return 2 * scale**2

    def budget_growth(self, error_ratio: float) -> float:
        return error_ratio  # error falls as 1/ε

    def measure(self, dp: SimpleNamespace) -> Any:
        return dp.max_divergence()

    def accuracy(self, dp: SimpleNamespace) -> Any:
        return dp.laplace_accuracy


class Gaussian(Mechanism):
    label = "Gaussian, ρ-zCDP"
    noise = "gaussian"
    budget_type = RhoZCDP

    def scale(self, part: PrivacyBudget, *, per_user: int, bound: float) -> float:
        """√k·B / √(2ρ): a user moves the statistic by √k·B in L2."""
        return math.sqrt(per_user) * bound / math.sqrt(2 * part.to(RhoZCDP).rho)

    def calibrate(self, loss_at_unit_scale: float, part: PrivacyBudget) -> float:
        return math.sqrt(loss_at_unit_scale / part.to(RhoZCDP).rho)  # ρ falls as 1/scale²

    def variance(self, scale: float) -> float:
        return scale**2

    def budget_growth(self, error_ratio: float) -> float:
        return error_ratio**2  # error falls as 1/√ρ

    def measure(self, dp: SimpleNamespace) -> Any:
        return dp.zero_concentrated_divergence()

    def accuracy(self, dp: SimpleNamespace) -> Any:
        return dp.gaussian_accuracy


LAPLACE = Laplace()
GAUSSIAN = Gaussian()


@dataclass(frozen=True)
class Accountant:
    """How releases add up in a budget window: in `kind` (ApproxDP or RhoZCDP)."""

    kind: type[PrivacyBudget]

    @property
    def unit(self) -> str:
        return self.kind.unit

    def budget(self, value: float, delta: float = 0.0) -> PrivacyBudget:
        """A window's limit or spend in this accounting."""
        return self.kind(value, delta)  # type: ignore[call-arg]

    def zero(self) -> PrivacyBudget:
        return self.budget(0.0)

    def cost(self, release: Priced) -> PrivacyBudget:
        """What `release` counts against a window, in this accounting."""
        try:
            return release.budget.to(self.kind)
        except IncompatibleBudgetError:
            raise ConfigError(
                f"{release.feature_set} {release.release_date} is a zCDP release "
                f"({release.budget.describe()}); pure accounting cannot add it up: set "
                "budget.accounting: zcdp") from None

    def admits(self, mechanism: Mechanism) -> bool:
        """Whether releases of `mechanism` can be added up here."""
        try:
            mechanism.budget(1.0).to(self.kind)
        except IncompatibleBudgetError:
            return False
        return True


PURE = Accountant(ApproxDP)
ZCDP = Accountant(RhoZCDP)
