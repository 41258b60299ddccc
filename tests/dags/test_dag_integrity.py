"""The DAGs: generated from the deployment file, wired as the stage table says, scheduled on the
finished day, and run for real with `dag.test()`: a good day succeeds, a failed day ends
`failed` and reaches the notifiers (a file, and e-mail through a local SMTP server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from pipeline.core.keys import parse_key
from pipeline.stages import DAILY, MAINTENANCE
from tests.conftest import (
    ROOT,
    TEST_KEY_TEXT,
    files_holding,
    key_material,
    reports_of,
    write_config,
)

DAG_ID = "privacy_personalization_daily"
RUN_AFTER = datetime(2026, 11, 2, tzinfo=UTC)  # a run started on the 2nd processes the 1st


def write_deployment(tmp_path: Path, purposes: dict[str, Path], **overrides: object) -> Path:
    doc = yaml.safe_load((ROOT / "config" / "deployment.yaml").read_text())
    doc.update(purposes={k: str(v) for k, v in purposes.items()}, **overrides)
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run_with_file_alerts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Path,
                          logical_date: datetime = RUN_AFTER):  # noqa: ANN202
    """The daily DAG run by `dag.test()` with only a file notifier: the run, each task's
    state, and the lines the notifier wrote."""
    alerts = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("PRIVACY_PIPELINE_DEPLOYMENT", str(write_deployment(
        tmp_path, {"personalization": config}, notify=[{"type": "file", "path": str(alerts)}])))
    run = _dagbag().dags[DAG_ID].test(logical_date=logical_date)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states, [json.loads(line) for line in alerts.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _dag_test_without_deadline(request: pytest.FixtureRequest,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """dag.test() cannot finish a run of a DAG with a deadline alert (Airflow 3.3): the runs
    here go without one, as `tasks.py dag` does; the scheduler tests keep it."""
    if request.node.get_closest_marker("slow"):
        monkeypatch.setenv("PRIVACY_PIPELINE_DAG_TEST", "1")


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


def _dagbag():  # noqa: ANN202
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):  # noqa: ANN201
    return _dagbag()


def test_when_dags_folder_is_parsed_then_one_daily_dag_per_purpose_and_maintenance(
        dagbag) -> None:  # noqa: ANN001
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"privacy_personalization_daily", "privacy_analytics_daily",
                                "privacy_maintenance_daily"}


def test_when_daily_dag_is_wired_then_input_stages_and_gate_in_order(dagbag) -> None:  # noqa: ANN001
    dag = dagbag.dags[DAG_ID]
    chain = ["wait_for_input", *DAILY, "gate"]
    assert sorted(t.task_id for t in dag.tasks) == sorted(chain)
    for before, after in zip(chain, chain[1:], strict=False):
        assert dag.get_task(before).downstream_task_ids == {after}
    assert not set(MAINTENANCE) & {t.task_id for t in dag.tasks}
    gate, report = dag.get_task("gate"), dag.get_task("report")
    assert report.trigger_rule == "all_done" and gate.trigger_rule == "all_done"
    assert gate.on_failure_callback
    for t in dag.tasks:  # a stuck task fails; a lost worker or a transient error backs off
        assert t.execution_timeout is not None, t.task_id
        assert t.retries >= 1 and t.retry_exponential_backoff, t.task_id
    assert {t.task_id for t in dag.tasks if t.pool == "privacy_pipeline_heavy"} == {
        "ingest", "detect_pii", "validate", "features"}
    assert [o.name for o in dag.get_task("publish").outlets] == [
        "privacy_pipeline.personalization.published"]
    maintenance = dagbag.dags["privacy_maintenance_daily"]
    assert [t.task_id for t in maintenance.topological_sort()] == [
        f"{s}_{p}" for p in ("personalization", "analytics") for s in MAINTENANCE]
    assert maintenance.max_active_runs == 1


def test_when_scheduled_then_a_run_processes_the_day_that_just_ended(dagbag) -> None:  # noqa: ANN001
    from airflow.timetables.base import TimeRestriction

    from pipeline.orchestration.airflow_tasks import run_day

    timetable = dagbag.dags[DAG_ID].timetable
    # The scheduled run that starts after midnight on the 23rd covers the 22nd.
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=datetime(2026, 11, 22, tzinfo=UTC), latest=None,
                                    catchup=True))
    assert info.run_after == datetime(2026, 11, 23, tzinfo=UTC)
    assert run_day({"data_interval_start": info.data_interval.start}) == date(2026, 11, 22)
    # A manual trigger at 10:00 on the 23rd also processes the 22nd, the last finished day.
    manual = timetable.infer_manual_data_interval(run_after=datetime(2026, 11, 23, 10,
                                                                     tzinfo=UTC))
    assert run_day({"data_interval_start": manual.start}) == date(2026, 11, 22)


def test_when_dag_file_is_imported_then_it_imports_no_data_library() -> None:
    code = ("import sys, runpy; runpy.run_path('dags/privacy_pipelines.py'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'polars', "
            "'presidio_analyzer', 'great_expectations', 'feast', 'opendp', 'pandas_gbq'}), "
            "'pipeline.run' in sys.modules, 'pipeline.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    assert out == "[] False False"


@pytest.mark.parametrize(("raised", "retried"), [
    (OSError("disk full"), True), (ConnectionError("redis:6379 unreachable"), True),
    (ValueError("cannot cast 'jane@example.org'"), False)])
def test_when_a_stage_fails_then_only_transient_errors_go_back_to_airflow_retries(
        raised: Exception, retried: bool, monkeypatch: pytest.MonkeyPatch,
        config_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import steps
    from pipeline.core.errors import TransientError
    from pipeline.orchestration.airflow_tasks import run_stage_task

    def fail(ctx, day):  # noqa: ANN001, ANN202
        raise raised

    monkeypatch.setattr(steps, "check_input", fail)
    context = {"data_interval_start": datetime(2026, 11, 1, tzinfo=UTC), "run_id": "r1"}
    with pytest.raises(TransientError if retried else AirflowFailException) as info:
        run_stage_task("check_input", str(config_path), context)
    assert "jane@example.org" not in str(info.value)  # a library message is withheld


def test_when_the_deployment_file_is_wrong_then_loading_names_the_field(tmp_path: Path) -> None:
    from pipeline.core.errors import ConfigError
    from pipeline.orchestration.deployment import load_deployment

    path = write_deployment(tmp_path, {"p": tmp_path / "p.yaml"}, retries=-1,
                            notify=[{"type": "pager"}])
    with pytest.raises(ConfigError, match=r"retries: .*greater than or equal to 0.*notify\.0"):
        load_deployment(path)


@pytest.mark.slow
def test_when_dag_runs_with_key_from_airflow_connection_then_every_task_succeeds(
        airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.demo.generate import generate

    # The key comes only from an Airflow connection here: no env var, no key file.
    monkeypatch.delenv("PRIVACY_PIPELINE_TEST_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_PRIVACY_PIPELINE_KEY",
                       json.dumps({"conn_type": "generic", "password": TEST_KEY_TEXT}))
    config = write_config(tmp_path, keys__airflow_conn_id="privacy_pipeline_key")
    generate(tmp_path / "data", start=date(2026, 11, 1), users=300, seed=3)
    monkeypatch.setenv("PRIVACY_PIPELINE_DEPLOYMENT",
                       str(write_deployment(tmp_path, {"personalization": config})))
    dag = _dagbag().dags[DAG_ID]  # re-parsed with the test deployment
    run = dag.test(logical_date=RUN_AFTER)
    assert run.state == "success"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["gate"] == "success"
    manifest = reports_of(tmp_path / "data", "2026-11-01") / "manifest.json"
    assert json.loads(manifest.read_text())["pseudonymization"]["key_id"] == "test-key-1"
    # The feature view's Asset event carries the date; a rerun that changes nothing (the
    # ledger returns the stored release) emits none.
    assert _asset_events(airflow_home) == [{"date": "2026-11-01", "purpose": "personalization",
                                            "features_sha256": _features_sha(tmp_path)}]
    assert dag.test(logical_date=RUN_AFTER).state == "success"
    assert len(_asset_events(airflow_home)) == 1
    # The key never lands in Airflow's DB (XCom, task state), its logs, or any output.
    forms = key_material(parse_key(TEST_KEY_TEXT, source="test"))
    assert files_holding([airflow_home, tmp_path / "data"], forms) == []


def _asset_events(airflow_home: Path) -> list[dict]:
    import sqlite3

    with sqlite3.connect(airflow_home / "airflow.db") as con:
        rows = con.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE a.name = 'privacy_pipeline.cohort_daily'").fetchall()
    return [json.loads(extra) for (extra,) in rows]


def _features_sha(tmp_path: Path) -> str:
    ledger = json.loads((tmp_path / "data" / "runs" / "personalization" / "date=2026-11-01" /
                         "ledger.json").read_text())
    return ledger["payload_sha256"]


@pytest.mark.slow
def test_when_a_day_fails_then_the_run_fails_and_the_notifiers_hear_of_it(
        airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    from pipeline.demo.generate import generate

    class Inbox(Sink):
        messages: list[bytes] = []

        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
            self.messages.append(envelope.content)
            return "250 OK"

    with socket.socket() as probe:  # a free port for the SMTP server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True}}))
        monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
        config = write_config(tmp_path)
        generate(tmp_path / "data", start=date(2026, 11, 1), users=100, seed=3)
        (tmp_path / "data" / "raw" / "consent" / "consent.jsonl").unlink()  # nobody to ask
        alerts = tmp_path / "alerts.jsonl"
        monkeypatch.setenv("PRIVACY_PIPELINE_DEPLOYMENT", str(write_deployment(
            tmp_path, {"personalization": config}, notify=[
                {"type": "log"}, {"type": "file", "path": str(alerts)},
                {"type": "smtp", "to": ["oncall@example.org"], "smtp_conn_id": "smtp_test"}])))
        dag = _dagbag().dags[DAG_ID]
        run = dag.test(logical_date=RUN_AFTER)
    finally:
        smtp.stop()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["consent"] == "failed" and states["gate"] == "failed"
    assert states["report"] == "success" and states["publish"] == "upstream_failed"
    # A deterministic failure is not retried.
    assert [ti.try_number for ti in run.get_task_instances() if ti.task_id == "consent"] == [1]
    [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["dag_id"] == DAG_ID and alert["day"] == "2026-11-01"
    assert alert["task_id"] == "gate" and "consent (MissingInputError" in alert["error"]
    [mail] = Inbox.messages
    assert b"privacy_personalization_daily: 2026-11-01 failed" in mail
    html = (reports_of(tmp_path / "data", "2026-11-01") / "report.html").read_text()
    assert "Stage consent failed: MissingInputError" in html


@pytest.mark.slow
def test_when_every_line_of_a_day_is_quarantined_then_the_dag_run_fails_on_the_guardrail(
        airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.demo.generate import generate

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    data = tmp_path / "data"
    generate(data, start=date(2026, 11, 1), users=100, seed=3)
    raw = data / "raw" / "events" / "date=2026-11-01" / "events.jsonl"
    raw.write_text(raw.read_text().replace('"event_id"', '"evt_id"'))  # an upstream rename
    run, states, [alert] = _run_with_file_alerts(tmp_path, monkeypatch, config)
    assert run.state == "failed"
    assert states["ingest"] == states["consent"] == "success"
    assert states["guardrails"] == "failed" and states["gate"] == "failed"
    assert states["features"] == states["publish"] == "upstream_failed"
    assert "max_quarantine_share: 100.0% (limit <= 20%) BREACHED" in alert["error"]
    # no ε charged, nothing published, Feast never opened
    assert not (data / "ledger").exists() and not (data / "feature_repo").exists()
    assert not (data / "published").exists() and not (data / "features").exists()


@pytest.mark.slow
def test_when_a_small_day_is_triggered_with_accept_low_volume_then_it_publishes(
        airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.demo.generate import generate

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    # 100 users where the purpose expects at least 500 after consent: a known-small day
    config = write_config(tmp_path, guardrails__min_users_after_consent=500)
    generate(tmp_path / "data", start=date(2026, 11, 1), users=100, seed=3)
    monkeypatch.setenv("PRIVACY_PIPELINE_DEPLOYMENT",
                       str(write_deployment(tmp_path, {"personalization": config})))
    dag = _dagbag().dags[DAG_ID]
    refused = dag.test(logical_date=RUN_AFTER)
    assert refused.state == "failed"
    assert {ti.task_id: ti.state for ti in refused.get_task_instances()}["guardrails"] == "failed"
    accepted = dag.test(logical_date=RUN_AFTER, run_conf={"accept_low_volume": True})
    assert accepted.state == "success"
    guard = json.loads((tmp_path / "data" / "runs" / "personalization" / "date=2026-11-01" /
                        "guardrails.json").read_text())
    assert guard["accept_low_volume"] and [c["name"] for c in guard["checks"]
                                           if c["accepted"]] == ["min_users_after_consent"]


def test_when_the_days_input_is_not_complete_then_the_sensor_defers_on_its_marker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from pipeline.orchestration.airflow_tasks import DayInputSensor

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    sensor = DayInputSensor(task_id="wait_for_input", config=str(config), poke_interval=60)
    context = {"data_interval_start": datetime(2026, 11, 1, tzinfo=UTC)}
    marker = tmp_path / "data" / "raw" / "events" / "date=2026-11-01" / "_SUCCESS"
    with pytest.raises(TaskDeferred) as deferred:  # no worker slot held while it waits
        sensor.execute(context)
    assert deferred.value.trigger.filepath == str(marker)
    marker.parent.mkdir(parents=True)
    marker.touch()  # the landing side says the day is complete
    assert sensor.execute(context) is None


@pytest.mark.slow
def test_when_the_table_would_publish_staging_pseudonyms_then_the_reidentification_guardrail_fails_the_run(  # noqa: E501
        airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect that every other check lets through (k-anonymous, pseudonyms well formed):
    profiles published under the staging pseudonym, which an insider holding the staging zone
    links at once. The hard guardrail fails the gate; one alert names the rate and limit."""
    from pipeline.demo.generate import generate

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    data = tmp_path / "data"
    generate(data, start=date(2026, 11, 1), users=100, seed=3)
    monkeypatch.setattr("pipeline.transforms.profile.with_epoch_pseudonym",
                        lambda table, column, master, purpose, epoch: table)
    run, states, [alert] = _run_with_file_alerts(tmp_path, monkeypatch, config)
    assert run.state == "failed"
    assert states["reidentify"] == "success" and states["validate"] == "failed"
    assert states["features"] == states["publish"] == "upstream_failed"
    assert alert["task_id"] == "gate"
    assert ("re-identification: 100.0% of people singled out (pseudonym reuse), limit 20.0% "
            "(1/k, k = 5) BREACHED") in alert["error"]
    assert not (data / "published").exists() and not (data / "features").exists()
    validation = json.loads((data / "runs" / "personalization" / "date=2026-11-01" /
                             "validation.json").read_text())
    assert [c["expectation"] for c in validation["checks"] if not c["success"]] == [
        "reidentification_rate_at_most_one_in_k"]


@pytest.mark.slow
def test_when_a_day_quarantines_far_more_than_usual_then_the_run_publishes_and_alerts(
        airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A soft guardrail: 6% of the second day's lines carry a non-numeric age (an upstream
    change), under the 20% hard limit but many times the first day's share. The run
    publishes, and the notifiers get one line per alert with the measured value and its
    threshold."""
    from pipeline.demo.generate import generate
    from pipeline.run import run_all

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    config = write_config(tmp_path)
    data = tmp_path / "data"
    generate(data, start=date(2026, 11, 1), days=2, users=150, seed=3)
    assert run_all("2026-11-01", config)[1]
    raw = data / "raw" / "events" / "date=2026-11-02" / "events.jsonl"
    lines = raw.read_text().splitlines()
    broken = [line.replace('"age": ', '"age": "x', 1).replace(', "home_city"', '", "home_city"',
                                                              1)
              if i % 16 == 0 and '"age": ' in line and '"age": null' not in line else line
              for i, line in enumerate(lines)]
    raw.write_text("\n".join(broken) + "\n")
    run, _, sent = _run_with_file_alerts(tmp_path, monkeypatch, config,
                                         datetime(2026, 11, 3, tzinfo=UTC))
    assert run.state == "success"
    assert sent and all(a["kind"] == "alert" and a["task_id"] == "monitor" for a in sent)
    [spike] = [a["alert"] for a in sent if a["alert"].startswith("quarantine_spike")]
    assert spike.startswith("quarantine_spike: wrong_type: measured 0.0")
    assert "threshold <= 3 x median" in spike and "of lines over 1 run(s)" in spike
    assert "x64" not in json.dumps(sent)  # no value from the data
    report = (reports_of(data, "2026-11-02") / "report.html").read_text()
    assert "Soft guardrails (alerts)" in report and "quarantine_spike" in report


def test_when_the_ui_shows_the_dags_then_owner_docs_params_and_deadline_are_there(
        dagbag) -> None:  # noqa: ANN001
    daily, analytics = dagbag.dags[DAG_ID], dagbag.dags["privacy_analytics_daily"]
    maintenance = dagbag.dags["privacy_maintenance_daily"]
    assert {t.owner for d in (daily, maintenance) for t in d.tasks} == {
        "privacy-data-engineering"}
    assert "personalization" in daily.description and "analytics" in analytics.description
    docs = {d.doc_md for d in (daily, analytics, maintenance)}
    assert len(docs) == 3 and all("| task | does |" in doc for doc in docs)
    assert "processes 2026-11-01" in daily.doc_md  # the logical date D+1 explained
    assert all(t.doc_md for t in daily.tasks), [t.task_id for t in daily.tasks if not t.doc_md]
    assert set(daily.params) == {"date", "accept_low_volume"}
    assert daily.params["accept_low_volume"] is False and daily.params["date"] is None
    [deadline] = daily.deadline
    assert deadline.interval.total_seconds() == 6 * 3600
    assert deadline.callback.path.endswith("airflow_tasks.deadline_missed")
    assert daily.get_task("ingest").op_kwargs == {
        "processed_day": "{{ params.date or data_interval_start | ds }}"}


def test_when_an_operator_gives_a_date_then_the_run_processes_that_day() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.orchestration.airflow_tasks import accept_low_volume, run_day

    interval = {"data_interval_start": datetime(2026, 12, 6, tzinfo=UTC)}
    assert run_day({**interval, "params": {"date": None}}) == date(2026, 12, 6)
    assert run_day({**interval, "params": {"date": "2026-11-01"}}) == date(2026, 11, 1)
    with pytest.raises(AirflowFailException, match="param date"):
        run_day({**interval, "params": {"date": "2026-13-01"}})
    assert accept_low_volume({"params": {"accept_low_volume": True}})
    assert not accept_low_volume({"params": {"accept_low_volume": False}})


def test_when_a_day_misses_its_deadline_then_the_notifiers_hear_of_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from pipeline.orchestration.airflow_tasks import deadline_missed

    alerts = tmp_path / "alerts.jsonl"
    deployment = write_deployment(tmp_path, {"personalization": tmp_path / "p.yaml"},
                                  notify=[{"type": "log"}, {"type": "file", "path": str(alerts)}])
    # the context Airflow's scheduler gives a deadline callback (a DAG run, the deadline)
    context = {"dag_run": {"dag_id": DAG_ID, "dag_run_id": "scheduled__2026-11-02",
                           "state": "running", "conf": {},
                           "data_interval_start": "2026-11-01T00:00:00Z"},
               "deadline": {"id": "d1", "deadline_time": "2026-11-02T06:00:00Z"}}
    asyncio.run(deadline_missed(context, deployment=str(deployment)))
    [line] = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert line["kind"] == "deadline" and line["day"] == "2026-11-01"
    assert line["state"] == "running" and line["deadline"] == "2026-11-02T06:00:00Z"
    assert "deadline missed" in caplog.text
