"""PII handling: schema-tagged columns by rule, free text scanned with Presidio.

Direct identifiers (`handling: drop`) are removed. Free-text columns (`handling: scan`) go
through the recognizers of the registry config names (`registry`: Presidio's, with an explicit
spaCy model installed with the project and never downloaded at run time, and this project's
`recognizers`) via `detect.FastAnalyzer`, and
every detected span is replaced by a keyed typed token such as `<EMAIL_ADDRESS:qkzvmtrahpwe>`.
Identical texts are analysed once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.config import PiiConfig, RecordSchema
from pipeline.core.details import ColumnFinding, ColumnScan, PiiDetails
from pipeline.core.records import StageStats
from pipeline.transforms.pii.columns import apply_policy, columns_to_check, scan_columns
from pipeline.transforms.pii.detect import FastAnalyzer, PiiSpan, WorkerPool
from pipeline.transforms.pii.text_cache import EarlierTexts, FreshTexts
from pipeline.transforms.pii.tokens import replace_spans, resolve_overlaps


@dataclass(frozen=True)
class ScrubResult:
    table: pl.DataFrame
    stats: StageStats
    findings: list[ColumnFinding]  # the untagged columns found to hold PII


def build_pii_analyzer(cfg: PiiConfig) -> Any:
    """Presidio's analyzer with the recognizers of the registry config names
    (`pipeline.transforms.pii.registry`)."""
    from pipeline.transforms.pii.registry import build_analyzer

    return build_analyzer(cfg)


TEXT_CACHE_ENTRIES = 500_000  # ~60 MB of short texts and their scrubbed forms
WORKERS_FROM_TEXTS = 4000  # fewer distinct texts: one process is done before a worker loads


def distinct_texts(events: pl.DataFrame, schema: RecordSchema) -> int:
    """How many distinct free texts `scrub_pii` will analyse (to decide on workers)."""
    return sum(events.get_column(c).n_unique() for c in schema.with_handling("scan")
               if c in events.columns)


def fast_analyzer(cfg: PiiConfig, *, with_workers: bool = False) -> FastAnalyzer:
    """The project's detector. `with_workers` (and `n_process` > 1) starts worker processes
    first, so they load while this process loads its own model. Close it when done."""
    workers = (WorkerPool(fast_analyzer, cfg, size=cfg.n_process - 1)
               if with_workers and cfg.n_process > 1 else None)
    return FastAnalyzer(build_pii_analyzer(cfg), cfg, workers=workers)


class TextScrubber:
    """Finds PII with `FastAnalyzer` (Presidio's recognizers) and replaces each span by a keyed
    typed token (`tokens`); built once per run from config and the token key."""

    def __init__(self, cfg: PiiConfig, token_key: bytes, *, with_workers: bool = False,
                 cache_entries: int = TEXT_CACHE_ENTRIES,
                 earlier: EarlierTexts | None = None) -> None:
        """`earlier`: what earlier days scrubbed under this token key (`text_cache`); a text
        found there is not analysed again, and what this scrubber analyses is kept for the
        days after (`fresh`)."""
        self.analyzer = fast_analyzer(cfg, with_workers=with_workers)
        self._key = token_key
        # Texts already scrubbed by this scrubber (every shard of a day run here): a text
        # that recurs across shards (a common search, a canned reply) is analysed once.
        # Bounded; kept in memory only, for the scrubber's life.
        self._done: dict[str, tuple[str, Counter[str]]] = {}
        self._cache_entries = cache_entries
        self._earlier = earlier
        self.fresh = FreshTexts(token_key, cache_entries) if earlier is not None else None
        self.reused = self.analysed = self.from_earlier = 0

    def __enter__(self) -> TextScrubber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.analyzer.close()

    def scrub_with_spans(self, texts: list[str]) -> list[tuple[str, list[PiiSpan]]]:
        """Each text with every detected span (overlaps merged: `resolve_overlaps`) replaced
        by its token, and those spans (offsets into the text as given)."""
        out = []
        for text, found in zip(texts, self.analyzer.analyze(texts), strict=True):
            spans = resolve_overlaps(found)
            out.append((replace_spans(text, spans, self._key) if spans else text, spans))
        return out

    def scrub(self, texts: list[str]) -> tuple[list[str], list[Counter[str]]]:
        """Replace every detected span by its token; return new texts and what was found.

        Pass unique texts: each is analysed as given.
        """
        new = [t for t in texts if t not in self._done]
        self.reused += len(texts) - len(new)
        earlier = self._earlier.lookup(new) if self._earlier is not None and new else {}
        self.from_earlier += len(earlier)
        new = [t for t in new if t not in earlier] if earlier else new
        self.analysed += len(new)
        fresh = {text: (scrubbed, Counter(s.entity_type for s in spans))
                 for text, (scrubbed, spans) in zip(new, self.scrub_with_spans(new),
                                                    strict=True)}
        if self.fresh is not None:
            self.fresh.add(fresh)
        fresh.update(earlier)
        out = [fresh[t] if t in fresh else self._done[t] for t in texts]
        room = self._cache_entries - len(self._done)
        if room > 0:
            self._done.update(itertools.islice(fresh.items(), room))
        return [t for t, _ in out], [c for _, c in out]


def scrub_pii(events: pl.DataFrame, schema: RecordSchema, scrubber: TextScrubber, *,
              pseudonym_key: bytes, closed: Collection[str] = (),
              findings: list[ColumnFinding] | None = None) -> ScrubResult:
    """Drop direct identifiers, handle untagged columns that hold PII by policy (except
    `closed` ones, see `scan_columns`; or as `findings` from another shard of the day say),
    and scrub free text. Row count is unchanged."""
    drop = [c for c in schema.with_handling("drop") if c in events.columns]
    table = events.drop(drop)
    if findings is None:
        findings = scan_columns(table, schema, scrubber.analyzer, scrubber.analyzer.cfg, closed)
    table = apply_policy(table, findings, pseudonym_key=pseudonym_key)
    found_by_column: dict[str, dict[str, int]] = {}
    analysed, from_earlier = scrubber.analysed, scrubber.from_earlier
    for column in schema.with_handling("scan"):
        counts = table.group_by(column).len().drop_nulls(column)
        uniques = counts[column].to_list()
        scrubbed, found = scrubber.scrub(uniques)
        totals: Counter[str] = Counter()
        for n, hits in zip(counts["len"].to_list(), found, strict=True):
            for entity, k in hits.items():
                totals[entity] += k * n
        found_by_column[column] = dict(sorted(totals.items()))
        mapping = pl.DataFrame({column: uniques, "_scrubbed": scrubbed},
                               schema={column: pl.String, "_scrubbed": pl.String})
        table = (table.join(mapping, on=column, how="left", maintain_order="left")
                 .with_columns(pl.col("_scrubbed").alias(column)).drop("_scrubbed"))
    total: Counter[str] = Counter()
    for per_col in found_by_column.values():
        total.update(per_col)
    stats = StageStats(stage="detect_pii", rows_in=events.height, rows_out=table.height,
                       details=PiiDetails(
        dropped_columns=drop, pii_found=dict(sorted(total.items())),
        column_scan=ColumnScan(checked=columns_to_check(events.drop(drop), schema),
                               flagged=findings),
        pii_found_by_column=found_by_column, texts_analysed=scrubber.analysed - analysed,
        texts_from_earlier_days=scrubber.from_earlier - from_earlier))
    return ScrubResult(table, stats.check_balanced(), findings)
