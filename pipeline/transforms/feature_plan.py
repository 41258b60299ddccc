"""How accurate will a release be, and what would make it accurate enough? Before drawing noise.

The 95% error of each released value follows from the noise scales the release would use (the
same `Mechanism.scale` and OpenDP accuracy functions) and the users a cohort holds: counts are
off by a fixed number of users, rates, means and shares by that over the cohort's users. The
relative error compares it with a typical value: the cohort's users for counts, an even share
(1 / categories) for shares, the middle of the bounds for rates and means. When a feature
misses its target, the plan names the smallest change that meets it: that feature's budget
share, ε, a coarser grid (without device type, without region), or a weekly period (users per
cohort times `weekly_factor`, the distinct users of a week over those of a day).
Relative errors are of the raw values; shrunk estimates do better wherever cohorts resemble
their parents.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import BudgetConfig, FeaturesConfig
from pipeline.ledger.accounting import Mechanism
from pipeline.ledger.budget import PrivacyBudget


@dataclass(frozen=True)
class FeatureError:
    feature: str
    error95: float  # in the value's units
    relative: float  # over a typical value
    fix: str  # the smallest change that meets the target ("" when met)


def _accuracy(mechanism: Mechanism, scale: float) -> float:
    """OpenDP's 95% bound for one draw at `scale`."""
    from pipeline.transforms.opendp_api import opendp_api

    return float(mechanism.accuracy(opendp_api())(scale, 0.05))


def feature_errors(cfg: FeaturesConfig, users: float) -> dict[str, tuple[float, float]]:
    """feature -> (95% error, relative error) at `users` per cohort."""
    f, mech, k = cfg.features, cfg.mechanism, cfg.max_cohorts_per_user
    n = max(users, 1.0)

    def err(share: float, bound: float) -> float:
        return _accuracy(mech, mech.scale(cfg.release_budget * share / 1, per_user=k,
                                          bound=bound))

    out = {"active_users": (err(f.active_users.budget_share, 1), 0.0)}
    out["active_users"] = (out["active_users"][0], out["active_users"][0] / n)
    if f.category_votes:
        c = len(cfg.categories)
        e = err(f.category_votes.budget_share, 1) * (1 + c**-0.5) / n
        out["share (each category)"] = (e, e * c)
    if f.events_per_category:
        e = err(f.events_per_category.budget_share / len(cfg.categories),
                f.events_per_category.max_per_user)
        out["events (each category)"] = (e, e / n)
    for name, spec, (lo, hi) in (("purchase_rate", f.purchase_rate, (0, 1)),
                                 ("mean_session_seconds", f.mean_session_seconds,
                                  f.mean_session_seconds.bounds if f.mean_session_seconds
                                  else (0, 1))):
        if spec:
            e = err(spec.budget_share, hi - lo) / (2 * n)
            out[name] = (e, e / ((lo + hi) / 2 or 1))
    return out


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
    Never suggests what config or the ledger would refuse: an ε (ρ) over `max_budget` is
    named as out of reach instead, and a larger budget share keeps the shares adding up to 1."""
    now = feature_errors(cfg, users)
    grid = {"without device type": users * len(cfg.device_types),
            "without region": users * len(cfg.regions)}
    rows = []
    for name, (e, rel) in now.items():
        fix = ""
        if rel > target:
            spec_share = _share_of(cfg, name)
            now_budget = cfg.release_budget
            factor = cfg.mechanism.budget_growth(rel / target)
            needed = now_budget * factor
            options, unit = [], now_budget.unit
            alone = len(cfg.features.enabled()) == 1
            if spec_share * factor < 1 and not alone:
                options.append(f"budget_share {spec_share:g} -> {spec_share * factor:.2f} "
                               f"(the others scaled down to {1 - spec_share * factor:.2f} "
                               "in all)")
            reachable = max_budget is None or needed.within(max_budget)
            if reachable:
                options.append(f"{unit} {now_budget.value:g} -> {needed.value:.3g}")
            out_of_reach = f"{unit} would need {needed.value:.3g}, over the " \
                f"{max_budget.value if max_budget else float('inf'):.3g} config and the " \
                "window allow per release"
            for label, n in grid.items():
                if feature_errors(cfg, n)[name][1] <= target:
                    options.append(f"grid {label} ({n:.0f} users per cohort)")
                    break
            if cfg.period == "day" and feature_errors(cfg, users * weekly_factor)[name][1] \
                    <= target:
                options.append(f"period: week (~{users * weekly_factor:.0f} users per cohort)")
            fix = "; or ".join(options) if options else ""
            if not reachable:
                fix = f"{fix} ({out_of_reach})" if fix else f"none within reach: {out_of_reach}"
        rows.append(FeatureError(name, e, rel, fix))
    return rows


def _share_of(cfg: FeaturesConfig, name: str) -> float:
    f = cfg.features
    spec = {"active_users": f.active_users, "share (each category)": f.category_votes,
            "events (each category)": f.events_per_category, "purchase_rate": f.purchase_rate,
            "mean_session_seconds": f.mean_session_seconds}[name]
    return spec.budget_share if spec else 0.0
