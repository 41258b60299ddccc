"""Recognizers are registered parts: the analyzer is built from the registry config names, each
recognizer carries its prefilter, and detection uses only public Presidio calls, checked here
against the installed Presidio's own steps."""

from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from pipeline.config import PiiConfig, load_config
from pipeline.core.errors import ConfigError
from pipeline.transforms.pii import presidio_api
from pipeline.transforms.pii.detect import FastAnalyzer, _needs_no_nlp
from pipeline.transforms.pii.recognizers import PROJECT_RECOGNIZERS
from pipeline.transforms.pii.registry import entity_plan, read_registry, registry_path
from pipeline.transforms.pii.scrub import build_pii_analyzer
from tests.conftest import ROOT
from tests.transforms.test_pii_detect import TEXTS

PINNED_PRESIDIO = "2.2.366"  # what presidio_api was checked against (pyproject pins it)


@pytest.fixture(scope="module")
def cfg() -> PiiConfig:
    return load_config(ROOT / "config" / "pipeline.yaml").pii


@pytest.fixture(scope="module")
def analyzer(cfg: PiiConfig):  # noqa: ANN201
    return build_pii_analyzer(cfg)


def test_when_the_default_registry_is_read_then_every_project_recognizer_is_listed(
        cfg: PiiConfig) -> None:
    listed = {e.name for e in read_registry(cfg) if e.source == "project"}
    assert listed == set(PROJECT_RECOGNIZERS)


def test_when_the_analyzer_is_built_then_it_holds_exactly_the_registry(
        cfg: PiiConfig, analyzer) -> None:  # noqa: ANN001
    names = {r.name for r in analyzer.registry.recognizers}
    assert names == {e.name for e in read_registry(cfg)}
    # every recognizer that runs without NLP says which texts it can match, but the ones for
    # entities nobody configured
    for r in analyzer.registry.recognizers:
        if _needs_no_nlp(r) and set(r.supported_entities) & set(cfg.entities):
            assert getattr(r, "PREFILTER", None), r.name


def test_when_prefilters_are_combined_per_entity_then_they_flag_what_each_recognizer_needs(
        cfg: PiiConfig, analyzer) -> None:  # noqa: ANN001
    import polars as pl

    plan = entity_plan(analyzer, cfg.entities, cfg.language, _needs_no_nlp)
    assert plan.ner == ["PERSON"] and plan.unfiltered == []
    texts = pl.Series(["write to jane dot doe at gmail dot com", "phone: 555-0147",
                       "nothing here", '{"email": "x"}'])
    flags = texts.str.contains(plan.prefiltered["EMAIL_ADDRESS"]).to_list()
    assert flags == [True, False, False, True]  # written out; key hint; none; key hint


def test_when_a_registry_names_an_unknown_recognizer_then_config_says_which(
        cfg: PiiConfig, tmp_path: Path) -> None:
    bad = tmp_path / "recognizers.yaml"
    bad.write_text(yaml.safe_dump({"recognizers": [
        {"name": "EmailRecognizer", "source": "presidio", "prefilter": "@"},
        {"name": "PassportMrzRecognizer", "source": "project"}]}))
    with pytest.raises(ConfigError, match="PassportMrzRecognizer"):
        build_pii_analyzer(cfg.model_copy(update={"recognizers": str(bad)}))
    bad.write_text(yaml.safe_dump({"recognizers": [
        {"name": "EmailRecognizer", "source": "presidio", "prefilter": "(unclosed"}]}))
    with pytest.raises(ConfigError, match="prefilter"):
        read_registry(cfg.model_copy(update={"recognizers": str(bad)}))


def test_when_config_names_a_registry_file_then_it_resolves_beside_the_config(
        config_path: Path) -> None:
    doc = yaml.safe_load(config_path.read_text())
    doc["pii"]["recognizers"] = "my_recognizers.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    cfg = load_config(config_path).pii
    assert registry_path(cfg) == config_path.parent / "my_recognizers.yaml"


def test_when_only_some_recognizers_are_listed_then_only_they_run(
        cfg: PiiConfig, tmp_path: Path) -> None:
    only_email = tmp_path / "recognizers.yaml"
    only_email.write_text(yaml.safe_dump({"recognizers": [
        {"name": "EmailRecognizer", "source": "presidio", "prefilter": "@"}]}))
    small = cfg.model_copy(update={"recognizers": str(only_email),
                                   "entities": ("EMAIL_ADDRESS", "PHONE_NUMBER")})
    fast = FastAnalyzer(build_pii_analyzer(small), small)
    [spans] = fast.analyze(["mail jo@example.org or call +44 20 7946 0958"])
    assert [s.entity_type for s in spans] == ["EMAIL_ADDRESS"]


def test_when_presidio_is_the_pinned_version_then_the_public_calls_equal_its_private_steps(
        cfg: PiiConfig, analyzer) -> None:  # noqa: ANN001
    """`presidio_api` repeats two private steps of `AnalyzerEngine.analyze` through public
    calls; on the installed Presidio both must give what the private ones give. A Presidio
    upgrade that changes them fails here, and `presidio_api` is where to look."""
    assert version("presidio-analyzer") == PINNED_PRESIDIO
    engine = analyzer.nlp_engine
    arts = presidio_api.artifacts(engine, TEXTS, cfg.language, batch_size=8)
    for text, art in zip(TEXTS, arts, strict=True):
        private = engine._doc_to_nlp_artifact(engine.nlp[cfg.language](text), cfg.language)
        assert [str(t) for t in art.tokens] == [str(t) for t in private.tokens]
        assert [(e.start_char, e.end_char, e.label_) for e in art.entities] == [
            (e.start_char, e.end_char, e.label_) for e in private.entities]
        assert art.lemmas == private.lemmas
        recognizers = analyzer.registry.get_recognizers(language=cfg.language,
                                                        entities=list(cfg.entities))
        raw = [r for rec in recognizers
               for r in _with_id(rec, rec.analyze(text, list(cfg.entities), art))]
        ours = presidio_api.enhance_using_context(analyzer, text, raw, art, recognizers)
        theirs = analyzer._enhance_using_context(text, [r for rec in recognizers
                                                        for r in _with_id(rec, rec.analyze(
                                                            text, list(cfg.entities), art))],
                                                 art, recognizers, None)
        assert sorted((r.entity_type, r.start, r.end, r.score) for r in ours) == sorted(
            (r.entity_type, r.start, r.end, r.score) for r in theirs)


def _with_id(recognizer, results):  # noqa: ANN001, ANN202
    from pipeline.transforms.pii.detect import _tagged

    return _tagged(recognizer, results)
