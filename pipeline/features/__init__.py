"""DP cohort features as registered parts: one module per feature, listed here once.

Each feature (`pipeline.features.base.DPFeature`) declares its config model, what one user
contributes, its OpenDP statistics with their sensitivity and budget weight, its accuracy
formula and its published columns. The release (`pipeline.transforms.features`), the planner
(`pipeline.transforms.feature_plan`), the Feast schema, the config model (`features.features` in
YAML) and the CLI all iterate over `REGISTRY`: adding a feature is one module and one line here.
The order is the config's (and the planner's); published columns go counts first, then averages,
then shares (`DPFeature.group`).
"""

from pipeline.features.active_users import ActiveUsers
from pipeline.features.base import DIMENSIONS, DPFeature, FeatureShare, Grid
from pipeline.features.category_votes import CategoryVotes
from pipeline.features.distinct_categories import DistinctCategoriesPerUser
from pipeline.features.events_per_category import EventsPerCategory
from pipeline.features.mean_session import MeanSessionSeconds
from pipeline.features.purchase_rate import PurchaseRate

REGISTRY: dict[str, DPFeature] = {f.name: f for f in (
    ActiveUsers(), CategoryVotes(), EventsPerCategory(), PurchaseRate(), MeanSessionSeconds(),
    DistinctCategoriesPerUser())}

__all__ = ["DIMENSIONS", "REGISTRY", "DPFeature", "FeatureShare", "Grid"]
