"""Values of keys that say what they hold, in pasted JSON, query strings and `key: value` text.

`{"phone": "555-0147"}` is a phone number though no region's rules accept it, and
`"address": "12 Elm Row"` an address though it has no street suffix. The key says so. Each
entity has its keys and the shape its value must have (a phone value holds digits, an address
a number), so `"phone": "none"` stays. An unquoted value is the shortest that ends at a
delimiter, two spaces or the next `label:`.
"""

from __future__ import annotations

import re
from functools import cache

# entity -> (key names, value shape)
KEY_HINTS: dict[str, tuple[str, str]] = {
    "PERSON": (r"full_?name|first_?name|last_?name|given_?name|family_?name|sur_?name|name|"
               r"customer(?:_name)?|recipient(?:_name)?|author|holder|contact_?name|"
               r"user_?name|cardholder|beneficiary|patient|guest",
               r"[^\W\d_](?:[^\W\d_]|['’. +-]){0,58}?[^\W\d_]"),
    "EMAIL_ADDRESS": (r"e-?mail(?:_?address)?|mail|email_?addr|contact_?email|user_?email",
                      r"[^\s\"'@&,;]{1,64}@[^\s\"'&,;}]{1,253}?"),
    "PHONE_NUMBER": (r"phone(?:_?number)?|mobile(?:_?phone)?|cell(?:_?phone)?|tel(?:ephone)?|"
                     r"msisdn|whatsapp|fax|contact_?phone",
                     r"\+?[\d(][\d ().+-]{4,22}?\d"),
    "US_STREET_ADDRESS": (r"(?:street_?|home_?|billing_?|shipping_?|postal_?|mailing_?)?"
                          r"address(?:_?line)?(?:_?[12])?|addr|street|line_?[12]",
                          r"[^\"'\n&]{0,60}?\d[^\"'\n&]{0,60}?"),
}
# An unquoted value ends at a delimiter, two spaces, the next `label:` (`Name: Keiko  Last
# name: Sato`, `Cardholder: SAMUEL ADEYEMI Card: ...`) or a word that starts a clause
# (`Name: John Smith and I want a refund`).
_END = (r"(?=\s*(?:[&,;|}\]\n<>()\"']|$)|\s{2}|\s+[^\W\d_]+\s*:"
        r"|\s+(?i:and|or|but|is|was|i|i'm|im|pls|please|thanks|thx|from|to|for|with|at|on)\b)")


def key_hint(entity: str) -> str:
    """A regex every keyed value of `entity` matches at its key (for prefilters)."""
    return rf"(?i:\b(?:{KEY_HINTS[entity][0]})[\"']?\s*[:=])"


@cache
def _pattern(entity: str) -> re.Pattern[str]:
    keys, shape = KEY_HINTS[entity]
    return re.compile(rf"""(?i)["']?\b(?:{keys})["']?\s*[:=]\s*"""
                      rf"""(?:"\s*({shape})\s*"|'\s*({shape})\s*'|({shape}){_END})""")


def keyed_spans(entity: str, text: str) -> list[tuple[int, int, float]]:
    """(start, end, score) of each value of an `entity` key in `text`."""
    out = []
    for m in _pattern(entity).finditer(text):
        group = next(g for g in (1, 2, 3) if m.group(g) is not None)
        out.append((m.start(group), m.end(group), 0.6))
    return out
