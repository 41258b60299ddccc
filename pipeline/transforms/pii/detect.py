"""Fast PII detection that keeps Presidio as the framework.

Presidio runs every recognizer and the full spaCy pipeline on every text, one text at a time in
Python; that is why it manages a few hundred short texts/s. This analyzer gets Presidio's answers
from Presidio's own registry, recognizers and context enhancer while doing most texts no work:

1. Identical texts are analysed once (callers pass unique texts).
2. Each pattern entity has a prefilter: a Rust regex, run over the whole column by Polars, that
   every match of Presidio's recognizer must satisfy (an `@` for e-mail, 7+ digits for a phone).
   A recognizer runs only on the texts its prefilter flags.
3. Pattern recognizers (regex + checksum, phonenumbers) run before any NLP; a text where they
   find nothing and NER is not needed is done without being tokenized.
4. spaCy runs only the `ner` component (measured: the same entities as the full pipeline on
   2,999 of 3,000 event texts, ~2x faster) and only on texts with a capitalized word that is
   neither a stop word nor an acronym, the only place this model finds PERSON or LOCATION.
5. Lemmas are the lowercased tokens, so Presidio's context words still raise scores.
6. Large inputs are shared with `n_process - 1` worker processes (`WorkerPool`).

Entities without a prefilter (e.g. a recognizer a user added from YAML) run on every text.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import re
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.pool import AsyncResult, Pool
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl

from pipeline.config import PiiConfig
from pipeline.transforms.pii.decode import decode
from pipeline.transforms.pii.keyed import key_hint

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, RecognizerResult

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

# Necessary conditions for a match of each of Presidio's recognizers (which run with
# re.IGNORECASE). Wider is safe (more texts checked); narrower would lose recall.
PREFILTERS: dict[str, str] = {
    "EMAIL_ADDRESS": r"(?i)@|\bat\b|\[at\]|\(at\)|\{at\}|" + key_hint("EMAIL_ADDRESS"),
    "IP_ADDRESS": r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|:[0-9A-Fa-f]{0,4}:",
    "CREDIT_CARD": r"\d(?:[- ]?\d){11}",
    "US_SSN": r"\d{3}\D?\d{2}\D?\d{4}",
    "IBAN_CODE": r"(?i)\b[a-z]{2}[ -]?\d{2}(?:[ -]?[a-z0-9]){9}",
    "PHONE_NUMBER": r"(?:\d[^\d\n]{0,3}){6,}\d|" + key_hint("PHONE_NUMBER"),
    "US_STREET_ADDRESS": r"(?i)\d{1,6}[a-z]{0,2}[\s+]+[a-z0-9]|[a-z.]\s+\d|#\s*\d|"
                         + key_hint("US_STREET_ADDRESS"),
    # Names are looked for in every text with a letter (the gazetteer in `names` is cheap);
    # the NER model still runs only where `needs_ner` says.
    "PERSON": r"[^\W\d_]",
    "URL": r"(?i)[a-z0-9]\.[a-z]{2,}",
}
# Entities that come from the spaCy NER model (Presidio's SpacyRecognizer).
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
_CAPITALIZED = r"\b\p{Lu}[\p{L}'’.-]*"  # any script: `Δημήτρης`, `İlker`
_SURFACE_LEMMA = "pp_surface_lemma"
_MIN_TEXTS_PER_CHUNK = 250  # smaller chunks cost more in hand-over than they save

# Presidio's own NER mapping (conf/default.yaml); a custom NLP config must repeat it or it loses
# labels_to_ignore and floods results with ORGANIZATION/CARDINAL hits.
NER_CONFIGURATION = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION",
        "LOC": "LOCATION", "GPE": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION",
        "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME"},
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": ["ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY",
                         "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART"],
}


def _register_surface_lemma() -> None:
    from spacy.language import Language

    if Language.has_factory(_SURFACE_LEMMA):
        return

    @Language.component(_SURFACE_LEMMA)
    def surface_lemma(doc: Any) -> Any:
        """Lowercased token text as lemma: enough for Presidio's context words."""
        for token in doc:
            token.lemma_ = token.lower_
        return doc


def build_analyzer(cfg: PiiConfig, extra_recognizers: Sequence[Any] = ()) -> AnalyzerEngine:
    """A Presidio AnalyzerEngine with an explicit spaCy model (never downloaded at run time)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp_engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": cfg.nlp_engine,
        "models": [{"lang_code": cfg.language, "model_name": cfg.spacy_model}],
        "ner_model_configuration": NER_CONFIGURATION,
    }).create_engine()
    # Presidio warns about every recognizer of another language on each start; not news.
    presidio_log = logging.getLogger("presidio-analyzer")
    level = presidio_log.level
    presidio_log.setLevel(logging.ERROR)
    try:
        analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[cfg.language],
                                  default_score_threshold=cfg.score_threshold)
    finally:
        presidio_log.setLevel(level)
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    analyzer.registry.remove_recognizer("PhoneRecognizer")
    analyzer.registry.add_recognizer(PhoneRecognizer(supported_language=cfg.language,
                                                     supported_regions=cfg.phone_regions))
    for recognizer in extra_recognizers:
        analyzer.registry.add_recognizer(recognizer)
    return analyzer


def needs_ner(texts: pl.Series) -> pl.Series:
    """True where a text holds a capitalized word that is neither a stop word ("Hi", "The", "I")
    nor an acronym ("SSN", "IBAN"): the only words this model tags as PERSON or LOCATION."""
    from spacy.lang.en.stop_words import STOP_WORDS

    stop = sorted({w.lower() for w in STOP_WORDS} | {"hi", "hello", "hey", "thanks", "dear"})
    words = texts.str.extract_all(_CAPITALIZED)
    word = pl.element().str.strip_chars(".'’-")
    return words.list.eval(
        word.str.to_lowercase().is_in(stop).not_() & word.str.contains(r"^\p{Lu}{2,}$").not_()
    ).list.any().fill_null(False)


class PiiSpan(NamedTuple):
    """One detected entity: character offsets into its text, and Presidio's final score."""

    entity_type: str
    start: int
    end: int
    score: float


def _needs_no_nlp(recognizer: Any) -> bool:
    """Recognizers whose `analyze` ignores NLP artifacts (regexes, phonenumbers)."""
    from presidio_analyzer import PatternRecognizer
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    return isinstance(recognizer, PatternRecognizer | PhoneRecognizer)


def _is_phone(recognizer: Any) -> bool:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    return isinstance(recognizer, PhoneRecognizer)


def _run_order(recognizer: Any) -> tuple[bool, str, str]:
    return _is_phone(recognizer), str(recognizer.name), str(recognizer.id)


_WORKER: FastAnalyzer | None = None  # the analyzer of a worker process


def _start_worker(factory: Callable[[PiiConfig], FastAnalyzer], cfg: PiiConfig) -> None:
    global _WORKER
    _WORKER = factory(cfg)


def _worker_ready() -> bool:
    return _WORKER is not None


def _analyze_in_worker(args: tuple[list[str], list[set[str]], list[bool]]) -> list[list[PiiSpan]]:
    if _WORKER is None:  # the pool only submits once the worker reported ready
        raise RuntimeError("PII worker used before its analyzer was built")
    return _WORKER.analyze_planned(*args)


class WorkerPool:
    """Worker processes that each build their own analyzer with `factory(cfg)`.

    Spawned, not forked: forking a process that runs threads (an Airflow task, a test runner)
    can deadlock the child. Each worker loads its own model, so start the pool before loading
    this process's model and the two overlap. `factory` must be a module-level function.
    """

    def __init__(self, factory: Callable[[PiiConfig], FastAnalyzer], cfg: PiiConfig,
                 size: int) -> None:
        self.size = size
        self._pool: Pool = mp.get_context("spawn").Pool(size, initializer=_start_worker,
                                                        initargs=(factory, cfg))
        self._ready = self._pool.apply_async(_worker_ready)
        weakref.finalize(self, self._pool.terminate)

    def ready(self) -> bool:
        """Whether a worker has finished loading."""
        return self._ready.ready()

    def wait_ready(self) -> None:
        self._ready.get()

    def submit(self, chunk: tuple[list[str], list[set[str]], list[bool]]
               ) -> AsyncResult[list[list[PiiSpan]]]:
        return self._pool.apply_async(_analyze_in_worker, (chunk,))

    def close(self) -> None:
        self._pool.terminate()


class FastAnalyzer:
    """Presidio's recognizers, run only where they can match (see module docstring)."""

    def __init__(self, analyzer: AnalyzerEngine, cfg: PiiConfig,
                 workers: WorkerPool | None = None) -> None:
        """With `workers`, large inputs are shared with those processes (see `analyze`)."""
        _register_surface_lemma()
        self.analyzer = analyzer
        self.cfg = cfg
        engine: Any = analyzer.nlp_engine
        self._engine = engine
        self._nlp = engine.nlp[cfg.language]
        if _SURFACE_LEMMA not in self._nlp.pipe_names:
            self._nlp.add_pipe(_SURFACE_LEMMA, last=True)
        self._ner_only = [p for p in self._nlp.pipe_names if p not in ("ner", _SURFACE_LEMMA)]
        self._surface = self._nlp.get_pipe(_SURFACE_LEMMA)
        entities = set(cfg.entities)
        self.prefiltered = {e: rx for e, rx in PREFILTERS.items() if e in entities}
        self.ner_entities = sorted(entities & NER_ENTITIES)
        self.unfiltered = sorted(entities - NER_ENTITIES - set(self.prefiltered))
        self._recognizers: dict[frozenset[str], tuple[list[Any], list[Any], list[Any]]] = {}
        self.workers = workers

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def __enter__(self) -> FastAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def plan(self, texts: list[str]) -> tuple[list[set[str]], list[bool]]:
        """Per text: the pattern entities to look for, and whether NER must run."""
        s = pl.Series(texts, dtype=pl.String)
        wanted = [set(self.unfiltered) for _ in texts]
        for entity, regex in self.prefiltered.items():
            for i, hit in enumerate(s.str.contains(regex).to_list()):
                if hit:
                    wanted[i].add(entity)
        ner = needs_ner(s).to_list() if self.ner_entities else [False] * len(texts)
        return wanted, ner

    def analyze(self, texts: list[str]) -> list[list[PiiSpan]]:
        """Spans for each text, as `AnalyzerEngine.analyze` finds them for the entities in the
        text decoded (`decode`: URL-encoding, HTML entities), as offsets into the text as given.

        With worker processes and enough texts, this process works through chunks and hands one
        to each worker that is ready and idle, so workers still loading never hold the run up.
        """
        decoded = [decode(t) for t in texts]
        found = self._analyze_decoded([d.text if d else t for d, t in zip(decoded, texts,
                                                                          strict=True)])
        return [spans if d is None else [s._replace(start=a, end=b) for s in spans
                                         for a, b in [d.original(s.start, s.end)]]
                for d, spans in zip(decoded, found, strict=True)]

    def _analyze_decoded(self, texts: list[str]) -> list[list[PiiSpan]]:
        wanted, ner = self.plan(texts)
        pool = self.workers
        if pool is None or len(texts) < _MIN_TEXTS_PER_CHUNK * 2:
            return self.analyze_planned(texts, wanted, ner)
        n_chunks = min((pool.size + 1) * 8, len(texts) // _MIN_TEXTS_PER_CHUNK)
        bounds = [len(texts) * i // n_chunks for i in range(n_chunks + 1)]
        chunks = [(texts[a:b], wanted[a:b], ner[a:b]) for a, b in itertools.pairwise(bounds)]
        parts: dict[int, list[list[PiiSpan]]] = {}
        running: dict[int, AsyncResult[list[list[PiiSpan]]]] = {}
        for i, chunk in enumerate(chunks):
            for j in [j for j, r in running.items() if r.ready()]:
                parts[j] = running.pop(j).get()
            if pool.ready() and len(running) < pool.size:
                running[i] = pool.submit(chunk)
            else:
                parts[i] = self.analyze_planned(*chunk)
        for j, result in running.items():
            parts[j] = result.get()
        return [spans for i in range(n_chunks) for spans in parts[i]]

    def analyze_planned(self, texts: list[str], wanted: list[set[str]],
                        ner: list[bool]) -> list[list[PiiSpan]]:
        """The per-text work in this process: what `AnalyzerEngine.analyze` does, minus the
        NLP pipeline on texts where no recognizer found anything and NER is not needed."""
        ner_idx = [i for i, flag in enumerate(ner) if flag]
        docs: dict[int, Any] = dict(zip(ner_idx, self._nlp.pipe(
            (texts[i] for i in ner_idx), batch_size=self.cfg.batch_size,
            disable=self._ner_only), strict=True))
        out: list[list[PiiSpan]] = []
        for i, text in enumerate(texts):
            entities = frozenset(wanted[i] | (set(self.ner_entities) if ner[i] else set()))
            out.append(self._analyze_one(text, entities, docs.get(i)) if entities else [])
        return out

    def _split_recognizers(self, entities: frozenset[str]) -> tuple[list[Any], list[Any],
                                                                     list[Any]]:
        """(all, NLP-free, NLP-using) recognizers for a set of entities, cached."""
        if entities not in self._recognizers:
            recs = self.analyzer.registry.get_recognizers(
                language=self.cfg.language, entities=sorted(entities))
            for rec in recs:
                if not rec.is_loaded:
                    rec.load()
                    rec.is_loaded = True
            # Phones last; otherwise by name, so no process's hash seed decides the order.
            plain = sorted((r for r in recs if _needs_no_nlp(r)), key=_run_order)
            self._recognizers[entities] = (recs, plain, [r for r in recs if not _needs_no_nlp(r)])
        return self._recognizers[entities]

    def _still_possible(self, recognizer: Any, text: str, found: list[RecognizerResult]) -> bool:
        """Whether `recognizer` can still find something once the confident spans already found
        are blanked out: a phone number is not looked for inside a card or IBAN number."""
        sure = [r for r in found if r.score >= self.cfg.score_threshold]
        regexes = [self.prefiltered[e] for e in recognizer.supported_entities
                   if e in self.prefiltered]
        if not sure or len(regexes) < len(recognizer.supported_entities):
            return True
        masked = list(text)
        for r in sure:
            masked[r.start:r.end] = " " * (r.end - r.start)
        rest = "".join(masked)
        return any(re.search(rx, rest) for rx in regexes)

    def _analyze_one(self, text: str, entities: frozenset[str], doc: Any) -> list[PiiSpan]:
        from presidio_analyzer import EntityRecognizer

        recs, plain, nlp_based = self._split_recognizers(entities)
        wanted = sorted(entities)
        raw: list[RecognizerResult] = []
        for rec in plain:
            if raw and not self._still_possible(rec, text, raw):
                continue
            raw += _tagged(rec, rec.analyze(text, wanted, None))
        if not raw and doc is None:
            return []  # nothing to enhance, and no NER entity can be here
        if doc is None:
            doc = self._surface(self._nlp.make_doc(text))
        artifacts = self._engine._doc_to_nlp_artifact(doc, self.cfg.language)
        raw += [r for rec in nlp_based for r in _tagged(rec, rec.analyze(text, wanted, artifacts))]
        # The rest of AnalyzerEngine.analyze: context words, threshold, duplicates.
        results = self.analyzer._enhance_using_context(text, raw, artifacts, recs, None)
        results = [_url_trimmed(r, text) if not _phone_not_card(r, text) else _as_phone(r)
                   for r in results if r.score >= self.cfg.score_threshold]
        return [PiiSpan(r.entity_type, r.start, r.end, r.score)
                for r in EntityRecognizer.remove_duplicates(results)]


def _phone_not_card(result: RecognizerResult, text: str) -> bool:
    """A Luhn-valid `+44 ...` or `+49 ...` is an international phone number, not a card."""
    return result.entity_type == "CREDIT_CARD" and text[:result.start].rstrip().endswith("+")


_URL_PART = re.compile(r".*[/?=&:]")


def _url_trimmed(result: RecognizerResult, text: str) -> RecognizerResult:
    """An e-mail address in a URL without the URL before it: Presidio's pattern allows `/?=`
    in the local part, so `example.com/a?e=jane@x.io` would be replaced whole."""
    if result.entity_type == "EMAIL_ADDRESS":
        local = text[result.start:result.end].split("@", 1)[0]
        if (m := _URL_PART.match(local)) and m.end() < len(local):
            result.start += m.end()
    return result


def _as_phone(result: RecognizerResult) -> RecognizerResult:
    from presidio_analyzer import RecognizerResult

    return RecognizerResult("PHONE_NUMBER", result.start, result.end, result.score,
                            result.analysis_explanation, result.recognition_metadata)


def _tagged(recognizer: Any, results: list[RecognizerResult] | None) -> list[RecognizerResult]:
    """Results carrying their recognizer's id, which context enhancement groups by."""
    from presidio_analyzer import RecognizerResult

    for r in results or []:
        meta = r.recognition_metadata
        meta.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
        meta.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, recognizer.name)
    return results or []
