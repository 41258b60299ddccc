"""The Presidio and spaCy calls fast detection makes, in one module, all of them public API.

`FastAnalyzer` does what `AnalyzerEngine.analyze` does in another order (plain recognizers
first, the NLP pipeline only where it is needed, in batches). It needs two pieces that
`AnalyzerEngine` keeps inside `analyze`:
- NLP artifacts for a batch of texts through part of the spaCy pipeline: Presidio's public
  `SpacyNlpEngine.process_batch`, run inside spaCy's `Language.select_pipes` (its private
  `_doc_to_nlp_artifact` is what `process_batch` calls for each doc);
- context enhancement: each recognizer's `enhance_using_context`, then the analyzer's
  `context_aware_enhancer`, as its private `_enhance_using_context` does, repeated here through
  the public calls it makes.
`tests/transforms/test_presidio_api.py` checks both against the installed Presidio's own private
steps, so an upgrade that changes them fails there, not silently in detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any


def artifacts(engine: Any, texts: Sequence[str], language: str, *, batch_size: int,
              enable: Sequence[str] | None = None, disable: Sequence[str] = ()
              ) -> list[Any]:
    """Presidio's NLP artifacts of each text, through the pipeline's `enable`d components (or
    all but the `disable`d ones)."""
    if not texts:
        return []
    nlp = engine.nlp[language]
    only = (nlp.select_pipes(enable=list(enable)) if enable is not None
            else nlp.select_pipes(disable=list(disable)) if disable else nullcontext())
    with only:
        return [a for _, a in engine.process_batch(list(texts), language,
                                                   batch_size=batch_size)]


def enhance_using_context(analyzer: Any, text: str, raw: list[Any], nlp_artifacts: Any,
                          recognizers: Sequence[Any]) -> list[Any]:
    """What `AnalyzerEngine.analyze` does to raw results with context words: each recognizer
    enhances its own (seeing the others'), then the context-aware enhancer all of them."""
    from presidio_analyzer import RecognizerResult

    key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
    results = []
    for recognizer in recognizers:
        results.extend(recognizer.enhance_using_context(
            text=text,
            raw_recognizer_results=[r for r in raw if r.recognition_metadata[key]
                                    == recognizer.id],
            other_raw_recognizer_results=[r for r in raw if r.recognition_metadata[key]
                                          != recognizer.id],
            nlp_artifacts=nlp_artifacts, context=None))
    return analyzer.context_aware_enhancer.enhance_using_context(
        text=text, raw_results=results, nlp_artifacts=nlp_artifacts, recognizers=recognizers,
        context=None)
