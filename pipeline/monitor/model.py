"""What drift monitoring records (`runs/<purpose>/date=D/monitor.json`): pydantic only, so run
records and reports read it without loading SciPy. The tests are in `pipeline.monitor.drift`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

NoiseKind = Literal["laplace", "gaussian"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftFinding(_Model):
    """One test that passed Benjamini-Hochberg: what moved, where, by how much."""

    value: str  # the released value column, e.g. share_sports
    scope: Literal["cohort", "slice", "feature"]
    where: str  # the cohort id, "region=Texas", or "all cohorts"
    before: float | None  # the released value (the slice's mean), None for a whole column
    now: float | None
    z: float  # calibrated: signed for cohorts and slices, sqrt(chi-square) for a column
    p_value: float


class ValueDrift(_Model):
    """One value column's comparison: the day-to-day variation found beyond the noise (as
    its share of the median cohort's variance) and its evidence as a whole."""

    value: str
    cohorts: int
    variation_share: float  # 0: the differences are what the noise alone gives
    p_value: float
    max_abs_z: float


class FeatureDrift(_Model):
    """A release compared with the one before it."""

    release_date: str
    previous_date: str
    alpha: float
    tests: int
    cohorts_compared: int
    cohorts_appeared: int
    cohorts_disappeared: int
    values: list[ValueDrift]
    findings: list[DriftFinding]  # strongest first, at most `max_findings`
    significant: int  # tests rejected (findings may list fewer)

    @property
    def drifted(self) -> bool:
        return self.significant > 0


class ColumnDrift(_Model):
    """One published column's distribution today against the previous published day."""

    column: str
    categories: int
    jensen_shannon: float  # distance (base 2): 0 the same, 1 disjoint
    psi: float  # population stability index
    # G-test of the two days' counts against the column's day-to-day variation (`inflation`:
    # how many times a simple sample's, learned from earlier days); None: not judged yet
    p_value: float | None = None
    inflation: float | None = None
    drifted: bool


class Alert(_Model):
    """A soft guardrail breached (`pipeline.monitor.alerts`): what, where, the measured value
    and its threshold. Never a value from the data."""

    guardrail: Literal["drift", "disparity", "k_suppression", "pii_spike", "quarantine_spike"]
    subject: str  # a feature and cohort label, a group, a PII type or a quarantine reason
    measured: float
    threshold: str
    note: str = ""

    def describe(self) -> str:
        return (f"{self.guardrail}: {self.subject}: measured {self.measured:g}, "
                f"threshold {self.threshold}" + (f" ({self.note})" if self.note else ""))


class GroupCost(_Model):
    """What DP costs one group's cohort features in one release (a region, an age band, a
    device type, or `all`): the share of its released values flagged unreliable and their
    median 95% error relative to the value."""

    dimension: str  # region | age_band | device_type | all
    group: str
    cohorts: int
    users: int  # released (noisy) user counts, summed
    unreliable_share: float
    median_relative_error: float | None  # None where no value is above zero


class Disparity(_Model):
    """Per group, and the worst group of each dimension against the whole release."""

    groups: list[GroupCost]
    worst_unreliable_ratio: float | None  # worst group's unreliable share / overall
    worst_unreliable_group: str
    worst_error_ratio: float | None  # worst group's median relative error / overall
    worst_error_group: str
