"""This project's PII recognizers: one class per recognizer, its patterns, context words and
prefilter as class attributes (Presidio's own predefined recognizers are written this way), each
listed by name in the recognizer registry (`recognizers.yaml`, see `pipeline.transforms.pii.
registry`).

`PREFILTER` is a regex every match of the recognizer satisfies, run by Polars over a whole column
before any recognizer runs (`FastAnalyzer.plan`): the recognizer only sees texts it can match.
Wider is safe (more texts checked); narrower would lose recall.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any, ClassVar

from presidio_analyzer import AnalysisExplanation, Pattern, PatternRecognizer, RecognizerResult

from pipeline.transforms.pii.keyed import key_hint, keyed_spans
from pipeline.transforms.pii.names import (
    URL_NAME_PREFILTER,
    gazetteer,
    name_spans,
    plain_words,
    url_name_spans,
)

# US street addresses ("4759 William Haven Apt. 194"), which Presidio has no recognizer for.
# Suffixes: USPS Publication 28 primary street suffixes (common subset), also in the plural.
_STREET_SUFFIXES = (
    "Alley|Avenue|Ave|Bend|Bluff|Boulevard|Blvd|Branch|Bridge|Brook|Burg|Bypass|Camp|Canyon|"
    "Cape|Causeway|Center|Circle|Cliff|Club|Common|Corner|Course|Court|Ct|Cove|Creek|Crescent|"
    "Crest|Crossing|Curve|Dale|Dam|Divide|Drive|Dr|Estate|Expressway|Extension|Falls|Ferry|"
    "Field|Fields|Flat|Ford|Forest|Forge|Fork|Fort|Freeway|Garden|Gardens|Gateway|Glen|Green|"
    "Grove|Harbor|Haven|Heights|Highway|Hill|Hills|Hollow|Inlet|Island|Islands|Isle|Junction|"
    "Key|Knoll|Knolls|Lake|Lakes|Land|Landing|Lane|Ln|Light|Lights|Loaf|Lock|Locks|Lodge|Loop|"
    "Mall|Manor|Manors|Meadow|Meadows|Mews|Mill|Mills|Mission|Motorway|Mount|Mountain|Neck|"
    "Orchard|Oval|Overpass|Park|Parks|Parkway|Pass|Passage|Path|Pike|Pine|Pines|Place|Pl|Plain|"
    "Plains|Plaza|Point|Points|Port|Ports|Prairie|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|"
    "Ridges|River|Road|Rd|Route|Row|Rue|Run|Shoal|Shoals|Shore|Shores|Skyway|Spring|Springs|"
    "Spur|Square|Squares|Station|Stravenue|Stream|Street|St|Streets|Summit|Terrace|Throughway|"
    "Trace|Track|Trafficway|Trail|Trailer|Tunnel|Turnpike|Underpass|Union|Unions|Valley|"
    "Valleys|Viaduct|View|Views|Village|Villages|Ville|Vista|Walk|Walks|Wall|Way|Ways|Well|Wells")
_SEP = r"[\s+]+"  # a space, also as URL queries write it
_US_STREET = (
    rf"\b\d{{1,6}}[A-Z]?{_SEP}(?:(?:N|S|E|W|NE|NW|SE|SW)\.?{_SEP})?"
    rf"(?:(?:\d{{1,3}}(?:st|nd|rd|th)|[A-Z][a-z]+(?:['’][a-z]+)?|[A-Z]\.?){_SEP}){{1,4}}"
    rf"(?:{_STREET_SUFFIXES}|Pkwy|Hwy|Ter|Sq|Cir|Trl|Expy|Fwy)s?\b\.?"
    rf"(?:{_SEP}(?:N|S|E|W|NE|NW|SE|SW)\b)?(?:\s+(?:Apt\.?|Suite|Unit|#)\s*\d{{1,5}})?")
# Where the number follows the street: DE/NL/AT/CH, Nordic and Icelandic compounds, Hungarian
# `utca`, Polish `ul.`, and Southern European forms. (A stem of 3+ letters: `Spring 2024` is
# no street.)
_EU_STREET = (
    r"\b[A-ZÀ-ÞÅÆØ][^\W\d_]{2,}(?:-[^\W\d_]+)*(?:straße|strasse|str\.|weg|gasse|platz|allee|"
    r"gracht|laan|straat|dijk|kade|ring|damm|ufer|markt|vägen|gatan|gränd|vej|veien|vegen|gata|"
    r"gade|katu|kuja|tie|stígur|braut)\s+\d{1,4}[a-z]?\b"
    r"|\b[A-ZÀ-Þ][^\W\d_]+\s+(?:utca|út|tér|körút)\s+\d{1,4}\b"
    r"|\bul\.\s+(?:[A-ZÀ-ÞŁŚŻŹ][^\W\d_]+\s+){1,3}\d{1,4}\b"
    r"|\b(?:Via|Viale|Calle|Avenida|Rua|Carrer|Piazza|Plaza|Corso)\s+(?:[A-Z][\w'’]+\s+){1,3}"
    r"\d{1,4}\b")
# US military mail: `PSC 5125, Box 6746 APO AP 05310`, `USNS Comfort FPO AA 34055`.
_MILITARY = (r"(?:\b(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{1,5}|\b(?:USNS|USNV|USS|USCGC)\s+"
             r"[^\W\d_][\w'’-]*)\s*,?\s*(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5}\b")
_FR_STREET = (r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|Rue|avenue|Avenue|boulevard|Boulevard|"
              r"place|Place|quai|Quai|allée|impasse|chemin)\s+(?:(?:de la|du|des|de|d')\s*)?"
              r"[A-ZÉÈ][\w'’-]+(?:[ -][A-ZÉÈ][\w'’-]+){0,3}")
# The parts of an address written apart from the street: `Apt. 559`, `Suite 026`, `P.O. Box 63`.
_ADDRESS_UNIT = (r"\b(?:Apt\.?|Apartment|Suite|Ste\.|Unit)\s*#?\s*\d{1,5}[A-Z]?\b"
                 r"|\bP\.?\s?O\.?\s?Box\s+\d{1,6}\b")
STREET_ADDRESS_REGEXES = {"us_street_address": _US_STREET, "eu_street_address": _EU_STREET,
                          "fr_street_address": _FR_STREET, "address_unit": _ADDRESS_UNIT,
                          "military_address": _MILITARY}
# E-mail addresses Presidio's recognizer passes over: written out to dodge scrapers (`jane dot
# doe at gmail dot com`, `tom[at]protonmail[dot]com`), or on a domain without a public suffix
# (`dave.k@company.internal`). URL-encoded ones (`%40`) are decoded before detection (`decode`).
_AT = r"(?:\s*(?:\[at\]|\(at\)|\{at\})\s*|\s+at\s+)"
_DOT = r"(?:\s*(?:\[dot\]|\(dot\)|\{dot\})\s*|\s+dot\s+)"
_TLD = (r"(?:com|org|net|edu|gov|io|co|me|info|biz|app|dev|ai|us|uk|de|fr|nl|es|it|pt|ru|cn|"
        r"jp|kr|in|br|mx|ca|au|ch|at|be|se|no|dk|fi|pl|cz|ie|gr|tr|za|ng|ar|cl)")
OBFUSCATED_EMAIL_REGEX = (
    rf"(?i)\b[a-z0-9._%+-]+(?:{_DOT}[a-z0-9_%+-]+)*{_AT}[a-z0-9-]+(?:(?:{_DOT}|\.)[a-z0-9-]+)*"
    rf"(?:{_DOT}|\.){_TLD}\b")
LOOSE_EMAIL_REGEX = r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+\b"
# An international number as written, valid or not (`phonenumbers` drops numbers it cannot
# place, such as reserved or fictional ranges, yet they are still someone's number to a reader).
INTERNATIONAL_PHONE_REGEX = r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){2,6}\b"
# A North American number as written, valid or not: `phonenumbers` drops numbers in unassigned
# area codes (`(349)592-9361`, `001-756-390-9353x4974`), which are still someone's number to a
# reader. Grouped as phones are (3-3-4, optional 1/001 and extension); ten bare digits only
# next to the words that say so.
NANP_PHONE_REGEX = (r"(?<![\w+.-])(?:(?:\+?1|001)[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"
                    r"(?:(?: ?x| ?ext\.? ?)\d{1,6})?(?![\w-])")
BARE_PHONE_REGEX = r"(?<![\w+.-])\d{10}(?![\w-])"
# After the words that say so (Presidio's `regex` allows a variable lookbehind; "call" is a
# spaCy stop word, so context words cannot carry it).
SPOKEN_PHONE_REGEX = (r"(?<=\b(?:call|text|ring|reach|whatsapp|sms)(?:\s+me)?(?:\s+(?:on|at))?"
                      r"\s+)\d{10}(?![\w-])")
PHONE_CONTEXT = ["phone", "call", "number", "tel", "mobile", "cell", "text", "sms", "whatsapp",
                 "reach", "contact"]
# 12-19 digits, single spaces or dashes allowed between them.
CARD_NUMBER_REGEX = r"(?<![+\d])\b\d(?:[ -]?\d){11,18}\b"  # `+44 ...` is a phone


# An IBAN as written: country, check digits, groups of 4 in capitals. Presidio's recognizer
# ignores case, so lowercase words after the number (`... 7065 para la`) join it and the
# checksum then fails; this one is case-sensitive and checks mod 97 itself.
IBAN_REGEX = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
# SSN-shaped numbers Presidio rejects as never issued (078-05-1120, 123-45-6789) are still
# what someone typed as theirs: next to the words that say so, they go too.
SSN_REGEX = r"\b\d{3}-\d{2}-\d{4}\b"


def iban_ok(value: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers,
    the whole mod 97 is 1."""
    v = value.replace(" ", "")
    digits = "".join(str(int(c, 36)) for c in v[4:] + v[:4])
    return 15 <= len(v) <= 34 and int(digits) % 97 == 1


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def issuer_known(digits: str) -> bool:
    """Whether the number starts like a card of a major network (public IIN ranges): Visa 4,
    Mastercard 51-55 and 2221-2720, Mir 2200-2204, Amex 34/37, Diners 300-305/36/38/39,
    JCB 3528-3589 and its 15-digit 2131/1800, Maestro 50, 56-69 and 0604 (with Discover
    6011/64/65 and UnionPay 62)."""
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    return (digits[0] == "4" or 51 <= p2 <= 55 or 2221 <= p4 <= 2720 or 2200 <= p4 <= 2204
            or p2 in (34, 36, 37, 38, 39, 50) or 300 <= p3 <= 305 or 3528 <= p4 <= 3589
            or 56 <= p2 <= 69 or digits[:4] in ("2131", "1800", "0604"))


_DIGITS_12 = r"\d(?:[- ]?\d){11}"  # 12 digits, single spaces or dashes between them
_PHONE_DIGITS = r"(?:\d[^\d\n]{0,3}){6,}\d"  # 7 digits, a few separators between them
STREET_PREFILTER = r"(?i)\d{1,6}[a-z]{0,2}[\s+]+[a-z0-9]|[a-z.]\s+\d|#\s*\d"
IBAN_PREFILTER = r"(?i)\b[a-z]{2}[ -]?\d{2}(?:[ -]?[a-z0-9]){9}"
SSN_PREFILTER = r"\d{3}\D?\d{2}\D?\d{4}"


class ProjectRecognizer(PatternRecognizer):
    """A pattern recognizer declared by its class attributes: the entity it finds, its patterns
    (name -> (regex, score)), its context words, its regex flags and its prefilter."""

    ENTITY: ClassVar[str]
    PATTERNS: ClassVar[dict[str, tuple[str, float]]] = {}
    CONTEXT: ClassVar[list[str] | None] = None
    FLAGS: ClassVar[int] = re.DOTALL | re.MULTILINE | re.IGNORECASE  # Presidio's default
    PREFILTER: ClassVar[str | None] = None

    def __init__(self, supported_language: str = "en", **kwargs: Any) -> None:
        super().__init__(
            supported_entity=self.ENTITY, supported_language=supported_language,
            name=type(self).__name__,
            patterns=[Pattern(n, rx, score) for n, (rx, score) in self.PATTERNS.items()],
            context=self.CONTEXT,  # type: ignore[arg-type]  # None: no context words
            global_regex_flags=self.FLAGS, **kwargs)


class StreetAddressRecognizer(ProjectRecognizer):
    """US, European and military street addresses, which Presidio has no recognizer for.
    Case-sensitive (Presidio's default flags ignore case): street names are capitalized, and
    `5 stars on the way` is not an address."""

    ENTITY = "US_STREET_ADDRESS"
    PATTERNS = {name: (rx, 0.5) for name, rx in STREET_ADDRESS_REGEXES.items()}
    CONTEXT = ["ship", "address", "street", "deliver", "live", "adres", "adresse"]
    FLAGS = re.DOTALL | re.MULTILINE
    PREFILTER = STREET_PREFILTER


class CaseSensitiveIbanRecognizer(ProjectRecognizer):
    """An IBAN as written: country, check digits, groups of 4 in capitals, checked mod 97.
    Presidio's recognizer ignores case, so lowercase words after the number (`... 7065 para
    la`) join it and the checksum then fails."""

    ENTITY = "IBAN_CODE"
    PATTERNS = {"iban_grouped": (IBAN_REGEX, 0.5)}
    FLAGS = re.DOTALL | re.MULTILINE
    PREFILTER = IBAN_PREFILTER

    def validate_result(self, pattern_text: str) -> bool:
        return iban_ok(pattern_text)


class SsnInContextRecognizer(ProjectRecognizer):
    """SSN-shaped numbers Presidio rejects as never issued (078-05-1120, 123-45-6789) are
    still what someone typed as theirs: next to the words that say so, they go too."""

    ENTITY = "US_SSN"
    PATTERNS = {"ssn_shape": (SSN_REGEX, 0.05)}
    CONTEXT = ["ssn", "social", "security", "tax"]
    PREFILTER = SSN_PREFILTER


class WrittenOutEmailRecognizer(ProjectRecognizer):
    """E-mail addresses Presidio's recognizer passes over: written out to dodge scrapers
    (`jane dot doe at gmail dot com`), or on a domain without a public suffix."""

    ENTITY = "EMAIL_ADDRESS"
    PATTERNS = {"obfuscated_email": (OBFUSCATED_EMAIL_REGEX, 0.6),
                "loose_email": (LOOSE_EMAIL_REGEX, 0.6)}
    PREFILTER = r"(?i)@|\bat\b|\[at\]|\(at\)|\{at\}"


class InternationalPhoneRecognizer(ProjectRecognizer):
    """An international number as written, valid or not."""

    ENTITY = "PHONE_NUMBER"
    PATTERNS = {"international_phone": (INTERNATIONAL_PHONE_REGEX, 0.5)}
    PREFILTER = _PHONE_DIGITS


class NorthAmericanPhoneShapeRecognizer(ProjectRecognizer):
    """North American numbers `phonenumbers` rejects, grouped as phones are; ten bare digits
    only next to the words that say so."""

    ENTITY = "PHONE_NUMBER"
    PATTERNS = {"nanp_grouped": (NANP_PHONE_REGEX, 0.4),
                "bare_ten_digits": (BARE_PHONE_REGEX, 0.05),
                "spoken_ten_digits": (SPOKEN_PHONE_REGEX, 0.5)}
    CONTEXT = PHONE_CONTEXT
    PREFILTER = _PHONE_DIGITS


class CardNumberRecognizer(ProjectRecognizer):
    """Card numbers of 12-19 digits that Presidio's pattern misses (Mastercard's 2-series,
    19-digit Visa, 12-digit Maestro), kept only with a valid Luhn checksum and issuer."""

    ENTITY = "CREDIT_CARD"
    PATTERNS = {"card_12_19_digits": (CARD_NUMBER_REGEX, 0.3)}
    CONTEXT = ["credit", "card", "visa", "mastercard", "cc", "amex", "discover", "jcb",
               "diners", "maestro", "debit"]
    PREFILTER = _DIGITS_12

    def validate_result(self, pattern_text: str) -> bool:
        digits = re.sub(r"\D", "", pattern_text)
        return 12 <= len(digits) <= 19 and luhn_ok(digits) and issuer_known(digits)


class FunctionRecognizer(ProjectRecognizer):
    """A recognizer whose spans are a plain function of the text (`find`): a pattern recognizer
    (with an unused deny list), so the analyzer runs it like a regex, before and without any
    NLP."""

    def __init__(self, supported_language: str = "en", **kwargs: Any) -> None:
        PatternRecognizer.__init__(self, supported_entity=self.ENTITY,
                                   supported_language=supported_language,
                                   name=type(self).__name__, deny_list=["-"], **kwargs)

    @abstractmethod
    def find(self, text: str) -> list[tuple[int, int, float]]:
        """(start, end, score) of each span in `text`."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                regex_flags: int | None = None) -> list[RecognizerResult]:
        name = str(self.name)  # type: ignore[has-type]
        return [RecognizerResult(self.ENTITY, s, e, score,
                                 analysis_explanation=AnalysisExplanation(
                                     recognizer=name, original_score=score),
                                 recognition_metadata={
                                     RecognizerResult.RECOGNIZER_NAME_KEY: name,
                                     RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                for s, e, score in self.find(text)]


class NameGazetteerRecognizer(FunctionRecognizer):
    """Person names as people type them (`pipeline.transforms.pii.names`). The name lists load
    with the recognizer, not on the first text."""

    ENTITY = "PERSON"
    PREFILTER = r"[^\W\d_]"  # names are looked for in every text with a letter

    def __init__(self, supported_language: str = "en", **kwargs: Any) -> None:
        gazetteer()
        plain_words()
        super().__init__(supported_language, **kwargs)

    def find(self, text: str) -> list[tuple[int, int, float]]:
        return name_spans(text)


class KeyedValueRecognizer(FunctionRecognizer):
    """The value of a key that says what it holds (`pipeline.transforms.pii.keyed`); its
    prefilter is the entity's keys."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.PREFILTER = key_hint(cls.ENTITY)

    def find(self, text: str) -> list[tuple[int, int, float]]:
        return keyed_spans(self.ENTITY, text)


class KeyedPersonRecognizer(KeyedValueRecognizer):
    ENTITY = "PERSON"


class KeyedEmailAddressRecognizer(KeyedValueRecognizer):
    ENTITY = "EMAIL_ADDRESS"


class KeyedPhoneNumberRecognizer(KeyedValueRecognizer):
    ENTITY = "PHONE_NUMBER"


class KeyedUsStreetAddressRecognizer(KeyedValueRecognizer):
    ENTITY = "US_STREET_ADDRESS"


class NameInUrlRecognizer(FunctionRecognizer):
    """A person's name written into a link: a profile, booking or share URL's path segment or
    query value (`/u/karen-miller/`, `calendly.com/maria.garcia`), which the gazetteer does
    not read as words (`pipeline.transforms.pii.names.url_name_spans`)."""

    ENTITY = "PERSON"
    PREFILTER = URL_NAME_PREFILTER

    def __init__(self, supported_language: str = "en", **kwargs: Any) -> None:
        gazetteer()
        plain_words()
        super().__init__(supported_language, **kwargs)

    def find(self, text: str) -> list[tuple[int, int, float]]:
        return url_name_spans(text)


def _concrete(cls: type[ProjectRecognizer]) -> list[type[ProjectRecognizer]]:
    subs = cls.__subclasses__()
    return [c for sub in subs for c in ([sub] if "ENTITY" in vars(sub) else []) + _concrete(sub)]


# This module's recognizers (every class that declares its entity), by the name the registry
# lists them under: a new one is a class here and a line in the registry file.
PROJECT_RECOGNIZERS: dict[str, type[ProjectRecognizer]] = {
    cls.__name__: cls for cls in _concrete(ProjectRecognizer)}
