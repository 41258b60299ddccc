"""What a DP cohort feature declares, so that the release, the planner, the Feast schema and the
CLI iterate over the registry (`pipeline.features.REGISTRY`) instead of naming features.

A feature is one class (PipelineDP's `combiners.py`: one class per metric) that says:
- its config model (`config`, the YAML block under `features.features.<name>`);
- what one user contributes to a cohort (`per_user`: aggregations over a (user, cohort)'s events,
  clipped to public bounds, so the sensitivity holds by construction);
- the budget it asks for (`request`, a weight the release's accountant normalises) and the
  OpenDP statistics it adds to the release's measurement (`statistics`, each with the bound one
  row moves it by), or a measurement of its own (`collector`);
- how its noisy statistics become published columns (`released`), with each column's type and
  Feast description (`columns`);
- its expected 95% error before any noise is drawn (`expected_error`), which the planner and the
  run report use, and the released bounds that error is checked against (`error_columns`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from pydantic import Field

from pipeline.core.model import Model
from pipeline.features.accountant import BudgetRequest, ReleaseAccountant
from pipeline.ledger.accounting import Mechanism
from pipeline.ledger.budget import PrivacyBudget

if TYPE_CHECKING:
    import polars as pl

# The public cohort grid's dimensions: every feature is released per cohort of these.
DIMENSIONS = ("region", "age_band", "device_type")
MAX_ROWS_BOUND = 1_000_000_000  # public bound on table length, for OpenDP's overflow checks
# Column order in a release and in Feast: counts, then averages, then shares.
COUNT, AVERAGE, SHARE = 0, 1, 2
Accuracy = Callable[[float, float], float]  # OpenDP's (scale, alpha) -> error bound
# How a value moves from day to day without any drift, as its cohort's users n grow: a count's
# variance as n, a mean's as 1/n, a share's or a rate's as q(1 - q)/n (`pipeline.monitor`)
Variation = Literal["count", "mean", "share"]


class FeatureShare(Model):
    """A released feature and its share of the release's ε (or ρ)."""

    budget_share: Annotated[float, Field(gt=0, le=1)]


@dataclass(frozen=True)
class Grid:
    """What every feature of one release is computed over: public, from config."""

    categories: tuple[str, ...]
    per_user: int  # cohorts a user may count in (`max_cohorts_per_user`)
    mechanism: Mechanism

    def scale(self, part: PrivacyBudget, bound: float) -> float:
        """The noise scale of a statistic given `part` of the budget, each of a user's rows
        moving it by at most `bound`."""
        return self.mechanism.scale(part, per_user=self.per_user, bound=bound)


@dataclass(frozen=True)
class Statistic:
    """One noisy statistic of the release's main OpenDP measurement (a value per cohort)."""

    column: str
    query: Callable[[float], pl.Expr]  # the OpenDP aggregation at a noise scale
    scale: float


@dataclass(frozen=True)
class Column:
    """A published column: its Feast type and description."""

    name: str
    dtype: Literal["int", "float", "bool"]
    description: str


@dataclass(frozen=True)
class Noise:
    """What the release drew: each statistic's noise scale and 95% error bound."""

    scale: dict[str, float]
    error95: dict[str, float]
    mechanism: Mechanism


Variance = Callable[["pl.Expr"], "pl.Expr"]  # a value's noise variance at an estimate of it


@dataclass
class Released:
    """A feature's published columns from the noisy statistics (post-processing: no budget),
    what to shrink toward the cohort's parents (value -> (weight, variance)) and the
    `_unreliable` flags, computed once the shrunk estimates exist."""

    columns: list[pl.Expr]
    shrink: dict[str, tuple[pl.Expr, Variance]] = field(default_factory=dict)
    flags: list[pl.Expr] = field(default_factory=list)


@dataclass(frozen=True)
class Measured:
    """A feature's own measurement: its noisy columns per cohort, what OpenDP charged for it,
    and its noise scales."""

    table: pl.DataFrame
    loss: float
    scale: dict[str, float]


class Collector(Protocol):
    """A feature that is measured apart from the main statistics (its rows are not one per
    (user, cohort)): it collects each shard's rows, then measures them once."""

    def add(self, bounded: pl.DataFrame) -> None: ...

    def merge(self, others: list[Collector]) -> None:
        """Take in what collectors of the same feature collected elsewhere (other shards,
        on other workers)."""

    def measure(self, dp: Any, cohorts: pl.DataFrame) -> Measured: ...


class DPFeature(ABC):
    """One DP cohort feature (see the module docstring)."""

    name: ClassVar[str]  # its key under `features.features`, and its columns' stem
    label: ClassVar[str]  # how the planner and the report name it
    config: ClassVar[type[FeatureShare]] = FeatureShare
    group: ClassVar[int]  # COUNT, AVERAGE or SHARE: where its columns go
    required: ClassVar[bool] = False  # every release must have it
    summary: ClassVar[str]  # one line for Feast and the README
    # how its values vary from day to day without drift (see `Variation`); by group if unset
    variation: ClassVar[Variation | None] = None

    def per_user(self, spec: Any, grid: Grid) -> list[pl.Expr]:
        """Aggregations over one (user, cohort)'s events, each clipped to public bounds."""
        return []

    def request(self, spec: Any, grid: Grid, acc: ReleaseAccountant) -> list[BudgetRequest]:
        """Its parts of the release's budget: one, weighted by its `budget_share`."""
        return [acc.request_budget(weight=spec.budget_share)]

    def statistics(self, spec: Any, grid: Grid, parts: list[PrivacyBudget]
                   ) -> list[Statistic]:
        """What it adds to the release's main measurement."""
        return []

    def collector(self, spec: Any, grid: Grid, parts: list[PrivacyBudget], *, user_col: str,
                  seed: int) -> Collector | None:
        """Its own measurement, if it has one."""
        return None

    @abstractmethod
    def released(self, spec: Any, grid: Grid, noise: Noise) -> Released:
        """Its published columns from the noisy ones."""

    @abstractmethod
    def columns(self, spec: Any, grid: Grid) -> list[Column]:
        """Every column it publishes, in order."""

    @abstractmethod
    def values(self, spec: Any, grid: Grid) -> list[str]:
        """The columns holding its values (without noise scales, bounds and flags)."""

    @abstractmethod
    def expected_error(self, spec: Any, grid: Grid, parts: list[PrivacyBudget], users: float,
                       accuracy: Accuracy) -> tuple[float, float]:
        """(95% error in the value's units, relative to a typical value) at `users` per
        cohort: what the planner promises before noise is drawn."""

    @abstractmethod
    def your_bound(self, spec: Any, grid: Grid) -> str:
        """What one person's data can move this feature by, for the person to read (a
        subject-access page): "you count once", "your value is clipped to 0-3600"."""

    def varies_as(self) -> Variation:
        """How its values vary from day to day without drift (drift monitoring's model)."""
        return self.variation or ("count" if self.group == COUNT else
                                  "share" if self.group == SHARE else "mean")

    def error_columns(self, spec: Any, grid: Grid) -> list[str]:
        """The released 95% bounds of its values (the realized side of `expected_error`)."""
        return [f"{v}_error95" for v in self.values(spec, grid)]


def accuracy_columns(value: str, what: str, *, shrunk: bool) -> list[Column]:
    """A released value's columns: the value, its noise scale, its 95% error bound, for rates,
    means and shares its shrunk estimate and standard error, and its unreliable flag."""
    out = [Column(value, "float" if shrunk else "int", what),
           Column(f"{value}_noise_scale", "float", f"noise scale of {value} (Laplace b or "
                  "Gaussian σ, in the value's units)"),
           Column(f"{value}_error95", "float", f"95% error bound of {value}")]
    if shrunk:
        out += [Column(f"{value}_shrunk", "float", f"{value} shrunk toward its parent "
                       "cohorts (empirical Bayes, from the same release)"),
                Column(f"{value}_se", "float", f"standard error of {value}_shrunk")]
    what_flag = f"{value}_shrunk" if shrunk else value
    return [*out, Column(f"{value}_unreliable", "bool",
                         f"true where the 95% interval of {what_flag} is wider than it")]
