"""DAG integrity (parses, wiring, retries) and one real run with `dag.test()`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.keys import parse_key
from pipeline.stages import STAGES
from tests.conftest import ROOT, TEST_KEY_TEXT, files_holding, key_material, write_config

DAG_ID = "privacy_personalization_daily"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private AIRFLOW_HOME with a migrated SQLite DB, set before Airflow is imported."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags")}
    os.environ.update(env)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   capture_output=True, env={**os.environ, **env})
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):  # noqa: ANN201
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_when_dags_folder_is_parsed_then_no_import_errors(dagbag) -> None:  # noqa: ANN001
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


def test_when_dag_is_wired_then_one_task_per_stage_in_order(dagbag) -> None:  # noqa: ANN001
    dag = dagbag.dags[DAG_ID]
    chain = list(STAGES)  # one task per declared stage, in the table's order
    for before, after in zip(chain, chain[1:], strict=False):
        assert after in dag.get_task(before).downstream_task_ids
    report = dag.get_task("report")
    assert report.trigger_rule == "all_done" and "publish" in report.upstream_task_ids
    assert all(t.retries >= 1 for t in dag.tasks)
    assert [o.uri for o in dag.get_task("publish").outlets] == [
        "feast://privacy_pipeline/cohort_daily"]
    assert dag.max_active_runs == 1 and not dag.catchup


def test_when_dag_file_is_imported_then_it_imports_only_the_stage_table() -> None:
    code = ("import sys, runpy; runpy.run_path('dags/personalization_daily.py'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pipeline','polars','presidio_analyzer','great_expectations','feast','opendp')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    assert out == "['pipeline', 'pipeline.stages']"  # the stage table: standard library only


@pytest.mark.slow
def test_when_dag_runs_with_key_from_airflow_connection_then_every_task_succeeds(
        dagbag, airflow_home: Path, tmp_path: Path,  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, date, datetime

    from pipeline.demo.generate import generate

    # The key comes only from an Airflow connection here: no env var, no key file.
    monkeypatch.delenv("PRIVACY_PIPELINE_TEST_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_PRIVACY_PIPELINE_KEY",
                       json.dumps({"conn_type": "generic", "password": TEST_KEY_TEXT}))
    config = write_config(tmp_path, keys__airflow_conn_id="privacy_pipeline_key")
    generate(tmp_path / "data", start=date(2026, 11, 1), users=300, seed=3)
    monkeypatch.setenv("PRIVACY_PIPELINE_CONFIG", str(config))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags[DAG_ID]  # re-parse with the test config
    run = dag.test(logical_date=datetime(2026, 11, 1, tzinfo=UTC))
    assert run.state == "success"
    manifest = tmp_path / "data" / "reports" / "date=2026-11-01" / "manifest.json"
    assert json.loads(manifest.read_text())["pseudonymization"]["key_id"] == "test-key-1"
    # The key never lands in Airflow's DB (XCom, task state), its logs, or any output.
    forms = key_material(parse_key(TEST_KEY_TEXT, source="test"))
    assert files_holding([airflow_home, tmp_path / "data"], forms) == []
