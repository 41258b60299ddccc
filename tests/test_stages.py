"""The stage table is the one declaration of the pipeline: everything else follows it."""

import inspect
from pathlib import Path

import pytest

from pipeline import steps
from pipeline.cli import main
from pipeline.stages import DAILY, FUNNEL, KEYED, STAGES, STAGING, ZONES, Kind


def test_when_the_table_is_read_then_every_stage_has_a_step_and_known_zones() -> None:
    for stage in STAGES.values():
        params = list(inspect.signature(getattr(steps, stage.target)).parameters)
        assert params[:2] == ["ctx", "day"], stage.name
        assert len(params) == (3 if stage.kind is Kind.TABLE else 2), stage.name
        assert set(stage.reads) | set(stage.writes) <= set(ZONES), stage.name
        if stage.kind is Kind.TABLE:  # one partitioned zone in, one out (and a store it
            # keeps: the consent stage's consent log, detect_pii's text cache)
            assert ZONES[stage.source].partitioned and ZONES[stage.sink].partitioned
            assert [z for z in stage.writes if ZONES[z].partitioned and not ZONES[z].cache] \
                == [stage.sink]


def test_when_lists_are_derived_then_they_follow_the_table_order() -> None:
    names = list(STAGES)
    assert FUNNEL == ("ingest", "consent", "detect_pii", "pseudonymize", "generalize",
                      "minimize")
    assert [names.index(s) for s in FUNNEL] == sorted(names.index(s) for s in FUNNEL)
    assert KEYED == ("detect_pii", "pseudonymize", "generalize", "minimize", "reidentify",
                     "validate", "report")
    assert [z.path for z in STAGING] == [
        "staging/{purpose}/ingested", "staging/{purpose}/consented", "staging/{purpose}/scrubbed",
        "staging/{purpose}/pseudonymized", "staging/{purpose}/generalized", "pending/{purpose}"]
    # Everything a run writes lives under its purpose (or its feature set): purposes are apart.
    shared = {z.name for z in ZONES.values() if "{" not in z.path}
    assert shared == {"raw_events", "raw_consent", "erasure_requests", "ledger",
                      "consent_log", "feature_store", "audit_log", "audit_heads"}
    gated = [s.name for s in STAGES.values() if s.gated]
    assert gated == ["features", "publish", "monitor"]
    assert names.index("validate") < names.index(gated[0])


@pytest.mark.parametrize("argv", [["generate", "--start", "2026-13-01"],
                                  ["run", "--date", "20261101"]])
def test_when_a_date_is_not_a_date_then_the_cli_says_so_without_a_traceback(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "is not YYYY-MM-DD" in capsys.readouterr().err


@pytest.mark.slow
def test_when_three_runs_of_one_date_start_at_once_then_they_take_turns_and_all_publish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.ledger.store import PrivacyLedger
    from tests.conftest import generated_day

    config, data = generated_day(tmp_path, monkeypatch, users=150, seed=8)
    cmd = [sys.executable, "-m", "pipeline.cli", "--config", str(config), "run", "--date",
           "2026-11-01"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    outs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert sum("another run of this date is in progress" in e for _, e in outs) >= 1
    cfg = load_config(config)
    ctx = RunContext(cfg)
    assert len(PrivacyLedger.from_config(cfg.budget, ctx.local, ctx.keys).history(
        cfg.purpose)) == 1


def test_when_the_table_is_checked_then_its_order_is_the_dataflow_order() -> None:
    from dataclasses import replace

    from pipeline.stages import _STAGES, _check, dataflow_order

    assert dataflow_order(_STAGES) == list(DAILY)
    # validate listed before minimize: it reads `pending`, which minimize writes
    names = [s.name for s in _STAGES]
    i, j = names.index("minimize"), names.index("validate")
    swapped = list(_STAGES)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    with pytest.raises(ValueError, match="orders them"):
        _check(tuple(swapped))
    # features reading the publish record, which publish writes after reading features' zone:
    # each needs the other first, and no order runs them
    loop = tuple(replace(s, records_read=(*s.records_read, "publish"))
                 if s.name == "features" else s for s in _STAGES)
    with pytest.raises(ValueError, match="no order runs them"):
        dataflow_order(loop)
    with pytest.raises(ValueError, match="unknown zones or records"):
        _check((replace(_STAGES[0], reads=("raw_event",)), *_STAGES[1:]))
