"""Scrubbed free texts kept across days, per key epoch (`pii.text_cache`).

A text that recurs from day to day (a common search, a canned reply, a product name) goes
through NER once per key epoch instead of once a day. For each text the cache holds the HMAC of
the text under the purpose's token key (never the text), its scrubbed form and the entity types
found. The stage keeps it in the `text_cache` zone, encrypted as staging is, a folder per day the
texts were first scrubbed, so retention deletes it as it deletes staging. A scrubbed form holds
the token key's tokens, so after a rotation the earlier epoch's entries are never read. It holds
no identifier, so an erasure, withdrawal or reset cannot find a person in it: each clears it
whole (`pipeline.steps.intake.erase`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable

import polars as pl

SCHEMA = {"mac": pl.Binary, "scrubbed": pl.String, "found": pl.List(pl.String)}


def text_mac(key: bytes, text: str) -> bytes:
    """What a text is found by: an HMAC under the token key, domain-separated from tokens."""
    return hmac.new(key, b"text-cache\x00" + text.encode(), hashlib.sha256).digest()


class EarlierTexts:
    """What earlier days scrubbed under one token key, by the text's MAC."""

    def __init__(self, key: bytes, tables: Iterable[pl.DataFrame] = ()) -> None:
        self._key = key
        self._by_mac: dict[bytes, tuple[str, list[str]]] = {}
        for table in tables:
            for mac, scrubbed, found in table.iter_rows():
                self._by_mac.setdefault(mac, (scrubbed, found))

    def __len__(self) -> int:
        return len(self._by_mac)

    def lookup(self, texts: list[str]) -> dict[str, tuple[str, Counter[str]]]:
        """The texts among `texts` scrubbed before: their scrubbed form and what was found."""
        out = {}
        for text in texts:
            hit = self._by_mac.get(text_mac(self._key, text))
            if hit is not None:
                out[text] = (hit[0], Counter(hit[1]))
        return out


class FreshTexts:
    """Texts a scrubber analysed, for the days after (at most `limit`)."""

    def __init__(self, key: bytes, limit: int) -> None:
        self._key, self._limit = key, limit
        self._rows: dict[bytes, tuple[str, list[str]]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, scrubbed: dict[str, tuple[str, Counter[str]]]) -> None:
        for text, (out, found) in scrubbed.items():
            if len(self._rows) >= self._limit:
                return
            self._rows[text_mac(self._key, text)] = (out, sorted(found.elements()))

    def table(self) -> pl.DataFrame:
        return pl.DataFrame({"mac": list(self._rows), "scrubbed": [v[0] for v in
                                                                     self._rows.values()],
                             "found": [v[1] for v in self._rows.values()]}, schema=SCHEMA)
