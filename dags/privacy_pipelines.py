"""The privacy pipeline's DAGs, generated from `config/deployment.yaml`. Wiring only.

- `privacy_<purpose>_daily`, one per purpose: waits (deferred) for the finished day's
  `_SUCCESS` marker, runs one task per daily row of `pipeline.stages.STAGES`, in order, then
  `gate`, which fails the run unless every stage succeeded. `report` runs whatever happened
  before it (`all_done`), so a failed day is still reported; the gate (also `all_done`) is the
  run's state and tells the notifiers. A stage whose record may hold soft guardrail alerts
  (`monitor`) sends them to the same notifiers when it succeeds; the run stays green.
- `privacy_maintenance_daily`: erasure and retention for every purpose. They rewrite every
  date's partitions, so they hold the data root's lock alone (`pipeline.core.locks`) while the
  daily stages hold it shared.

Runs process their data interval (the finished day, UTC); deterministic failures fail at once,
transient ones retry with backoff; heavy stages share a pool. The key comes from the Airflow
connection `privacy_pipeline_key` (password: `<key_id>:<base64>`), an env var or a key file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from pipeline.orchestration.airflow_tasks import (
    AlertNotifier,
    DayInputSensor,
    deadline_missed,
    emit_publish_event,
    gate_task,
    notifiers,
    published_alias,
    run_stage_task,
)
from pipeline.orchestration.deployment import Deployment, load_deployment
from pipeline.orchestration.docs import (
    DAY_TEMPLATE,
    daily_description,
    daily_doc,
    maintenance_description,
    maintenance_doc,
    task_doc,
)
from pipeline.stages import DAILY, MAINTENANCE, STAGES

DEPLOYMENT = load_deployment()
DAILY_AT_MIDNIGHT = CronDataIntervalTimetable("@daily", timezone="UTC")
PARAMS = {
    "date": Param(None, type=["null", "string"], format="date", title="Day to process",
                  description="YYYY-MM-DD, a finished day whose input is there; empty: the "
                              "run's data interval (the day before its logical date)"),
    "accept_low_volume": Param(False, type="boolean", title="Accept a low-volume day",
                               description="publish a day known to be small on purpose"),
}


def _deadline(d: Deployment) -> DeadlineAlert | None:
    """A day not finished `deadline_hours` after it ended (its logical date) alerts."""
    if d.deadline_hours is None:
        return None
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
                         interval=timedelta(hours=d.deadline_hours),
                         callback=AsyncCallback(deadline_missed, kwargs={
                             "deployment": str(d.source) if d.source else None}))


def _dag_args(d: Deployment) -> dict:
    return {"schedule": DAILY_AT_MIDNIGHT, "catchup": d.catchup,
            "start_date": datetime.combine(d.start_date, datetime.min.time()),
            "default_args": {
                "owner": d.owner,
                "retries": d.retries, "retry_delay": timedelta(minutes=d.retry_delay_minutes),
                "retry_exponential_backoff": True,
                "max_retry_delay": timedelta(minutes=d.max_retry_delay_minutes),
                "execution_timeout": timedelta(minutes=d.task_timeout_minutes)}}


def _stage(name: str, purpose: str, config: str, d: Deployment, **extra):  # noqa: ANN003, ANN202
    stage = STAGES[name]
    if name in d.heavy_stages:
        extra["pool"] = d.heavy_pool
    if stage.serial:
        extra["max_active_tis_per_dag"] = 1
    if stage.announces:
        extra["outlets"] = [published_alias(purpose)]
    if stage.alerts:
        extra["on_success_callback"] = [AlertNotifier(config, d)]

    @task(task_id=extra.pop("task_id", name), doc_md=task_doc(name),
          trigger_rule="all_done" if stage.always else "all_success", **extra)
    def run(processed_day: str, **context) -> str:  # noqa: ANN003
        written = run_stage_task(name, config, context, processed_day)
        if stage.announces:
            emit_publish_event(config, purpose, context)
        return written

    return run(processed_day=DAY_TEMPLATE)


def _chain(tasks: list) -> None:
    for before, after in zip(tasks, tasks[1:], strict=False):
        before >> after


def daily_dag(purpose: str, config: str, d: Deployment) -> None:
    @dag(dag_id=d.dag_id(purpose), max_active_runs=3, tags=["privacy", purpose],
         description=daily_description(purpose), doc_md=daily_doc(purpose, config, d),
         params=PARAMS, deadline=_deadline(d), **_dag_args(d))
    def pipeline() -> None:
        # Retries are for the machine (a worker lost): a sensor that times out, and a gate
        # that finds a failed stage, fail at once whatever the count.
        wait = DayInputSensor(task_id="wait_for_input", config=config, poke_interval=300,
                              doc_md="waits (deferred: no worker slot held) for the day's "
                                     "`_SUCCESS` marker in the landing zone",
                              timeout=d.input_wait_hours * 3600,
                              execution_timeout=timedelta(hours=d.input_wait_hours))

        @task(task_id="gate", trigger_rule="all_done",
              on_failure_callback=notifiers(d),
              doc_md="fails the run unless every stage succeeded; tells the notifiers")
        def gate(**context) -> None:  # noqa: ANN003
            gate_task(config, context)

        _chain([wait, *(_stage(name, purpose, config, d) for name in DAILY), gate()])

    pipeline()


def maintenance_dag(d: Deployment) -> None:
    @dag(dag_id="privacy_maintenance_daily", max_active_runs=1,
         tags=["privacy", "erasure", "retention"], description=maintenance_description(),
         doc_md=maintenance_doc(d), **_dag_args(d))
    def maintenance() -> None:
        _chain([_stage(name, purpose, str(config), d, task_id=f"{name}_{purpose}",
                       on_failure_callback=notifiers(d))
                for purpose, config in d.purposes.items() for name in MAINTENANCE])

    maintenance()


for _purpose, _config in DEPLOYMENT.purposes.items():
    daily_dag(_purpose, str(_config), DEPLOYMENT)
maintenance_dag(DEPLOYMENT)
