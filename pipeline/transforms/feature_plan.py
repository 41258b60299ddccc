"""How accurate will a release be, and what would make it accurate enough? Before drawing noise.

The 95% error of each released value follows from the noise scales the release would use (the
same budget parts, noise scales and OpenDP accuracy functions: each registered feature's
`expected_error`) and the users a cohort holds: counts are off by a fixed number of users, rates,
means and shares by that over the cohort's users. The relative error compares it with a typical
value: the cohort's users for counts, an even share (1 / categories) for shares, the middle of
the bounds for rates and means. When a feature misses its target, the plan names the smallest
change that meets it: that feature's budget share, ε (or ρ), a coarser grid (without device type,
without region), or a weekly period (users per cohort times `weekly_factor`, the distinct users
of a week over those of a day). Relative errors are of the raw values; shrunk estimates do better
wherever cohorts resemble their parents.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import BudgetConfig, FeaturesConfig
from pipeline.ledger.budget import PrivacyBudget
from pipeline.transforms.features import Release
from pipeline.transforms.opendp_api import opendp_api


@dataclass(frozen=True)
class FeatureError:
    feature: str  # the feature's name (its key in config)
    label: str  # as the plan shows it: "share (each category)"
    error95: float  # in the value's units
    relative: float  # over a typical value
    fix: str  # the smallest change that meets the target ("" when met)


def feature_errors(cfg: FeaturesConfig, users: float) -> dict[str, tuple[float, float]]:
    """feature name -> (95% error, relative error) at `users` per cohort."""
    accuracy = cfg.mechanism.accuracy(opendp_api())
    return {f.name: (e, rel) for f, e, rel in Release.of(cfg).errors(users, accuracy)}


def max_release_budget(features: FeaturesConfig, budget: BudgetConfig) -> PrivacyBudget:
    """The largest ε (pure) or ρ (zCDP) a release may take: under the config's per-release cap
    and small enough that a full window of releases fits the window's budget (a pure ε
    release costs ε²/2 in a zCDP window)."""
    kind = features.mechanism.budget_type
    releases = budget.window_days if features.period == "day" else -(-budget.window_days // 7)
    per_release = budget.accountant.budget(budget.limit / releases)
    fits = kind.largest_within(per_release)
    cap = budget.release_cap(features.mechanism)
    return cap if cap.value <= fits.value else fits


def plan(cfg: FeaturesConfig, *, users: float, age_bands: int, target: float,
         weekly_factor: float = 3.0, max_budget: PrivacyBudget | None = None
         ) -> list[FeatureError]:
    """Expected errors at `users` per cohort, each with the smallest change meeting `target`.
    Never suggests what config or the ledger would refuse: a budget over `max_budget` is
    named as out of reach instead, and a larger budget share keeps the shares adding up to 1."""
    release = Release.of(cfg)
    now = feature_errors(cfg, users)
    grid = {"without device type": users * len(cfg.device_types),
            "without region": users * len(cfg.regions)}
    rows = []
    for name, (e, rel) in now.items():
        feature, spec, _ = release.features[name]
        fix = "" if rel <= target else _fix(cfg, name, spec.budget_share, rel / target,
                                            users, grid, target, weekly_factor, max_budget)
        rows.append(FeatureError(name, feature.label, e, rel, fix))
    return rows


def _fix(cfg: FeaturesConfig, name: str, share: float, error_ratio: float, users: float,
         grid: dict[str, float], target: float, weekly_factor: float,
         max_budget: PrivacyBudget | None) -> str:
    """The changes that would bring feature `name`'s error down `error_ratio` times."""
    now_budget = cfg.release_budget
    factor = cfg.mechanism.budget_growth(error_ratio)
    needed = now_budget * factor
    options, unit = [], now_budget.unit
    alone = len(cfg.features.enabled()) == 1
    if share * factor < 1 and not alone:
        options.append(f"budget_share {share:g} -> {share * factor:.2f} "
                       f"(the others scaled down to {1 - share * factor:.2f} in all)")
    reachable = max_budget is None or needed.within(max_budget)
    if reachable:
        options.append(f"{unit} {now_budget.value:g} -> {needed.value:.3g}")
    for label, n in grid.items():
        if feature_errors(cfg, n)[name][1] <= target:
            options.append(f"grid {label} ({n:.0f} users per cohort)")
            break
    if cfg.period == "day" and feature_errors(cfg, users * weekly_factor)[name][1] <= target:
        options.append(f"period: week (~{users * weekly_factor:.0f} users per cohort)")
    fix = "; or ".join(options)
    if reachable:
        return fix
    ceiling = max_budget.value if max_budget is not None else float("inf")
    out_of_reach = (f"{unit} would need {needed.value:.3g}, over the {ceiling:.3g} config "
                    "and the window allow per release")
    return f"{fix} ({out_of_reach})" if fix else f"none within reach: {out_of_reach}"
