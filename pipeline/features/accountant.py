"""One release's budget split over its statistics by weight, in PipelineDP's shape.

PipelineDP's `NaiveBudgetAccountant`: every mechanism asks for its part with
`request_budget(weight)` (a `scope(weight)` groups requests that share one weight between them),
and `compute_budgets()`
hands each request `total × weight / Σ weights`, scope by scope. A feature therefore states only
its weight (`budget_share` in config); how many statistics it releases and what the others ask
for is the accountant's business, and the parts always add up to the release's budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pipeline.ledger.budget import PrivacyBudget


@dataclass
class BudgetRequest:
    """A part of the release's budget, known once the accountant has computed them."""

    weight: float
    _budget: PrivacyBudget | None = None

    @property
    def budget(self) -> PrivacyBudget:
        if self._budget is None:
            raise RuntimeError("budget requested before compute_budgets()")
        return self._budget


@dataclass
class _Scope:
    weight: float
    children: list[_Scope | BudgetRequest] = field(default_factory=list)


class ReleaseAccountant:
    """Splits `total` over the requests made of it (see the module docstring)."""

    def __init__(self, total: PrivacyBudget) -> None:
        self.total = total
        self._root = _Scope(1.0)
        self._open = [self._root]
        self._computed = False

    def request_budget(self, *, weight: float = 1.0) -> BudgetRequest:
        """Ask for a part of the budget proportional to `weight` among its siblings."""
        if self._computed:
            raise RuntimeError("budgets were already computed")
        if not weight > 0:
            raise ValueError(f"a budget weight must be positive, not {weight}")
        request = BudgetRequest(weight)
        self._open[-1].children.append(request)
        return request

    @contextmanager
    def scope(self, weight: float) -> Iterator[None]:
        """Requests made inside share `weight` among themselves, by their own weights."""
        inner = _Scope(weight)
        self._open[-1].children.append(inner)
        self._open.append(inner)
        try:
            yield
        finally:
            self._open.pop()

    def compute_budgets(self) -> None:
        self._split(self._root, self.total)
        self._computed = True

    def _split(self, scope: _Scope, budget: PrivacyBudget) -> None:
        total = math.fsum(c.weight for c in scope.children)
        # Weights that already add up to 1 (config's budget shares) are used as they are, so
        # a share's part is exactly budget × share, not off by a rounding of their sum.
        norm = 1.0 if abs(total - 1) <= 1e-9 else total
        for child in scope.children:
            part = budget * child.weight / norm
            if isinstance(child, BudgetRequest):
                child._budget = part
            else:
                self._split(child, part)
