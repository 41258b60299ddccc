"""What each stage says about its run beyond the row counts: one typed model per stage.

A stage's `StageStats.details` is one of these, never a free dict: the report, the guardrails and
the stages that gather shards read attributes, so a renamed field breaks type checking and tests
instead of a report, silently. Each field declares how shards merge (`Merge`): counts add up
(shards hold disjoint users), what every shard holds alike (a key id, a purpose, the columns) is
the first shard's, and a maximum is a maximum. The JSON a run record holds has the same keys as
the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

D = TypeVar("D", bound="Details")


class Merge(Enum):
    """How one field of a stage's details is merged over the shards it ran on."""

    SUM = "sum"  # numbers add up; dicts of numbers add up key by key; nested details merge
    MAX = "max"
    FIRST = "first"  # the same on every shard

    def apply(self, values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if self is Merge.FIRST:
            return present[0]
        if self is Merge.MAX:
            return max(present)
        return _sum(present)


def _sum(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, Details):
        return type(first).merged(values)
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _sum([v[k] for v in values if k in v]) for k in keys}
    return sum(values)


SUM, MAX, FIRST = Merge.SUM, Merge.MAX, Merge.FIRST


class Details(BaseModel):
    """A stage's details; fields without a `Merge` are the first shard's."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def merged(cls: type[D], parts: Sequence[D]) -> D:
        values = {}
        for name, info in cls.model_fields.items():
            rule = next((m for m in info.metadata if isinstance(m, Merge)), FIRST)
            values[name] = rule.apply([getattr(p, name) for p in parts])
        return cls.model_validate(values)


class NoDetails(Details):
    """A stage with nothing to say beyond its row counts (ingest)."""


class ConsentDetails(Details):
    purpose: str
    users_kept: Annotated[int, SUM]
    # of the whole consent log for the purpose (every shard reads the same): users whose
    # latest decision is a pause, users who ever reset, and lines that did not fit the schema
    users_paused: Annotated[int, MAX] = 0
    users_reset: Annotated[int, MAX] = 0
    consent_records_rejected: int = 0


class ColumnFinding(BaseModel):
    """An untagged column flagged by the column scan (`pipeline.transforms.pii.columns`)."""

    column: str
    reasons: list[str]
    entities: dict[str, int]
    share_with_pii: float
    sampled: int
    action: str


class ColumnScan(BaseModel):
    checked: list[str] = []
    flagged: list[ColumnFinding] = []


class PiiDetails(Details):
    dropped_columns: list[str]
    pii_found: Annotated[dict[str, int], SUM]
    column_scan: ColumnScan | None = None  # decided once for the day (the first shard)
    pii_found_by_column: Annotated[dict[str, dict[str, int]], SUM] = {}
    token_key_id: str | None = None  # set by the stage, once
    # distinct free texts run through the detector, and those scrubbed on an earlier day
    # (`pii.text_cache`) taken from there instead
    texts_analysed: Annotated[int, SUM] = 0
    texts_from_earlier_days: Annotated[int, SUM] = 0


class PseudonymizeDetails(Details):
    """How pseudonyms were made (the external view keeps the algorithm only)."""

    algorithm: str | None = None
    key_id: str | None = None
    purpose: str | None = None
    key_derivation: str | None = None
    columns: dict[str, str | None] | None = None


class H3Tally(Details):
    resolutions: Annotated[float, SUM] = 0.0
    area_km2: Annotated[float, SUM] = 0.0
    cells: Annotated[int, SUM] = 0


class GeneralizeTally(Details):
    """One shard's generalization: rows per level of each hierarchy, and its H3 cells; per
    group of each cohort dimension (as the row was before generalizing), rows in, rows kept
    and the sum of each hierarchy's level over the kept rows (`rows`, `kept`, `level:<col>`)."""

    levels: Annotated[dict[str, dict[int, int]], SUM]
    h3: Annotated[H3Tally, SUM]
    groups: Annotated[dict[str, dict[str, dict[str, int]]], SUM] = {}


class KGroupCost(BaseModel):
    """What k-anonymity cost one group (a region, an age band, a device type, or `all`):
    the share of its rows suppressed, and how coarse its kept rows were published (the
    hierarchies' mean level share: 0 as fine as configured, 1 the coarsest)."""

    dimension: str
    group: str
    rows: int | str  # "<10" once coarsened in the external view
    suppressed_share: float
    generalization: float


class InformationLoss(BaseModel):
    """How coarse a quasi-identifier was published: its mean level over its levels (0 =
    finest, 1 = coarsest) and rows per level; for H3 cells, the mean resolution and area."""

    mean_level_share: float | None = None
    rows_per_level: dict[str, int] = {}
    mean_resolution: float | None = None
    mean_cell_area_km2: float | None = None


class KAnonymitySummary(BaseModel):
    """What k-anonymity achieved and cost (the report's section, and the manifest's)."""

    k_required: int | None = None
    k_achieved: int | None = None
    l_required: int | None = None
    l_achieved: int | None = None
    sensitive_attribute: str | None = None
    quasi_identifiers: list[str] | None = None
    generalize_order: list[str] | None = None
    rows_suppressed: int | str | None = None  # "<10" once coarsened in the external view
    share_rows_suppressed: float | None = None
    users_suppressed: int | str | None = None
    groups_suppressed: int | str | None = None
    groups_kept: int | None = None
    information_loss: dict[str, InformationLoss] | None = None
    group_costs: list[KGroupCost] | None = None  # per region, age band, device type
    worst_suppression_ratio: float | None = None  # worst group's suppressed share / overall
    worst_suppression_group: str | None = None

    def achieved(self, ran: bool = True) -> str:
        """"k 7 (required 5), ℓ 2 (required 2)" as a reader reads it: on a table with no rows
        neither is measured, which is said rather than shown as None."""
        if not ran:
            return "not run"
        if self.k_achieved is None:
            return (f"not applicable (no rows; required k {self.k_required}, "
                    f"ℓ {self.l_required or 'none'})")
        l_part = "ℓ not required" if not self.l_required else (
            f"ℓ {self.l_achieved} (required {self.l_required})")
        return f"k {self.k_achieved} (required {self.k_required}), {l_part}"


class GeneralizeDetails(Details):
    """The generalize stage over the whole day: k-anonymity's outcome and the settings."""

    k_required: int
    k_achieved: int | None
    l_required: int | None
    l_achieved: int | None
    sensitive_attribute: str | None
    quasi_identifiers: list[str]
    generalize_order: list[str]
    rows_suppressed: int
    share_rows_suppressed: float
    users_suppressed: int
    groups_suppressed: int
    groups_kept: int
    information_loss: dict[str, InformationLoss]
    group_costs: list[KGroupCost] = []
    worst_suppression_ratio: float | None = None
    worst_suppression_group: str | None = None
    h3_resolution: int
    h3_floor_resolution: int
    region_level: str
    ip: str
    postal_code: str
    time_granularity: str

    def summary(self) -> KAnonymitySummary:
        return KAnonymitySummary.model_validate(
            {name: getattr(self, name) for name in KAnonymitySummary.model_fields})


class StrictTextCounts(BaseModel):
    """A strict-text column: words written, kept (used by at least k users), kept share."""

    words: int
    kept: int
    kept_share: float


class GroupCounts(BaseModel):
    """An aggregate purpose's groups: published, and suppressed for holding fewer than k."""

    published: int
    suppressed: int


class ProfileDetails(BaseModel):
    """A profile purpose: k over each user's whole profile (`pipeline.transforms.profile`)."""

    users: int
    users_published: int
    users_suppressed: int
    groups: int
    epoch: str
    given_up: dict[str, dict[int, int]]  # column -> level -> users
    exact_share: dict[str, float | None]  # column -> share of users published with it exact


class MinimizeDetails(Details):
    purpose: str | None = None
    columns_kept: list[str] = []
    columns_removed: list[str] = []
    out_of_domain: Annotated[dict[str, int], SUM] = {}
    strict_text: dict[str, StrictTextCounts] | None = None  # per column; whole day only
    groups: GroupCounts | None = None  # an aggregate purpose, set when gathered
    profiles: ProfileDetails | None = None  # a profile purpose, set when gathered


class FeatureErrorDetail(BaseModel):
    """One feature's expected 95% error (the planner's, at the release's users per cohort)
    next to the median of the release's own 95% bounds."""

    feature: str
    label: str  # as the report shows it
    expected_error95: float
    median_error95: float | None


def errors_by_label(value: object) -> object:
    """Records written before features were registered parts keyed errors by label."""
    if isinstance(value, dict):
        from pipeline.features import REGISTRY

        names = {f.label: name for name, f in REGISTRY.items()}
        return [{"feature": names.get(label, label), "label": label, **e}
                for label, e in value.items()]
    return value


class FeaturesDetails(Details):
    feature_set: str
    period: str
    privacy: str
    epsilon: float | None
    rho: float
    delta: float
    accounted_by_opendp: float
    cohorts: str
    budget_shares: dict[str, float]
    privacy_unit: str
    cohorts_released: int
    users_counted: int
    error95_active_users: float
    errors: list[FeatureErrorDetail]
    # rows of users who paused or withdrew since, or reset, in the days read (left out)
    rows_left_out_for_consent: int = 0

    _old_errors = field_validator("errors", mode="before")(errors_by_label)


# The details a stage's run record holds, by stage name (what `StageStats` loads them as).
STAGE_DETAILS: dict[str, type[Details]] = {
    "consent": ConsentDetails, "detect_pii": PiiDetails, "pseudonymize": PseudonymizeDetails,
    "generalize": GeneralizeDetails, "minimize": MinimizeDetails, "features": FeaturesDetails,
}
