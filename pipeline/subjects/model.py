"""What a subject-access request found (`pipeline.subjects.access`), as the archive's README
and the person's page (`pipeline.subjects.page`) read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.subjects.explain import ReleaseTaken


@dataclass
class PurposeFindings:
    """What one purpose holds of the person."""

    purpose: str
    description: str
    pseudonyms: dict[str, str]  # key id -> pseudonym (the current epoch's)
    status: str = "none"  # their latest consent decision for the purpose (`consent`)
    rows: dict[str, int] = field(default_factory=dict)  # zone -> rows
    held: dict[str, set[date]] = field(default_factory=dict)  # zone -> dates
    unreadable: list[str] = field(default_factory=list)
    groups: pl.DataFrame | None = None
    cohorts: pl.DataFrame | None = None
    profiles: pl.DataFrame | None = None
    releases: list[ReleaseTaken] = field(default_factory=list)
    deletions: pl.DataFrame | None = None


@dataclass
class SubjectAccess:
    """The outcome of one request: where the archive is, and what it found."""

    folder: Path
    zip: Path
    page: Path
    requested_at: str
    raw_lines: int
    consent_records: int
    consent: list[dict]  # the person's consent decisions, as recorded
    erasure_requested: list[str]
    purposes: list[PurposeFindings]
    tables: dict[str, int]

    @property
    def holds_anything(self) -> bool:
        return bool(self.raw_lines or self.consent_records
                    or any(p.rows for p in self.purposes))
