"""Data contracts: the declared layout of raw records (`schemas/*.yaml`) and what each purpose
may publish (`schemas/purposes/<purpose>.yaml`). Data, not code: a stage reads these to know
which field is an identifier, which is a quasi-identifier and which columns may leave."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from pipeline.core.model import Model

FieldType = Literal["string", "integer", "number", "boolean", "timestamp"]
Handling = Literal["keep", "drop", "pseudonymize", "generalize", "scan"]


class FieldSpec(Model):
    """One field of a raw record and what the privacy stages do with it."""

    type: FieldType
    required: bool = False
    handling: Handling = "keep"
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None
    as_: str | None = Field(default=None, alias="as")

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.handling == "pseudonymize" and not self.as_:
            raise ValueError("a pseudonymized field needs `as:` (the pseudonym column's name)")
        numeric = self.type in ("integer", "number")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError("min/max apply only to integer and number fields")
        if self.values is not None and self.type != "string":
            raise ValueError("values: applies only to string fields")
        return self


class RecordSchema(Model):
    """A declared record layout (`schemas/*.yaml`)."""

    name: str
    version: int
    fields: dict[str, FieldSpec]

    def with_handling(self, *handling: Handling) -> list[str]:
        return [n for n, f in self.fields.items() if f.handling in handling]


class Domain(Model):
    """The values a published column may hold: a list, a full-match pattern, or a numeric
    range. A value outside it becomes `other` (or null) before anything is published, and is
    counted: free-form input never reaches consumers as typed."""

    values: tuple[str, ...] | None = None
    pattern: str | None = None
    min: float | None = None
    max: float | None = None
    other: str | None = None  # what an out-of-domain value becomes (null when unset)
    # Free text, published in strict mode: only words k distinct users wrote are kept
    # (`pipeline.transforms.pii.strict`); the column must also be scanned for PII upstream.
    strict_text: bool = False

    @model_validator(mode="after")
    def _check(self) -> Domain:
        kinds = [self.values is not None, self.pattern is not None,
                 self.min is not None or self.max is not None, self.strict_text]
        if sum(kinds) != 1:
            raise ValueError("a domain is one of: values, pattern, min/max, or strict_text")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        if self.other is not None and self.values is not None and self.other not in self.values:
            raise ValueError("`other` must be one of `values`")
        return self


class Aggregate(Model):
    """Publish counts per group instead of rows: `users` (distinct) and `events` per
    combination of the `by` columns; a group of fewer than k users is not published."""

    by: tuple[str, ...]
    users: str = "users"
    events: str = "events"

    @property
    def outputs(self) -> tuple[str, ...]:
        return (*self.by, self.users, self.events)


class EventGrouping(Model):
    """How a profile purpose's event rows are made k-anonymous before profiles are built
    (the generalized zone, which the DP features read, keeps this grouping)."""

    quasi_identifiers: tuple[str, ...]
    sensitive_attribute: str | None = None


class Interests(Model):
    """A user's most frequent values of `column` in the epoch, most frequent first (ties by
    name): `names[0]` the top one, `names[1]` the next, ...; `none` where there are fewer."""

    column: str = "content_category"
    names: tuple[str, ...] = ("top_category", "second_category")


class Activity(Model):
    """Events per user and epoch, as a band: edges [1, 3, 10] give `1-2`, `3-9`, `10+`."""

    column: str = "activity"
    edges: tuple[int, ...] = (1, 3, 10)

    @model_validator(mode="after")
    def _check(self) -> Activity:
        if not self.edges or self.edges[0] < 1 or list(self.edges) != sorted(set(self.edges)):
            raise ValueError("activity.edges: increasing whole numbers from 1")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        e = self.edges
        return (*(f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"
                  for lo, hi in zip(e, e[1:], strict=False)), f"{e[-1]}+")


class Profile(Model):
    """Publish one row per user and pseudonym epoch instead of one per event.

    An insider holding raw events recomputes every published column, so every one is a
    quasi-identifier: the profile table is k-anonymous over all of them, one row per user
    (`pipeline.transforms.profile`). A fresh pseudonym per epoch keeps one epoch's profile
    from being chained to the next; a longer epoch counts the earlier profiles of the epoch
    as part of the user's row."""

    epoch: Literal["day", "week", "stable"] = "day"
    events: EventGrouping
    context: tuple[str, ...] = ("region", "age_band", "device_type")  # each user's usual value
    interests: Interests = Interests()
    activity: Activity | None = Activity()
    # What groups short of k give up first, then next (all of one before the next); what is
    # still short is suppressed.
    give_up: tuple[str, ...] = ()

    @property
    def computed(self) -> tuple[str, ...]:
        """The published columns computed from each user's events."""
        return (*self.context, *self.interests.names,
                *((self.activity.column,) if self.activity else ()))


class PurposeSpec(Model):
    """What one purpose may publish (`schemas/purposes/<purpose>.yaml`)."""

    purpose: str
    description: str
    consent_purpose: str
    # GDPR Art. 6(1): why the processing is lawful (for the records of processing and the
    # DPIA); and what the data is used for, as a fideslang data use (`data_categories.yaml`)
    legal_basis: Literal["consent", "contract", "legal_obligation", "vital_interests",
                         "public_task", "legitimate_interests"] = "consent"
    data_use: str | None = None
    columns: tuple[str, ...]
    pseudonym_columns: tuple[str, ...]
    quasi_identifiers: tuple[str, ...]
    sensitive_attribute: str | None = None
    # Every published column except the pseudonyms declares its domain.
    domains: dict[str, Domain] = {}
    # The pseudonym that tells users apart (k-anonymity, DP bounding); by default the first
    # published pseudonym. A purpose that publishes none (aggregates) names it here.
    user_column: str | None = None
    aggregate: Aggregate | None = None
    profile: Profile | None = None

    @property
    def user_col(self) -> str:
        return self.user_column or self.pseudonym_columns[0]

    @property
    def event_quasi_identifiers(self) -> tuple[str, ...]:
        """What `generalize` makes k-anonymous over the event rows."""
        return self.profile.events.quasi_identifiers if self.profile else self.quasi_identifiers

    @property
    def event_sensitive_attribute(self) -> str | None:
        return self.profile.events.sensitive_attribute if self.profile else \
            self.sensitive_attribute

    @model_validator(mode="after")
    def _check(self) -> PurposeSpec:
        if not self.user_column and not self.pseudonym_columns:
            raise ValueError("a purpose that publishes no pseudonym needs `user_column` (the "
                             "pseudonym counted as users)")
        if self.aggregate is not None:
            if set(self.aggregate.outputs) != set(self.columns):
                raise ValueError(f"an aggregate purpose publishes exactly its `by` columns and "
                                 f"counts: {list(self.aggregate.outputs)}")
            if self.pseudonym_columns:
                raise ValueError("an aggregate purpose publishes no pseudonym columns")
            if self.profile is not None:
                raise ValueError("a purpose publishes counts (`aggregate`) or profiles "
                                 "(`profile`), not both")
        if self.profile is not None:
            self._check_profile(self.profile)
        for group in ("pseudonym_columns", "quasi_identifiers"):
            missing = [c for c in getattr(self, group) if c not in self.columns]
            if missing:
                raise ValueError(f"{group} not in the allowlist `columns`: {missing}")
        if self.sensitive_attribute and self.sensitive_attribute not in self.columns:
            raise ValueError("sensitive_attribute is not in the allowlist `columns`")
        undeclared = [c for c in self.columns
                      if c not in self.domains and c not in self.pseudonym_columns]
        stray = [c for c in self.domains if c not in self.columns]
        if undeclared or stray:
            raise ValueError(f"every published column but the pseudonyms needs a domain: "
                             f"missing {undeclared}, not published {stray}")
        return self

    def _check_profile(self, profile: Profile) -> None:
        linkable = [c for c in self.columns if c not in self.pseudonym_columns]
        if set(self.quasi_identifiers) != set(linkable):
            raise ValueError(f"a profile purpose's quasi_identifiers are all its published "
                             f"columns but the pseudonyms (an insider recomputes each): "
                             f"{linkable}")
        if self.sensitive_attribute:
            raise ValueError("a profile purpose names its sensitive attribute under "
                             "profile.events (every published column is a quasi-identifier)")
        missing = [c for c in profile.computed if c not in self.columns]
        stray = [c for c in profile.give_up if c not in profile.computed]
        if missing or stray:
            raise ValueError(f"profile: computed columns not in `columns`: {missing}; "
                             f"give_up names columns it does not compute: {stray}")
        if len(set(profile.give_up)) != len(profile.give_up):
            raise ValueError("profile.give_up names a column twice")
        for c in (*profile.interests.names, *(
                [profile.activity.column] if profile.activity else [])):
            d = self.domains.get(c)
            if d is None or d.values is None or "any" not in d.values:
                raise ValueError(f"profile column {c!r} needs a `values` domain holding "
                                 "`any` (what a short group's value becomes)")

    @property
    def closed_columns(self) -> tuple[str, ...]:
        """Published columns whose domain is a list of values: no free value gets out. A
        profile's interests are published that way, so their source column counts too."""
        closed = tuple(c for c, d in self.domains.items() if d.values is not None)
        if self.profile and all(n in closed for n in self.profile.interests.names):
            closed += (self.profile.interests.column,)
        return closed
