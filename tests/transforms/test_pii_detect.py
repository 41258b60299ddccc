
import pytest

from pipeline.config import PiiConfig, load_config
from pipeline.transforms.pii.detect import FastAnalyzer
from pipeline.transforms.pii.scrub import build_pii_analyzer
from tests.conftest import ROOT

TEXTS = [
    "winter coat",
    "The video keeps buffering on my tablet, can you help?",
    "Please contact me at maria.lopez77@gmail.com about my last order.",
    "Hi, this is Jennifer Walsh. I can't log in, please reset my password.",
    "My phone number changed, call me on (415) 555-0132 instead.",
    "I was charged twice on card 4111 1111 1111 1111, please refund.",
    "Refund to my account IBAN GB82WEST12345698765432 please, thanks Tom",
    "The app shows the wrong SSN 078-05-1120 on my tax form",
    "Login from 203.0.113.77 was not me, please lock the account.",
    "Please ship the replacement to 4759 William Haven Apt. 194, Boston.",
    "Login from 2001:db8:85a3::8a2e:370:7334 was not me",
]


@pytest.fixture(scope="module")
def cfg() -> PiiConfig:
    return load_config(ROOT / "config" / "pipeline.yaml").pii


@pytest.fixture(scope="module")
def fast(cfg: PiiConfig) -> FastAnalyzer:
    return FastAnalyzer(build_pii_analyzer(cfg), cfg)


def test_when_text_cannot_hold_pii_then_only_the_name_gazetteer_runs_on_it(
        fast: FastAnalyzer) -> None:
    wanted, ner = fast.plan(TEXTS[:2])  # names are looked up in every text; NER is not run
    assert wanted == [{"PERSON"}, {"PERSON"}] and ner == [False, False]


def test_when_prefilter_flags_a_text_then_only_that_recognizer_runs(fast: FastAnalyzer) -> None:
    wanted, ner = fast.plan([TEXTS[2], TEXTS[3]])
    assert wanted[0] == {"EMAIL_ADDRESS", "PERSON"} and ner == [False, True]


def test_when_compared_with_presidio_then_every_pii_span_is_found(
        fast: FastAnalyzer, cfg: PiiConfig) -> None:
    presidio = build_pii_analyzer(cfg)
    ours = fast.analyze(TEXTS)
    for text, found in zip(TEXTS, ours, strict=True):
        theirs = presidio.analyze(text=text, language=cfg.language, entities=list(cfg.entities),
                                  score_threshold=cfg.score_threshold)
        mine = {(r.start, r.end) for r in found}
        covered = [r for r in theirs if any(s <= r.start and r.end <= e for s, e in mine)]
        assert len(covered) == len(theirs), (text, theirs, found)


def test_when_analysed_in_a_spawned_worker_then_spans_equal_this_process(
        cfg: PiiConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing as mp

    from pipeline.transforms.pii import detect as pii_detect
    from pipeline.transforms.pii.scrub import fast_analyzer

    texts = [f"{t} #{i}" for i in range(20) for t in TEXTS]
    here = fast_analyzer(cfg)
    chunk = (texts, *here.plan(texts))
    with mp.get_context("spawn").Pool(1, initializer=pii_detect._start_worker,
                                      initargs=(fast_analyzer, cfg)) as pool:
        assert pool.apply(pii_detect._worker_ready)
        there = pool.apply(pii_detect._analyze_in_worker, (chunk,))
    assert there == here.analyze_planned(*chunk) and sum(map(len, there)) >= len(texts)
    # This process and a ready worker sharing the chunks return the same, in order.
    monkeypatch.setattr(pii_detect, "_MIN_TEXTS_PER_CHUNK", 10)
    with fast_analyzer(cfg.model_copy(update={"n_process": 2}), with_workers=True) as shared:
        assert shared.workers is not None
        shared.workers.wait_ready()
        assert shared.analyze(texts) == there
