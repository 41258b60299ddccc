"""A Presidio recognizer from a plain function of the text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SpanFinder = Callable[[str], list[tuple[int, int, float]]]


def function_recognizer(name: str, entity: str, find: SpanFinder, language: str) -> Any:
    """A recognizer of `entity` whose spans are `find(text)`'s (start, end, score).

    A PatternRecognizer (with an unused deny list), so the analyzer runs it like a regex,
    before and without any NLP.
    """
    from presidio_analyzer import AnalysisExplanation, PatternRecognizer, RecognizerResult

    class FunctionRecognizer(PatternRecognizer):
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    regex_flags: int | None = None) -> list[RecognizerResult]:
            return [RecognizerResult(entity, s, e, score,
                                     analysis_explanation=AnalysisExplanation(
                                         recognizer=name, original_score=score),
                                     recognition_metadata={
                                         RecognizerResult.RECOGNIZER_NAME_KEY: name,
                                         RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                    for s, e, score in find(text)]

    return FunctionRecognizer(supported_entity=entity, supported_language=language, name=name,
                              deny_list=["-"])
