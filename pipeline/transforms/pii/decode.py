"""Text as a reader sees it: URL-encoding, HTML entities and JSON string escapes decoded,
with a map back.

Pasted URLs, HTML and JSON carry identifiers in encoded form (`jane.doe%40gmail.com`,
`name=Sofia%20Rossi`, `bob&#64;corp.io`, `Ren&eacute;e`, `Name: Ana Lima\\nPhone: 439 4166`);
recognizers written for plain text pass over them. Detection runs on the decoded text and
every span is mapped back to the original characters, so the scrubbed output keeps the text as
it was, minus the identifiers.

Only what decodes cleanly is decoded: a run of `%XX` that is not valid UTF-8 (`25%ad`), an
`&word;` that is no HTML entity, or a `\\uD83D` half of a surrogate pair stays as written.
`+` is left alone (`+44 20 ...` is a phone).
"""

from __future__ import annotations

import html
import re
from typing import NamedTuple

_ENCODED = re.compile(r"(?:%[0-9A-Fa-f]{2})+|&(?:#\d{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z]\w{1,31});"
                      r"|\\(?:[nrt\"/\\]|u[0-9A-Fa-f]{4})")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "/": "/", "\\": "\\"}


class Decoded(NamedTuple):
    """Decoded text; `starts[i]`/`ends[i]` bound the original characters of decoded char i."""

    text: str
    starts: list[int]
    ends: list[int]

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The original span of decoded characters `start:end` (end exclusive, non-empty)."""
        return self.starts[start], self.ends[end - 1]


def _percent_run(run: str) -> list[tuple[str, int, int]] | None:
    """(char, start, end) per decoded character of `%XX%XX...`, offsets within the run; None
    if the bytes are not UTF-8."""
    data = bytes.fromhex(run.replace("%", ""))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out, pos = [], 0
    for ch in data.decode("utf-8"):
        width = 3 * len(ch.encode("utf-8"))
        out.append((ch, pos, pos + width))
        pos += width
    return out


def decode(text: str) -> Decoded | None:
    """`text` with `%XX` runs, HTML entities and `\\n`-style escapes decoded, or None when
    nothing decodes (most texts: then spans need no mapping)."""
    if "%" not in text and "&" not in text and "\\" not in text:
        return None
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos, changed = 0, False
    for m in _ENCODED.finditer(text):
        token = m.group()
        if token[0] == "%":
            parts = _percent_run(token)
        elif token[0] == "\\":
            value = _ESCAPES.get(token[1]) or chr(int(token[2:], 16))
            parts = None if "\ud800" <= value <= "\udfff" else [(value, 0, len(token))]
        else:
            value = html.unescape(token)
            parts = None if value == token else [(ch, 0, len(token)) for ch in value]
        if parts is None:
            continue
        for i in range(pos, m.start()):
            chars.append(text[i])
            starts.append(i)
            ends.append(i + 1)
        for ch, a, b in parts:
            chars.append(ch)
            starts.append(m.start() + a)
            ends.append(m.start() + b)
        pos, changed = m.end(), True
    if not changed:
        return None
    for i in range(pos, len(text)):
        chars.append(text[i])
        starts.append(i)
        ends.append(i + 1)
    return Decoded("".join(chars), starts, ends)
