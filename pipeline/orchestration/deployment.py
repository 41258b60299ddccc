"""`config/deployment.yaml`: what Airflow schedules, read at DAG parse time.

Kept apart from `pipeline.config` on purpose: the DAG file reads this on every parse, so it needs
only PyYAML and pydantic (both already loaded by Airflow), not the schemas, purpose files or the
data libraries. Each purpose's own config is loaded, and checked against the name given here,
when its tasks run.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[2] / "config" / "deployment.yaml"
ENV_VAR = "PRIVACY_PIPELINE_DEPLOYMENT"
DAG_TEST_ENV_VAR = "PRIVACY_PIPELINE_DAG_TEST"  # set: no deadline alert (see load_deployment)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogNotify(_Model):
    type: Literal["log"]


class FileNotify(_Model):
    """One JSON line per failure, for a log shipper or a test to pick up."""

    type: Literal["file"]
    path: Path


class SmtpNotify(_Model):
    """Airflow's SMTP notifier, through an Airflow connection (host, port, login)."""

    type: Literal["smtp"]
    to: list[str] = Field(min_length=1)
    smtp_conn_id: str = "smtp_default"
    from_email: str = "privacy-pipeline@localhost"


Notify = Annotated[LogNotify | FileNotify | SmtpNotify, Field(discriminator="type")]


class Deployment(_Model):
    """The scheduling side: purposes and their configs, timing, retries, pool, notifiers."""

    source: Path | None = None  # the file it was read from (the deadline callback reads it)

    purposes: dict[str, Path] = Field(min_length=1)
    owner: str = Field("privacy-data-engineering", min_length=1)
    start_date: date
    catchup: bool = False
    input_wait_hours: float = Field(12, gt=0)
    task_timeout_minutes: float = Field(60, gt=0)
    retries: int = Field(3, ge=0)
    retry_delay_minutes: float = Field(1, gt=0)
    max_retry_delay_minutes: float = Field(30, gt=0)
    # a day not finished this long after it ended (UTC) alerts the notifiers; None: no alert
    deadline_hours: float | None = Field(6, gt=0)
    heavy_pool: str = "privacy_pipeline_heavy"
    heavy_stages: list[str] = []
    notify: list[Notify] = [LogNotify(type="log")]

    def dag_id(self, purpose: str) -> str:
        return f"privacy_{purpose}_daily"


def load_deployment(path: str | Path | None = None) -> Deployment:
    """Read and check the deployment file (default: $PRIVACY_PIPELINE_DEPLOYMENT, else
    `config/deployment.yaml`). Relative paths resolve against its directory."""
    path = Path(path or os.environ.get(ENV_VAR) or DEFAULT).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the deployment file ({type(exc).__name__})"
                          ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = path.parent
    if isinstance(raw.get("purposes"), dict):
        raw["purposes"] = {k: base / v for k, v in raw["purposes"].items()}
    for n in raw.get("notify") or []:
        if isinstance(n, dict) and n.get("type") == "file" and "path" in n:
            n["path"] = base / n["path"]
    try:
        deployment = Deployment.model_validate({**raw, "source": path})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    if os.environ.get(DAG_TEST_ENV_VAR):
        # `airflow dags test` (dag.test()) cannot finish a run of a DAG with a deadline alert
        # in Airflow 3.3 (it looks the alert up by its serialized form); only a scheduler
        # evaluates deadlines anyway
        deployment = deployment.model_copy(update={"deadline_hours": None})
    return deployment
