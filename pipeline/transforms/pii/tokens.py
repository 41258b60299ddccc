"""Keyed, typed tokens that replace PII spans in free text.

`maria@example.com` becomes `<EMAIL_ADDRESS:qkzvmtrahpwe>`: the entity type stays readable, and
the same value (after normalizing, so `Maria@Example.com` is the same address) gets the same token
in every row and run under one key, so analysts can still count distinct values. The digest is an
HMAC-SHA256 under a key derived for this purpose and use, so a token reveals nothing without the
key and cannot be joined with another purpose's tokens or pseudonyms. Tokens are lowercase letters
only, so they never look like a phone number, card or IP to a later scan.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from pipeline.transforms.pii.detect import PiiSpan

TOKEN_LETTERS = 12  # 26**12 ~ 2**56 values: collisions are negligible at any realistic scale
TOKEN_PATTERN = r"<[A-Z][A-Z0-9_]*:[a-z]{12}>"
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]")
_NOT_PHONE = re.compile(r"[^0-9+]")
_SPACES = re.compile(r"\s+")


def normalize(entity: str, value: str) -> str:
    """The form two spellings of one value share (case, spaces, separators)."""
    if entity in ("CREDIT_CARD", "IBAN_CODE", "US_SSN"):
        return _NOT_ALNUM.sub("", value).upper()
    if entity == "PHONE_NUMBER":
        return _NOT_PHONE.sub("", value)
    return _SPACES.sub(" ", value.strip()).casefold()


def token(key: bytes, entity: str, value: str) -> str:
    """`<ENTITY:twelveletters>` for one value under `key`."""
    digest = hmac.new(key, f"{entity}\x1f{normalize(entity, value)}".encode(),
                      hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big")
    letters = []
    for _ in range(TOKEN_LETTERS):
        n, r = divmod(n, 26)
        letters.append(chr(97 + r))
    return f"<{entity}:{''.join(letters)}>"


def resolve_overlaps(spans: Iterable[PiiSpan]) -> list[PiiSpan]:
    """Non-overlapping spans in text order. Overlapping spans merge into one that covers them
    all, typed as the most confident of them (then the longest, then by name, so the result
    never depends on the order recognizers ran): a wrong detection inside or across a real
    identifier can only widen what is replaced, never let part of it through."""
    merged: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end, s.entity_type)):
        if merged and span.start < merged[-1].end:
            top = merged[-1]
            best = max(top, span, key=lambda s: (s.score, s.end - s.start, s.entity_type))
            merged[-1] = PiiSpan(best.entity_type, top.start, max(top.end, span.end),
                                 best.score)
        else:
            merged.append(span)
    return merged


def replace_spans(text: str, spans: list[PiiSpan], key: bytes) -> str:
    """`text` with every span (non-overlapping: `resolve_overlaps`) replaced by its token."""
    parts, pos = [], 0
    for span in spans:
        parts += [text[pos:span.start], token(key, span.entity_type, text[span.start:span.end])]
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)
