"""Fast PII detection that keeps Presidio as the framework.

Presidio runs every recognizer and the full spaCy pipeline on every text, one text at a time in
Python; that is why it manages a few hundred short texts/s. This analyzer gets Presidio's answers
from Presidio's own registry, recognizers and context enhancer while doing most texts no work:

1. Identical texts are analysed once (callers pass unique texts).
2. Each recognizer carries a prefilter (`pipeline.transforms.pii.registry`): a Rust regex, run
   over the whole column by Polars, that every match of the recognizer satisfies (an `@` for
   e-mail, 7+ digits for a phone). An entity's recognizers run only on the texts one of their
   prefilters flags.
3. Pattern recognizers (regex + checksum, phonenumbers) run before any NLP; a text where they
   find nothing and NER is not needed is done without being tokenized.
4. spaCy runs only the `ner` component (measured: the same entities as the full pipeline on
   2,999 of 3,000 event texts, ~2x faster) and only on texts with a capitalized word that is
   neither a stop word nor an acronym, the only place this model finds PERSON or LOCATION.
5. Lemmas are the lowercased tokens, so Presidio's context words still raise scores.
6. Large inputs are shared with `n_process - 1` worker processes (`WorkerPool`).

Entities with a recognizer that has no prefilter run on every text. Only public Presidio and
spaCy calls are made (`presidio_api`), so a Presidio upgrade that keeps its API keeps this.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import re
import weakref
from collections.abc import Callable
from multiprocessing.pool import AsyncResult, Pool
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl

from pipeline.config import PiiConfig
from pipeline.transforms.pii import presidio_api
from pipeline.transforms.pii.decode import decode

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, RecognizerResult


os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
_CAPITALIZED = r"\b\p{Lu}[\p{L}'’.-]*"  # any script: `Δημήτρης`, `İlker`
_SURFACE_LEMMA = "pp_surface_lemma"
_MIN_TEXTS_PER_CHUNK = 250  # smaller chunks cost more in hand-over than they save

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
        from pipeline.transforms.pii.registry import entity_plan

        _register_surface_lemma()
        self.analyzer = analyzer
        self.cfg = cfg
        engine: Any = analyzer.nlp_engine
        self._engine = engine
        nlp = engine.nlp[cfg.language]
        if _SURFACE_LEMMA not in nlp.pipe_names:
            nlp.add_pipe(_SURFACE_LEMMA, last=True)
        self._ner_only = [p for p in nlp.pipe_names if p not in ("ner", _SURFACE_LEMMA)]
        plan = entity_plan(analyzer, cfg.entities, cfg.language, _needs_no_nlp)
        self.prefiltered, self.ner_entities = plan.prefiltered, plan.ner
        self.unfiltered = plan.unfiltered
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
        NLP pipeline on texts where no recognizer found anything and NER is not needed.

        Three passes: the NLP-free recognizers on every text; NLP artifacts, in batches, for
        the texts NER must read (tokens, lemmas and entities) and for those where something
        was found (tokens and lemmas, for context words); then the NLP recognizer, context
        enhancement and the threshold."""
        entities = [frozenset(w | (set(self.ner_entities) if n else set()))
                    for w, n in zip(wanted, ner, strict=True)]
        raw = [self._plain(text, e) if e else [] for text, e in zip(texts, entities, strict=True)]
        ner_idx = [i for i, flag in enumerate(ner) if flag and entities[i]]
        found_idx = [i for i, flag in enumerate(ner) if not flag and raw[i]]
        lang, size = self.cfg.language, self.cfg.batch_size
        artifacts = dict(zip(ner_idx, presidio_api.artifacts(
            self._engine, [texts[i] for i in ner_idx], lang, batch_size=size,
            disable=self._ner_only), strict=True))
        artifacts.update(zip(found_idx, presidio_api.artifacts(
            self._engine, [texts[i] for i in found_idx], lang, batch_size=size,
            enable=[_SURFACE_LEMMA]), strict=True))
        return [self._finish(text, entities[i], raw[i], artifacts[i]) if i in artifacts
                else [] for i, text in enumerate(texts)]

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

    def _plain(self, text: str, entities: frozenset[str]) -> list[RecognizerResult]:
        """The NLP-free recognizers' raw results (each skipped where the confident spans
        already found leave nothing it could match)."""
        _, plain, _ = self._split_recognizers(entities)
        wanted = sorted(entities)
        raw: list[RecognizerResult] = []
        for rec in plain:
            if raw and not self._still_possible(rec, text, raw):
                continue
            raw += _tagged(rec, rec.analyze(text, wanted, None))
        return raw

    def _finish(self, text: str, entities: frozenset[str], raw: list[RecognizerResult],
                artifacts: Any) -> list[PiiSpan]:
        """The rest of `AnalyzerEngine.analyze`: the NLP recognizer, context words, threshold,
        duplicates."""
        from presidio_analyzer import EntityRecognizer

        recs, _, nlp_based = self._split_recognizers(entities)
        wanted = sorted(entities)
        raw = raw + [r for rec in nlp_based
                     for r in _tagged(rec, rec.analyze(text, wanted, artifacts))]
        results = presidio_api.enhance_using_context(self.analyzer, text, raw, artifacts, recs)
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
