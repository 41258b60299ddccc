"""Daily privacy pipeline DAG for the personalization purpose. Wiring only.

Each task runs one stage of `pipeline.run` for the run's logical date and passes the path it
wrote to the next task through XCom (paths, never data). Validation is the publish gate: when it
fails, features and publish do not run, and the report still records why. The feature store is
published as an Airflow Asset so downstream DAGs (training, serving refresh) can be scheduled on it.

Set PRIVACY_PIPELINE_CONFIG to point at another config; the key comes from the Airflow
connection `privacy_pipeline_key` (password: `<key_id>:<base64>`), an env var or a key file.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, dag, task

CONFIG = os.environ.get("PRIVACY_PIPELINE_CONFIG",
                        str(Path(__file__).resolve().parents[1] / "config" / "pipeline.yaml"))
COHORT_FEATURES = Asset(name="privacy_pipeline.cohort_daily",
                        uri="feast://privacy_pipeline/cohort_daily")
PRIVACY_STAGES = ("erase", "retention", "ingest", "consent", "detect_pii", "pseudonymize",
                  "generalize", "minimize", "validate", "features")


def stage_task(stage: str, **task_kwargs):  # noqa: ANN201 - returns an Airflow task factory
    @task(task_id=stage, **task_kwargs)
    def run(upstream: str | None = None) -> str:
        from airflow.sdk import get_current_context

        from pipeline.run import run_stage

        return run_stage(stage, get_current_context()["ds"], CONFIG)

    return run


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
    path = None
    for stage in PRIVACY_STAGES:
        path = stage_task(stage)(path)
    published = stage_task("publish", outlets=[COHORT_FEATURES])(path)
    report = stage_task("report", trigger_rule="all_done")()
    published >> report


privacy_personalization_daily()
