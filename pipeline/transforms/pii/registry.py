"""The recognizer registry: which recognizers the PII stages run, read from a YAML file named in
config (`pii.recognizers`; `default` is `recognizers.yaml` beside this module), in the manner of
Presidio's `conf/default_recognizers.yaml` and `RecognizerRegistryProvider`.

Each entry names a recognizer by class: one of Presidio's predefined recognizers, one of this
project's (`pipeline.transforms.pii.recognizers`, which carry their own patterns, context words
and prefilter), or the NLP engine's named-entity recognizer. The analyzer is built from the
registry alone; adding a recognizer is one class and one line of YAML. Presidio's own provider
is not used to load it: it would pass the `prefilter` key to constructors and reset every
pattern recognizer's regex flags to the file's (ours are case-sensitive where case matters).

Every recognizer of the analyzer carries its prefilter as `PREFILTER` (this project's in their
class; Presidio's are given theirs here, from the file). `FastAnalyzer` uses them per entity, as
the alternation of its recognizers' (`entity_prefilters`: an entity with a recognizer that has
none runs on every text).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator

from pipeline.config import PiiConfig
from pipeline.config.files import load_model
from pipeline.core.errors import ConfigError
from pipeline.core.model import Model

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngine

DEFAULT = "default"
NLP = "nlp"

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


class RecognizerEntry(Model):
    """One line of the registry file."""

    name: str
    source: Literal["presidio", "project", "nlp"]
    prefilter: str | None = None
    enabled: bool = True

    @field_validator("prefilter")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"prefilter is not a valid regex ({exc})") from None
        return value


class RegistryFile(Model):
    recognizers: list[RecognizerEntry]

    @field_validator("recognizers")
    @classmethod
    def _unique(cls, entries: list[RecognizerEntry]) -> list[RecognizerEntry]:
        names = [e.name for e in entries]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"recognizers listed twice: {', '.join(twice)}")
        return entries


def registry_path(cfg: PiiConfig) -> Path:
    """The registry file config names (`default`: the one shipped with the project)."""
    if str(cfg.recognizers) == DEFAULT:
        return Path(str(resources.files("pipeline.transforms.pii") / "recognizers.yaml"))
    return Path(cfg.recognizers)


def read_registry(cfg: PiiConfig) -> list[RecognizerEntry]:
    """The enabled entries of the registry config names; a bad file fails here, named."""
    return [e for e in load_model(RegistryFile, registry_path(cfg)).recognizers if e.enabled]


@dataclass(frozen=True)
class EntityPlan:
    """How `FastAnalyzer` finds the wanted entities: `prefiltered` (entity -> the alternation
    of its recognizers' prefilters, for entities whose every NLP-free recognizer has one),
    `ner` (found by the NLP recognizer, which runs where `needs_ner` says) and `unfiltered`
    (looked for in every text)."""

    prefiltered: dict[str, str]
    ner: list[str]
    unfiltered: list[str]


def entity_plan(analyzer: AnalyzerEngine, entities: Iterable[str], language: str,
                nlp_free: Callable[[Any], bool]) -> EntityPlan:
    wanted = set(entities)
    recognizers = analyzer.registry.get_recognizers(language=language, all_fields=True)
    ner = {e for r in recognizers if not nlp_free(r) for e in r.supported_entities} & wanted
    prefiltered: dict[str, str] = {}
    unfiltered = []
    for entity in sorted(wanted):
        plain = [getattr(r, "PREFILTER", None) for r in recognizers
                 if entity in r.supported_entities and nlp_free(r)]
        if plain and all(plain):
            prefiltered[entity] = "|".join(_scoped(p) for p in plain if p)
        elif entity not in ner:
            unfiltered.append(entity)
    return EntityPlan(prefiltered, sorted(ner), unfiltered)


def _scoped(regex: str) -> str:
    """`regex` as a group whose flags stay inside it, so alternations of prefilters keep
    each one's meaning (Python only allows inline flags at the start of a whole pattern)."""
    m = re.match(r"\(\?([aiLmsux]+)\)", regex)
    return f"(?{m.group(1)}:{regex[m.end():]})" if m else f"(?:{regex})"


def nlp_engine(cfg: PiiConfig) -> NlpEngine:
    """Presidio's spaCy engine with the model config names (an installed package or a path:
    never downloaded at run time), keeping Presidio's entity mapping."""
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    return NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": cfg.nlp_engine,
        "models": [{"lang_code": cfg.language, "model_name": cfg.spacy_model}],
        "ner_model_configuration": NER_CONFIGURATION,
    }).create_engine()


def presidio_default_analyzer(cfg: PiiConfig) -> AnalyzerEngine:
    """Plain Presidio, as the benchmarks compare against: its own default recognizers, with
    the same model, threshold and phone regions as ours."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    presidio_log = logging.getLogger("presidio-analyzer")
    level = presidio_log.level
    presidio_log.setLevel(logging.ERROR)  # its warnings about other languages' recognizers
    try:
        analyzer = AnalyzerEngine(nlp_engine=nlp_engine(cfg), supported_languages=[cfg.language],
                                  default_score_threshold=cfg.score_threshold)
    finally:
        presidio_log.setLevel(level)
    analyzer.registry.remove_recognizer("PhoneRecognizer")
    analyzer.registry.add_recognizer(PhoneRecognizer(supported_language=cfg.language,
                                                     supported_regions=cfg.phone_regions))
    return analyzer


def build_analyzer(cfg: PiiConfig) -> AnalyzerEngine:
    """Presidio's analyzer from config, its recognizers from the registry file, with an
    explicit spaCy model (never downloaded at run time)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

    engine = nlp_engine(cfg)
    registry = RecognizerRegistry(supported_languages=[cfg.language])
    where = registry_path(cfg)
    for entry in read_registry(cfg):
        if entry.source == NLP:
            registry.add_nlp_recognizer(nlp_engine=engine)
            continue
        recognizer = _recognizer(entry, cfg, where)
        if entry.source == "presidio":
            recognizer.PREFILTER = entry.prefilter
        registry.add_recognizer(recognizer)
    # Presidio warns about every recognizer of another language on each start; not news.
    presidio_log = logging.getLogger("presidio-analyzer")
    level = presidio_log.level
    presidio_log.setLevel(logging.ERROR)
    try:
        analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine,
                                  supported_languages=[cfg.language],
                                  default_score_threshold=cfg.score_threshold)
    finally:
        presidio_log.setLevel(level)
    return analyzer


def _recognizer(entry: RecognizerEntry, cfg: PiiConfig, where: Path) -> Any:
    import inspect

    from presidio_analyzer import predefined_recognizers

    from pipeline.transforms.pii.recognizers import PROJECT_RECOGNIZERS

    if entry.source == "project":
        cls = PROJECT_RECOGNIZERS.get(entry.name)
        if entry.prefilter is not None:
            raise ConfigError(f"{where}: {entry.name}: a project recognizer carries its own "
                              "prefilter (its PREFILTER); remove `prefilter` here")
    else:
        cls = getattr(predefined_recognizers, entry.name, None)
    if cls is None:
        known = (sorted(PROJECT_RECOGNIZERS) if entry.source == "project"
                 else sorted(predefined_recognizers.__all__))
        raise ConfigError(f"{where}: no {entry.source} recognizer named {entry.name!r}; "
                          f"known: {', '.join(known)}")
    kwargs: dict[str, Any] = {"supported_language": cfg.language}
    if "supported_regions" in inspect.signature(cls.__init__).parameters:
        kwargs["supported_regions"] = cfg.phone_regions
    return cls(**kwargs)
