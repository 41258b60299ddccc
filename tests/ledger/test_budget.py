"""Privacy budgets are values: they add, compare and convert as the DP literature says."""

import math

import pytest

from pipeline.ledger.accounting import GAUSSIAN, LAPLACE, PURE, ZCDP
from pipeline.ledger.budget import (
    ApproxDP,
    IncompatibleBudgetError,
    PureDP,
    RhoZCDP,
    release_budget,
)


def test_when_pure_budgets_are_added_then_epsilons_add() -> None:
    assert PureDP(1.0) + PureDP(0.5) == PureDP(1.5)
    assert sum([PureDP(0.25)] * 4, PureDP(0.0)) == PureDP(1.0)


def test_when_an_epsilon_release_is_counted_in_zcdp_then_it_costs_half_epsilon_squared() -> None:
    assert PureDP(1.0).to(RhoZCDP) == RhoZCDP(0.5)
    assert RhoZCDP(0.1) + PureDP(1.0) == RhoZCDP(0.6)
    # δ from private cohort selection is carried, not converted
    assert ApproxDP(2.0, 1e-7).to(RhoZCDP) == RhoZCDP(2.0, 1e-7)


def test_when_a_zcdp_budget_is_asked_for_as_epsilon_then_it_refuses() -> None:
    with pytest.raises(IncompatibleBudgetError, match="no ε of its own"):
        RhoZCDP(0.5).to(ApproxDP)
    with pytest.raises(IncompatibleBudgetError):
        ApproxDP(1.0) + RhoZCDP(0.5)
    with pytest.raises(IncompatibleBudgetError):
        ApproxDP(1.0, 1e-6).to(PureDP)


def test_when_a_zcdp_spend_is_restated_then_it_is_bun_steinke_epsilon_delta() -> None:
    stated = RhoZCDP(0.5).restated(1e-6)
    assert stated == ApproxDP(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)), 1e-6)
    assert PureDP(1.0).restated(1e-6) is None and ApproxDP(1.0).restated(1e-6) is None


def test_when_budgets_are_compared_then_both_parts_must_fit() -> None:
    assert ApproxDP(1.0, 1e-7) <= ApproxDP(1.0, 1e-6)
    assert not ApproxDP(1.0, 1e-5) <= ApproxDP(2.0, 1e-6)
    assert PureDP(1.0) <= ApproxDP(1.0)
    assert ApproxDP(1.0 + 1e-13).within(ApproxDP(1.0), rel=1e-12)
    assert not ApproxDP(1.0 + 1e-9).within(ApproxDP(1.0), rel=1e-12)


def test_when_a_budget_is_split_then_the_parts_are_its_shares() -> None:
    assert PureDP(1.0) * 0.15 == PureDP(0.15)
    assert RhoZCDP(0.6) * 0.5 / 3 == RhoZCDP(0.6 * 0.5 / 3)


def test_when_a_window_allows_rho_then_the_largest_epsilon_release_is_sqrt_two_rho() -> None:
    assert PureDP.largest_within(RhoZCDP(0.5)) == PureDP(1.0)
    assert PureDP.largest_within(ApproxDP(0.7)) == PureDP(0.7)
    assert RhoZCDP.largest_within(RhoZCDP(0.5)) == RhoZCDP(0.5)


def test_when_a_stored_release_is_read_then_its_columns_give_its_budget() -> None:
    assert release_budget(epsilon=1.0, rho=0.5, delta=0.0) == PureDP(1.0)
    assert release_budget(epsilon=1.0, rho=0.5, delta=1e-7) == ApproxDP(1.0, 1e-7)
    assert release_budget(epsilon=None, rho=0.02, delta=0.0) == RhoZCDP(0.02)


def test_when_mechanisms_scale_noise_then_laplace_is_l1_and_gaussian_l2() -> None:
    assert LAPLACE.scale(PureDP(0.5), per_user=2, bound=3) == pytest.approx(12.0)
    assert GAUSSIAN.scale(RhoZCDP(0.5), per_user=4, bound=3) == pytest.approx(6.0)
    assert LAPLACE.budget_growth(2.0) == 2.0 and GAUSSIAN.budget_growth(2.0) == 4.0


def test_when_accountants_are_asked_then_pure_refuses_zcdp_releases() -> None:
    assert PURE.admits(LAPLACE) and not PURE.admits(GAUSSIAN)
    assert ZCDP.admits(LAPLACE) and ZCDP.admits(GAUSSIAN)
    assert (PURE.unit, ZCDP.unit) == ("ε", "ρ")
