"""The subject-access archive on disk: every table as CSV and JSON, written as rows arrive.

GDPR Art. 20 asks for data "in a structured, commonly used and machine-readable format": each
table is `<name>.csv` (a header, then rows) and `<name>.json` (one JSON array of objects),
appended shard by shard, so an archive of a large day never holds more than a shard. Values are
written as they are held (timestamps as ISO text); nested values as JSON text in the CSV.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import polars as pl


@dataclass
class _Table:
    csv: IO[str]
    json: IO[str]
    columns: list[str]
    rows: int = 0


@dataclass
class Archive:
    """A folder of tables; `add` appends rows, `close` ends the JSON arrays."""

    root: Path
    _open: dict[str, _Table] = field(default_factory=dict)
    _rows: dict[str, int] = field(default_factory=dict)  # table -> rows, kept after close

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, rows: pl.DataFrame) -> None:
        """Append `rows` to table `name` (created with their columns on first use)."""
        table = self._open.get(name)
        if table is None:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            table = _Table(open(path.with_suffix(".csv"), "w", newline="", encoding="utf-8"),  # noqa: SIM115
                           open(path.with_suffix(".json"), "w", encoding="utf-8"),  # noqa: SIM115
                           list(rows.columns))
            table.json.write("[")
            rows.clear().write_csv(table.csv)
            self._open[name] = table
            self._rows[name] = 0
        if rows.is_empty():
            return
        rows = _plain(rows.select(table.columns))
        rows.write_csv(table.csv, include_header=False)
        for record in rows.iter_rows(named=True):
            table.json.write(("\n" if table.rows == 0 else ",\n")
                             + json.dumps(record, ensure_ascii=False, default=str))
            table.rows += 1
        self._rows[name] = table.rows

    def counts(self) -> dict[str, int]:
        """Rows written per table."""
        return dict(self._rows)

    def write_text(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def close(self) -> None:
        for table in self._open.values():
            table.json.write("\n]\n")
            table.csv.close()
            table.json.close()
        self._open.clear()

    def zip(self) -> Path:
        """The folder as one zip file beside it (what to hand to the person)."""
        target = self.root.with_suffix(".zip")
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
                zf.write(path, path.relative_to(self.root))
        return target


def _plain(rows: pl.DataFrame) -> pl.DataFrame:
    """Columns CSV can hold: nested values as JSON text, times as ISO text."""
    out = []
    for name, dtype in rows.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List | pl.Struct | pl.Array):
            out.append(col.map_elements(lambda v: json.dumps(v, default=str),
                                        return_dtype=pl.String))
        elif dtype.is_temporal():
            out.append(col.cast(pl.String))
        else:
            out.append(col)
    return rows.select(out)
