"""Privacy budgets as values: one type per accounting, with addition, comparison and conversion.

The shape of Tumult Analytics' `privacy_budget.py` (`PureDPBudget`, `RhoZCDPBudget`,
`ApproxDPBudget`): a release, a window's spend and a window's limit are each one of these, so
the ledger, the release, the planner and the report add and compare budgets, never loose floats
with a flag saying which measure they are in.

- `PureDP(ε)`: ε-DP (Laplace noise).
- `ApproxDP(ε, δ)`: (ε, δ)-DP. Basic composition adds both: what a window under `accounting:
  pure` adds up, δ coming from private cohort selection.
- `RhoZCDP(ρ, δ)`: ρ-zCDP (Bun & Steinke 2016; Gaussian noise), δ-approximate when private
  cohort selection adds a δ. Adds both: what a window under `accounting: zcdp` adds up.

Conversions (`to`): an ε-DP release is ε²/2-zCDP (Prop. 1.4), so pure releases add up in a zCDP
window, their δ carried as it is; ρ-zCDP is (ρ + 2√(ρ ln 1/δ'), δ')-DP for any δ' (Prop. 1.3),
which is how a zCDP spend is stated to a reader (`restated`). There is no way back: a zCDP
release has no ε of its own, so pure accounting cannot add it up (`IncompatibleBudgetError`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeVar

B = TypeVar("B", bound="PrivacyBudget")


class IncompatibleBudgetError(TypeError):
    """A budget cannot be stated in another accounting (ρ-zCDP as pure ε, say)."""


@dataclass(frozen=True)
class PrivacyBudget(ABC):
    """A privacy parameter in one accounting: `value` (ε or ρ) and `delta`."""

    unit: ClassVar[str]  # ε or ρ: what `value` measures
    param: ClassVar[str]  # epsilon or rho: the config and ledger name of `value`

    @property
    @abstractmethod
    def value(self) -> float: ...

    @property
    def delta(self) -> float:
        return 0.0

    @abstractmethod
    def _with(self: B, value: float, delta: float) -> B: ...

    @abstractmethod
    def _convert(self, kind: type[B]) -> B: ...

    def to(self, kind: type[B]) -> B:
        """This budget in `kind`'s accounting; IncompatibleBudgetError if it has none."""
        if isinstance(self, kind):
            return self
        return self._convert(kind)

    def __add__(self: B, other: PrivacyBudget) -> B:
        """Composition: `other` stated in this budget's accounting, then both parts added."""
        o = other.to(type(self))
        return self._with(self.value + o.value, self.delta + o.delta)

    def __radd__(self: B, other: object) -> B:  # sum(budgets, start) and sum() from 0
        if other == 0:
            return self
        return NotImplemented

    def __mul__(self: B, weight: float) -> B:
        """A `weight` share of this budget (ε and ρ compose linearly, and so does δ)."""
        return self._with(self.value * weight, self.delta * weight)

    def __truediv__(self: B, parts: float) -> B:
        """One of `parts` equal shares of this budget."""
        return self._with(self.value / parts, self.delta / parts)

    def within(self, limit: PrivacyBudget, *, rel: float = 0.0) -> bool:
        """Whether this budget fits in `limit` (both parts), allowing a relative `rel` of
        floating-point slack."""
        lim = limit.to(type(self))
        return self.value <= lim.value * (1 + rel) and self.delta <= lim.delta * (1 + rel)

    def __le__(self, other: PrivacyBudget) -> bool:
        return self.within(other)

    def restated(self, delta: float) -> ApproxDP | None:
        """This spend as (ε, δ)-DP at `delta`, for a reader, when it is not stated so already
        (None for ε and (ε, δ) budgets)."""
        return None

    @classmethod
    def largest_within(cls: type[B], budget: PrivacyBudget) -> B:
        """The largest budget of this type whose cost in `budget`'s accounting is `budget`."""
        return budget.to(cls)

    def describe(self) -> str:
        """As the report writes it: `ε = 1` or `ρ = 0.5`."""
        return f"{self.unit} = {self.value:g}"


@dataclass(frozen=True)
class PureDP(PrivacyBudget):
    epsilon: float
    unit: ClassVar[str] = "ε"
    param: ClassVar[str] = "epsilon"

    @property
    def value(self) -> float:
        return self.epsilon

    def _with(self, value: float, delta: float) -> PureDP:
        if delta:
            raise IncompatibleBudgetError(f"ε-DP has no δ (got δ = {delta:g})")
        return PureDP(value)

    def _convert(self, kind: type[B]) -> B:
        if kind is ApproxDP:
            return ApproxDP(self.epsilon, 0.0)  # type: ignore[return-value]
        if kind is RhoZCDP:
            return RhoZCDP(self.epsilon**2 / 2)  # type: ignore[return-value]
        raise IncompatibleBudgetError(f"ε-DP has no {kind.__name__} form")

    @classmethod
    def largest_within(cls, budget: PrivacyBudget) -> PureDP:
        if isinstance(budget, RhoZCDP):  # ε²/2 = ρ
            return PureDP(math.sqrt(2 * budget.rho))
        return PureDP(budget.to(ApproxDP).epsilon)


@dataclass(frozen=True)
class ApproxDP(PrivacyBudget):
    epsilon: float
    delta: float = 0.0  # type: ignore[assignment]
    unit: ClassVar[str] = "ε"
    param: ClassVar[str] = "epsilon"

    @property
    def value(self) -> float:
        return self.epsilon

    def _with(self, value: float, delta: float) -> ApproxDP:
        return ApproxDP(value, delta)

    def _convert(self, kind: type[B]) -> B:
        if kind is RhoZCDP:  # the ε part as ε-DP is ε²/2-zCDP; δ carried
            return RhoZCDP(self.epsilon**2 / 2, self.delta)  # type: ignore[return-value]
        if kind is PureDP and not self.delta:
            return PureDP(self.epsilon)  # type: ignore[return-value]
        raise IncompatibleBudgetError(f"(ε, δ)-DP with δ = {self.delta:g} is not "
                                      f"{kind.__name__}")

    def describe(self) -> str:
        return f"ε = {self.epsilon:g}, δ = {self.delta:g}"


@dataclass(frozen=True)
class RhoZCDP(PrivacyBudget):
    rho: float
    delta: float = 0.0  # type: ignore[assignment]
    unit: ClassVar[str] = "ρ"
    param: ClassVar[str] = "rho"

    @property
    def value(self) -> float:
        return self.rho

    def _with(self, value: float, delta: float) -> RhoZCDP:
        return RhoZCDP(value, delta)

    def _convert(self, kind: type[B]) -> B:
        raise IncompatibleBudgetError(f"ρ-zCDP (ρ = {self.rho:g}) has no ε of its own: it "
                                      f"cannot be added up as {kind.__name__}")

    def restated(self, delta: float) -> ApproxDP:
        """(ρ + 2√(ρ ln 1/δ), δ)-DP (Bun & Steinke 2016, Prop. 1.3)."""
        return ApproxDP(self.rho + 2 * math.sqrt(self.rho * math.log(1 / delta)), delta)


def release_budget(*, epsilon: float | None, rho: float, delta: float) -> PrivacyBudget:
    """A stored release's budget from its ledger columns: ε (None for a zCDP release, which
    has only ρ), ρ (a pure release's ε²/2, kept for zCDP accounting) and δ."""
    if epsilon is None:
        return RhoZCDP(rho, delta)
    return ApproxDP(epsilon, delta) if delta else PureDP(epsilon)


def ledger_epsilon(budget: PrivacyBudget) -> float | None:
    """The ε column of a release costing `budget`: None for a zCDP release (it has none)."""
    try:
        return budget.to(ApproxDP).epsilon
    except IncompatibleBudgetError:
        return None
