"""Person names as people type them: lowercase, ALL CAPS, in Greek, Cyrillic, Arabic, Turkish,
Chinese or Korean.

spaCy's small English model finds capitalized Latin-script names in English sentences and
little else. This recognizer needs no model: a gazetteer of given and family names across
locales (Faker's per-locale lists, installed with the project, never downloaded), with rules:

- a given name followed by a family (or second given) name, in any case: `john smith`,
  `ROBERT JOHNSON`, `Олег Петров`, up to three words (`Juan Pablo Ortega`);
- a title or an initial before a capitalized word: `Mrs. Jenkins`, `A. Schmidt`;
- a lone given name after a cue that introduces a person: `this is`, `i'm`, `ask for`,
  `thanks`, `my wife`, `spoke to`...; or before `here`: `becky here`;
- in scripts written without spaces (Han, Hangul), a family name followed by a given name.

The value of a name-like key (`"name": "Priya Raman"`) is found by `keyed`.

English words that are also names (`will`, `may`, `green`, `park`) and stop words never count
as a name or as part of one (`Kelly green` is a colour).
"""

from __future__ import annotations

import importlib
import re
from functools import cache

LOCALES = ("en_US", "en_GB", "en_IE", "en_IN", "en_AU", "de_DE", "fr_FR", "es_ES", "es_MX",
           "it_IT", "pt_BR", "pt_PT", "nl_NL", "pl_PL", "ru_RU", "uk_UA", "el_GR", "tr_TR",
           "zh_CN", "ko_KR", "ar_AA", "fa_IR", "hi_IN", "sv_SE", "no_NO", "da_DK", "fi_FI",
           "cs_CZ", "ro_RO", "hu_HU", "vi_VN", "id_ID", "yo_NG", "zu_ZA", "ga_IE", "ja_JP")
_GIVEN = ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary")
_FAMILY = ("last_names", "last_names_male", "last_names_female")
# English words that are also given or family names: never a name alone or in a pair of them.
COMMON = frozenset("""
will may mark bill grant rose hope june april august summer autumn faith joy grace chase frank
jack ford lincoln jordan georgia florence victoria paris king queen prince green brown white
black gray grey gold silver park young hill wood woods stone bell hall field fields street
lane price post cook baker miller page rich long short little small best love star sky ray
dawn sunny rain storm river lake forest glen dale dean early north south west east major
norman lee van von de la le du da di del al bin ben art guy sam ted pat max rob ken jan dan
don ron tim tom sue ann kim jo joe sol rock mo buck cash gene crystal amber ruby pearl iris
lily daisy holly ivy violet jade sage bay city home sale new mint apple berry bishop
cross moss nash nicholas miles penny pink sharp hunter archer carter cooper dash
""".split())  # noqa: SIM905 - a word list reads best as words
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_UNSPACED = re.compile(r"[\u4e00-\u9fff\uac00-\ud7af]+")
_CAP = r"(?-i:[A-ZÀ-ÖØ-ÞĀ-ſΑ-ΩА-Я][^\W\d_'’-]*(?:['’-][^\W\d_]+)*)"
_TITLE = re.compile(r"(?i)\b(?:mr|mrs|ms|miss|mx|dr|prof|sr|sra|herr|frau|mme|mlle)\.?\s+"
                    rf"(?:[A-Z]\.\s*)?{_CAP}(?:\s+{_CAP})?|(?-i:\b[A-Z]\.\s+){_CAP}")
# After these, one or two capitalized words are a name even if no list knows them.
_STRONG_CUE = re.compile(rf"(?i)\b(?:this is|it'?s|i'?m|i am|my name is|name'?s)\s+"
                         rf"({_CAP}(?:\s+{_CAP})?)")
_CUE = re.compile(r"(?i)(?:\b(?:this is|it'?s|it is|i'?m|i am|my name is|name'?s|ask for|"
                  r"thanks|thank you|thx|cheers|regards|best|hi|hey|hiya|yo|dear|hello|"
                  r"spoke (?:to|with)|talked to|call|ring|text|my (?:husband|wife|son|"
                  r"daughter|friend|neighbou?r|mom|mum|dad|brother|sister|aunt|uncle|boss)|"
                  r"from|for|can|and|with|sent by|signed)[\s,:;!.-]*|^\s*-\s*)$")
_AFTER = re.compile(r"(?i)^\s*(?:here\b|from\b|says\b|said\b|wants\b|writes\b)")
MAX_WORDS = 3


def fold(word: str) -> str:
    """Case-free form: `İlker` and `ILKER` are `ilker`."""
    return word.casefold().replace("\u0307", "")


# Scripts whose names people also type in Latin letters (`Papadakis`, `Petrov`, `Celik`); the
# romanized form is added. Han, Hangul and Arabic romanize too loosely to match what people type.
_ROMANIZABLE = re.compile(r"^[\u00C0-\u024F\u0370-\u03FF\u1F00-\u1FFF\u0400-\u04FFA-Za-z'’ -]+$")


def _romanized(name: str) -> str | None:
    from anyascii import anyascii

    if name.isascii() or not _ROMANIZABLE.match(name):
        return None
    latin = fold(anyascii(name))
    return latin if len(latin) >= 3 and latin.replace("-", "").isalpha() else None


@cache
def gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """(given names, family names), case-folded, from Faker's person providers, with the
    Latin spelling of Greek, Cyrillic and accented Latin names."""
    given: set[str] = set()
    family: set[str] = set()
    for locale in LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ImportError:
            continue
        for attrs, out in ((_GIVEN, given), (_FAMILY, family)):
            for attr in attrs:
                names = getattr(provider, attr, ())
                out.update(fold(n) for n in names if len(n) > 1 or not n.isascii())
                out.update(r for n in names if (r := _romanized(n)))
    return frozenset(given), frozenset(family)


@cache
def plain_words() -> frozenset[str]:
    """Words never a name alone: COMMON and English stop words."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return COMMON | frozenset(STOP_WORDS)


def _same_case(first: str, other: str) -> bool:
    """`Monica pier` is not a name where `Monica Pier` or `monica pier` may be."""
    return (first.isupper() == other.isupper() if first.isupper() or other.isupper()
            else first[:1].isupper() == other[:1].isupper())


def _lone_capitalized(words: list[re.Match[str]], folded: list[str], i: int,
                      given: frozenset[str], plain: frozenset[str]) -> bool:
    """A known given name alone, as in `I think Rebecca already emailed` or `Noor's birthday`:
    capitalized (not all capitals), not inside a run of capitalized words (`Comic Con`, `Nike
    Air`: products), and not before a word that makes it one (`Kelly green`)."""
    def cap(k: int) -> bool:
        return 0 <= k < len(words) and words[k].group()[:1].isupper()

    word = folded[i].removesuffix("'s").removesuffix("’s")
    return (word in given and word not in plain and words[i].group().istitle()
            and not cap(i - 1) and not cap(i + 1)
            and (i + 1 == len(words) or folded[i + 1] not in COMMON))


def name_spans(text: str) -> list[tuple[int, int, float]]:
    """(start, end, score) of each name found in `text` (see module docstring)."""
    given, family = gazetteer()
    plain = plain_words()
    words = list(_WORD.finditer(text))
    folded = [fold(w.group()) for w in words]
    spans: list[tuple[int, int, float]] = []
    i = 0
    while i < len(words):
        w, j = folded[i], i + 1
        while (j < len(words) and j - i < MAX_WORDS and folded[j] not in plain
               and (folded[j] in family or folded[j] in given)
               and _same_case(words[i].group(), words[j].group())
               and not text[words[j - 1].end():words[j].start()].strip()):
            j += 1
        # A known given name, or any capitalized word, before a known family name.
        starts = w in given or (words[i].group()[:1].isupper() and j - i >= 2
                                and folded[i + 1] in family)
        if starts and w not in plain and j - i >= 2:
            spans.append((words[i].start(), words[j - 1].end(), 0.6))
            i = j
            continue
        if w in given and w not in plain and (
                _CUE.search(text[:words[i].start()]) or _AFTER.match(text[words[i].end():])):
            spans.append((words[i].start(), words[i].end(), 0.5))
        elif _lone_capitalized(words, folded, i, given, plain):
            spans.append((words[i].start(), words[i].end(), 0.4))
        i += 1
    spans += [(m.start(), m.end(), 0.6) for m in _TITLE.finditer(text)]
    spans += [(m.start(1), m.end(1), 0.45) for m in _STRONG_CUE.finditer(text)
              if not any(fold(x) in plain for x in m.group(1).split())]
    for run in _UNSPACED.finditer(text):
        s = run.group()
        for a in range(len(s) - 1):
            for fam in (s[a:a + 2], s[a]):
                rest = a + len(fam)
                hit = next((rest + g for g in (2, 1) if s[rest:rest + g] in given), None)
                if fam in family and hit is not None:
                    spans.append((run.start() + a, run.start() + hit, 0.6))
                    break
    return spans


# A person's name written into a link, as profile, booking and share links carry it: a path
# segment or a query value of two or three words joined by `-`, `.`, `_` or `+`
# (`/u/karen-miller/`, `/in/john-smith-4a2b1c`, `calendly.com/maria.garcia`, `?owner=ahmed_hassan`),
# the first a given name the lists know and the next a family (or second given) name. Words
# that are also English words (`rose`, `jordan`, `new`) never start one; after a given name
# they may go on one (`karen-miller`).
URL_NAME_PREFILTER = r"[/=][^\s/?#&=]*[^\W\d_][-._+][^\W\d_]"
_URL_PIECE = re.compile(r"(?<=[/=])[^\s/?#&=]+")
_SLUG_WORD = re.compile(r"[^\W\d_]+")


def url_name_spans(text: str) -> list[tuple[int, int, float]]:
    """(start, end, score) of each name written as a link's path segment or query value."""
    given, family = gazetteer()
    plain = plain_words()
    spans = []
    for piece in _URL_PIECE.finditer(text):
        words = list(_SLUG_WORD.finditer(piece.group()))
        if len(words) < 2 or words[0].start() != 0:
            continue
        folded = [fold(w.group()) for w in words[:MAX_WORDS]]
        seps = [piece.group()[a.end():b.start()] for a, b in zip(words, words[1:], strict=False)]
        n = 1
        while (n < len(folded) and seps[n - 1] in ("-", ".", "_", "+")
               and (folded[n] in family or folded[n] in given)):
            n += 1
        if n >= 2 and folded[0] in given and folded[0] not in plain:
            spans.append((piece.start(), piece.start() + words[n - 1].end(), 0.6))
    return spans
