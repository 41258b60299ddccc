"""What the DAGs' tasks call: the bridge from Airflow's run context to `pipeline.run`.

Kept out of the DAG file (which only wires) and light to import: the pipeline's engine, and
with it polars, Presidio and Great Expectations, is imported inside the task, on the worker.

- The day a run processes is its data interval's start: under Airflow 3 a `@daily` run's
  logical date is the day that starts, not the one that just ended.
- A deterministic failure (bad data, config, key, budget, validation) fails the task at once
  (`AirflowFailException`): a retry would only fail again and hold the next day. Only a
  `TransientError` goes back to Airflow's retries.
- The feature store's Asset event is emitted through an alias, only when the release changed,
  with the date in its `extra`: a rerun that changes nothing triggers nobody.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseNotifier, BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from pipeline.core.errors import PipelineError
from pipeline.orchestration.deployment import Deployment, FileNotify, LogNotify, SmtpNotify

log = logging.getLogger("pipeline.orchestration")


def run_day(context: Any) -> date:
    """The finished day a run processes: the `date` param of a manual run if given, else its
    data interval's start, in UTC."""
    chosen = (context.get("params") or {}).get("date")
    if chosen:
        from pipeline.core.context import parse_day

        try:
            return parse_day(str(chosen))
        except PipelineError as exc:
            raise AirflowFailException(f"param date: {exc}") from None
    return context["data_interval_start"].astimezone(UTC).date()


def _fail_fast(exc: PipelineError, what: str) -> BaseException:
    return exc if exc.retryable else AirflowFailException(f"{what}: {exc}")


def accept_low_volume(context: Any) -> bool:
    """Did the operator trigger this run with `{"accept_low_volume": true}` (the DAG's param;
    a run's conf sets its params) to publish a known-small day? See
    `pipeline.transforms.guardrails`."""
    return (context.get("params") or {}).get("accept_low_volume") is True


def run_stage_task(stage: str, config: str, context: Any, processed_day: str | None = None
                   ) -> str:
    """One daily or maintenance stage for the run's day, under the run's id.
    `processed_day` is the day as the task's rendered template shows it in the UI; it must be
    the day the task runs."""
    from pipeline.run import authorize, run_stage

    day = run_day(context)
    if processed_day is not None and processed_day != str(day):
        raise AirflowFailException(f"the rendered day {processed_day} is not the run's day "
                                   f"{day}")
    try:
        authorize(config, "run")  # the workers' identity must hold `run` for the purpose
        return run_stage(stage, day, config, run_id=context["run_id"],
                         accept_low_volume=accept_low_volume(context))
    except PipelineError as exc:
        raise _fail_fast(exc, stage) from exc


def gate_task(config: str, context: Any) -> None:
    """The run's last task: fails (and notifies) unless every daily stage succeeded."""
    from pipeline.run import gate_daily_run

    try:
        gate_daily_run(run_day(context), config, context["run_id"])
    except PipelineError as exc:
        raise _fail_fast(exc, "gate") from exc


def feature_asset(feature_set: str) -> Asset:
    return Asset(name=f"privacy_pipeline.{feature_set}",
                 uri=f"feast://privacy_pipeline/{feature_set}")


def published_alias(purpose: str) -> AssetAlias:
    return AssetAlias(name=f"privacy_pipeline.{purpose}.published")


def emit_publish_event(config: str, purpose: str, context: Any) -> bool:
    """After `publish`: one Asset event for the feature view, carrying the date, if this run
    changed what consumers read. Returns whether it emitted."""
    from pipeline.run import publish_change

    change = publish_change(run_day(context), config)
    if change is None:
        log.info("publish changed nothing: no asset event")
        return False
    feature_set, extra = change
    context["outlet_events"][published_alias(purpose)].add(feature_asset(feature_set),
                                                           extra=extra)
    return True


class DayInputSensor(BaseSensorOperator):
    """Waits for the `_SUCCESS` marker of the run's day: deferred (no worker slot held) on a
    local data root; on an object store, by polling (`poke`, in the sensor's `mode`)."""

    def __init__(self, *, config: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    def poke(self, context: Any) -> bool:
        from pipeline.run import input_marker

        return bool(input_marker(run_day(context), self.config).is_file())

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.file import FileTrigger

        from pipeline.core.fs import is_local
        from pipeline.run import input_marker

        marker = input_marker(run_day(context), self.config)
        if marker.is_file():
            return
        log.info("waiting for %s", marker)
        if not is_local(marker):
            super().execute(context)
            return
        self.defer(trigger=FileTrigger(filepath=str(marker), poke_interval=self.poke_interval),
                   method_name="execute_complete", timeout=self.execution_timeout)

    def execute_complete(self, context: Any, event: Any = None) -> None:
        return None


def _summary(context: Any) -> dict[str, str]:
    ti = context.get("ti") or context.get("task_instance")
    return {"dag_id": context["dag"].dag_id, "run_id": str(context.get("run_id")),
            "task_id": getattr(ti, "task_id", "?"), "day": str(run_day(context)),
            "error": str(context.get("exception") or "failed")}


class LogNotifier(BaseNotifier):
    """A failure as one ERROR log line (in the task's log and the worker's)."""

    def notify(self, context: Any) -> None:
        log.error("privacy pipeline run failed: %s", json.dumps(_summary(context)))


class FileNotifier(BaseNotifier):
    """A failure as one JSON line appended to a file (for a log shipper or on-call script)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def notify(self, context: Any) -> None:
        _append(self.path, {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                            **_summary(context)})


def _append(path: Path, line: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


SUBJECT = "[privacy pipeline] {{ dag.dag_id }}: {{ data_interval_start | ds }} failed"
BODY = ("<p>Run <code>{{ run_id }}</code>, task <code>{{ ti.task_id }}</code>:</p>"
        "<pre>{{ exception }}</pre><p>The run report names every stage and its reason.</p>")
ALERT_SUBJECT = ("[privacy pipeline] {{ dag.dag_id }}: {{ data_interval_start | ds }}: "
                 "soft guardrail alert")


def notifiers(deployment: Deployment) -> list[BaseNotifier]:
    """The deployment's `notify` list as Airflow notifiers (for `on_failure_callback`)."""
    out: list[BaseNotifier] = []
    for n in deployment.notify:
        if isinstance(n, LogNotify):
            out.append(LogNotifier())
        elif isinstance(n, FileNotify):
            out.append(FileNotifier(n.path))
        elif isinstance(n, SmtpNotify):
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            out.append(SmtpNotifier(to=n.to, from_email=n.from_email,
                                    smtp_conn_id=n.smtp_conn_id, subject=SUBJECT,
                                    html_content=BODY))
    return out


class AlertNotifier(BaseNotifier):
    """After a stage whose record may hold soft guardrail alerts (`Stage.alerts`: the
    monitor): each alert to every channel of the deployment's `notify` list (a WARNING log
    line, a JSON line with `"kind": "alert"`, one e-mail listing them). The run stays green:
    soft guardrails inform, hard ones fail the gate."""

    def __init__(self, config: str, deployment: Deployment) -> None:
        super().__init__()
        self.config, self.deployment = config, deployment

    def notify(self, context: Any) -> None:
        from pipeline.run import alerts_of

        alerts = alerts_of(run_day(context), self.config)
        if not alerts:
            return
        base = {k: v for k, v in _summary(context).items() if k != "error"}
        for n in self.deployment.notify:
            if isinstance(n, LogNotify):
                for a in alerts:
                    log.warning("privacy pipeline soft guardrail: %s",
                                json.dumps({**base, "alert": a}))
            elif isinstance(n, FileNotify):
                at = datetime.now(UTC).isoformat(timespec="seconds")
                for a in alerts:
                    _append(n.path, {"at": at, "kind": "alert", **base, "alert": a})
            elif isinstance(n, SmtpNotify):
                from html import escape

                from airflow.providers.smtp.notifications.smtp import SmtpNotifier

                body = ("<p>Soft guardrails breached (the run published; nothing was "
                        "blocked):</p><ul>" + "".join(f"<li>{escape(a)}</li>" for a in alerts)
                        + "</ul><p>The run report's Drift and group sections say more.</p>")
                SmtpNotifier(to=n.to, from_email=n.from_email, smtp_conn_id=n.smtp_conn_id,
                             subject=ALERT_SUBJECT,
                             html_content=body.replace("{", "&#123;"))(context)


def _deadline_line(context: dict[str, Any]) -> dict[str, str]:
    run = context.get("dag_run") or {}
    conf = run.get("conf") or {}
    day = conf.get("date") or str(run.get("data_interval_start") or "")[:10]
    deadline = (context.get("deadline") or {}).get("deadline_time")
    return {"dag_id": str(run.get("dag_id", "?")), "run_id": str(run.get("dag_run_id",
                                                                       run.get("run_id", "?"))),
            "day": day, "state": str(run.get("state", "?")), "deadline": str(deadline)}


DEADLINE_BODY = ("<p>Run <code>{run_id}</code> of <code>{dag_id}</code> (day {day}) had not "
                 "finished by its deadline {deadline}; it is <b>{state}</b>. Consumers of the "
                 "day's features are still reading the day before.</p>")


async def deadline_missed(context: dict[str, Any], deployment: str | None = None) -> None:
    """Airflow's deadline callback (run by the triggerer) for a day not finished
    `deadline_hours` after it ended: one line to each of the deployment's notifiers (an
    ERROR log line, a JSON line with `"kind": "deadline"`, an e-mail)."""
    import asyncio

    from pipeline.orchestration.deployment import load_deployment

    d = load_deployment(deployment)
    line = _deadline_line(context)
    for n in d.notify:
        if isinstance(n, LogNotify):
            log.error("privacy pipeline deadline missed: %s", json.dumps(line))
        elif isinstance(n, FileNotify):
            _append(n.path, {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "kind": "deadline", **line})
        elif isinstance(n, SmtpNotify):
            await asyncio.to_thread(_deadline_mail, n, line)


def _deadline_mail(n: SmtpNotify, line: dict[str, str]) -> None:
    from html import escape

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=n.smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=n.to, from_email=n.from_email,
            subject=f"[privacy pipeline] {line['dag_id']}: {line['day']} missed its deadline",
            html_content=DEADLINE_BODY.format(**{k: escape(v) for k, v in line.items()}))
