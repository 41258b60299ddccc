"""PII handling: schema-tagged columns by rule, free text scanned with Presidio.

Direct identifiers (`handling: drop`) are removed. Free-text columns (`handling: scan`) go
through Presidio's recognizers (an explicit spaCy model, installed with the project, never
downloaded at run time, plus our own recognizers) via `detect.FastAnalyzer`, and
every detected span is replaced by a keyed typed token such as `<EMAIL_ADDRESS:qkzvmtrahpwe>`.
Identical texts are analysed once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.config import PiiConfig, RecordSchema
from pipeline.core.details import ColumnFinding, ColumnScan, PiiDetails
from pipeline.core.records import StageStats
from pipeline.transforms.pii.columns import apply_policy, columns_to_check, scan_columns
from pipeline.transforms.pii.detect import FastAnalyzer, PiiSpan, WorkerPool, build_analyzer
from pipeline.transforms.pii.keyed import keyed_value_recognizers
from pipeline.transforms.pii.names import name_recognizer
from pipeline.transforms.pii.tokens import replace_spans, resolve_overlaps

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


@dataclass(frozen=True)
class ScrubResult:
    table: pl.DataFrame
    stats: StageStats
    findings: list[ColumnFinding]  # the untagged columns found to hold PII


def street_address_recognizer(language: str) -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    # Case-sensitive (Presidio's default flags ignore case): street names are capitalized,
    # and `5 stars on the way` is not an address.
    return PatternRecognizer(
        supported_entity="US_STREET_ADDRESS", supported_language=language,
        patterns=[Pattern(n, rx, 0.5) for n, rx in STREET_ADDRESS_REGEXES.items()],
        context=["ship", "address", "street", "deliver", "live", "adres", "adresse"],
        global_regex_flags=re.DOTALL | re.MULTILINE)


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


def account_number_recognizers(language: str) -> list[Any]:
    from presidio_analyzer import Pattern, PatternRecognizer

    class GroupedIbanRecognizer(PatternRecognizer):  # not "IbanRecognizer": Presidio finds
        # its predefined recognizers by class name among all subclasses
        def validate_result(self, pattern_text: str) -> bool:
            return iban_ok(pattern_text)

    return [GroupedIbanRecognizer(supported_entity="IBAN_CODE", supported_language=language,
                           name="CaseSensitiveIbanRecognizer",
                           patterns=[Pattern("iban_grouped", IBAN_REGEX, 0.5)],
                           global_regex_flags=re.DOTALL | re.MULTILINE),
            PatternRecognizer(supported_entity="US_SSN", supported_language=language,
                              name="SsnInContextRecognizer",
                              patterns=[Pattern("ssn_shape", SSN_REGEX, 0.05)],
                              context=["ssn", "social", "security", "tax"])]


def written_out_recognizers(language: str) -> list[Any]:
    """E-mail addresses and phone numbers in forms Presidio's recognizers do not read."""
    from presidio_analyzer import Pattern, PatternRecognizer

    return [PatternRecognizer(
                supported_entity="EMAIL_ADDRESS", supported_language=language,
                name="WrittenOutEmailRecognizer",
                patterns=[Pattern("obfuscated_email", OBFUSCATED_EMAIL_REGEX, 0.6),
                          Pattern("loose_email", LOOSE_EMAIL_REGEX, 0.6)]),
            PatternRecognizer(
                supported_entity="PHONE_NUMBER", supported_language=language,
                name="InternationalPhoneRecognizer",
                patterns=[Pattern("international_phone", INTERNATIONAL_PHONE_REGEX, 0.5)]),
            PatternRecognizer(
                supported_entity="PHONE_NUMBER", supported_language=language,
                name="NorthAmericanPhoneShapeRecognizer",
                patterns=[Pattern("nanp_grouped", NANP_PHONE_REGEX, 0.4),
                          Pattern("bare_ten_digits", BARE_PHONE_REGEX, 0.05),
                          Pattern("spoken_ten_digits", SPOKEN_PHONE_REGEX, 0.5)],
                context=PHONE_CONTEXT)]


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


def card_number_recognizer(language: str) -> Any:
    """Card numbers of 12-19 digits that Presidio's pattern misses (Mastercard's 2-series,
    19-digit Visa, 12-digit Maestro), kept only with a valid Luhn checksum and issuer."""
    from presidio_analyzer import Pattern, PatternRecognizer

    class CardNumberRecognizer(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            digits = re.sub(r"\D", "", pattern_text)
            return 12 <= len(digits) <= 19 and luhn_ok(digits) and issuer_known(digits)

    return CardNumberRecognizer(
        supported_entity="CREDIT_CARD", supported_language=language,
        name="CardNumberRecognizer",
        patterns=[Pattern("card_12_19_digits", CARD_NUMBER_REGEX, 0.3)],
        context=["credit", "card", "visa", "mastercard", "cc", "amex", "discover", "jcb",
                 "diners", "maestro", "debit"])


def build_pii_analyzer(cfg: PiiConfig) -> Any:
    """Presidio's analyzer from config with this project's extra recognizers."""
    return build_analyzer(cfg, [street_address_recognizer(cfg.language),
                                card_number_recognizer(cfg.language),
                                name_recognizer(cfg.language),
                                *keyed_value_recognizers(cfg.language),
                                *written_out_recognizers(cfg.language),
                                *account_number_recognizers(cfg.language)])


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

    def __init__(self, cfg: PiiConfig, token_key: bytes, *, with_workers: bool = False) -> None:
        self.analyzer = fast_analyzer(cfg, with_workers=with_workers)
        self._key = token_key

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
        done = self.scrub_with_spans(texts)
        return [t for t, _ in done], [Counter(s.entity_type for s in spans) for _, spans in done]


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
        pii_found_by_column=found_by_column))
    return ScrubResult(table, stats.check_balanced(), findings)
