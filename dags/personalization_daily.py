"""Daily privacy pipeline DAG for the personalization purpose. Wiring only.

One task per row of `pipeline.stages.STAGES`, in its order, each running that stage of
`pipeline.run` for the run's logical date. Tasks pass nothing to each other: every stage reads
its input partition from the zone the previous one wrote (the XCom value is the path written,
for the logs). Validation is the publish gate: when it fails, the gated stages (features,
publish) do not run, and the report (`always`) still records why. The feature store is
published as an Airflow Asset so downstream DAGs (training, serving refresh) can be scheduled
on it.

Set PRIVACY_PIPELINE_CONFIG to point at another config; the key comes from the Airflow
connection `privacy_pipeline_key` (password: `<key_id>:<base64>`), an env var or a key file.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, dag, task

from pipeline.stages import STAGES, Stage

CONFIG = os.environ.get("PRIVACY_PIPELINE_CONFIG",
                        str(Path(__file__).resolve().parents[1] / "config" / "pipeline.yaml"))
COHORT_FEATURES = Asset(name="privacy_pipeline.cohort_daily",
                        uri="feast://privacy_pipeline/cohort_daily")
OUTLETS = {"publish": [COHORT_FEATURES]}


def stage_task(stage: Stage):  # noqa: ANN201 - returns an Airflow task
    @task(task_id=stage.name, doc=stage.does, outlets=OUTLETS.get(stage.name, []),
          trigger_rule="all_done" if stage.always else "all_success")
    def run() -> str:
        from airflow.sdk import get_current_context

        from pipeline.run import run_stage

        return run_stage(stage.name, get_current_context()["ds"], CONFIG)

    return run()


@dag(
    dag_id="privacy_personalization_daily",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["privacy", "personalization"],
    doc_md=__doc__,
)
def privacy_personalization_daily() -> None:
    tasks = [stage_task(stage) for stage in STAGES.values()]
    for before, after in zip(tasks, tasks[1:], strict=False):
        before >> after


privacy_personalization_daily()
