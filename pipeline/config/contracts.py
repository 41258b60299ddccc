"""Data contracts: the declared layout of raw records (`schemas/*.yaml`) and what each purpose
may publish (`schemas/purposes/<purpose>.yaml`). Data, not code: a stage reads these to know
which field is an identifier, which is a quasi-identifier and which columns may leave."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal["string", "integer", "number", "boolean", "timestamp"]
Handling = Literal["keep", "drop", "pseudonymize", "generalize", "scan"]


class Model(BaseModel):
    """Frozen and strict: an unknown key is an error, named with its path, at load; so is
    an infinite or NaN number."""

    # inf and nan are refused: `epsilon_per_window: .inf` would disable the budget
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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


class PurposeSpec(Model):
    """What one purpose may publish (`schemas/purposes/<purpose>.yaml`)."""

    purpose: str
    description: str
    consent_purpose: str
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

    @property
    def user_col(self) -> str:
        return self.user_column or self.pseudonym_columns[0]

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

    @property
    def closed_columns(self) -> tuple[str, ...]:
        """Published columns whose domain is a list of values: no free value gets out."""
        return tuple(c for c, d in self.domains.items() if d.values is not None)
