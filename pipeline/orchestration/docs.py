"""What Airflow's UI says about each DAG and task: descriptions and Markdown docs, built from the
deployment and the stage table so they never drift from what runs.

Read at DAG parse time: only the standard library and `pipeline.stages` (no data library).
"""

from __future__ import annotations

from datetime import timedelta

from pipeline.orchestration.deployment import Deployment
from pipeline.stages import DAILY, MAINTENANCE, STAGES

DAY_TEMPLATE = "{{ params.date or data_interval_start | ds }}"


def daily_description(purpose: str) -> str:
    return (f"Privacy pipeline, purpose '{purpose}': one finished day of raw app events to "
            "validated, pseudonymized, k-anonymous rows and DP cohort features in Feast.")


def maintenance_description() -> str:
    return ("Privacy pipeline maintenance: erasure requests and retention for every purpose, "
            "serialized against the daily runs.")


def _stage_rows(names: tuple[str, ...] | list[str]) -> str:
    return "\n".join(f"| `{n}` | {STAGES[n].does} |" for n in names)


def _notify(d: Deployment) -> str:
    return ", ".join(n.type for n in d.notify) or "nobody"


def daily_doc(purpose: str, config: str, d: Deployment) -> str:
    deadline = (f"If a run has not finished **{d.deadline_hours:g} h after its day ended** "
                f"(UTC), a deadline alert goes to the notifiers ({_notify(d)})."
                if d.deadline_hours is not None else "No deadline alert is configured.")
    wait = f"{d.input_wait_hours:g}"
    return f"""\
### {daily_description(purpose)}

**Which day a run processes.** A run processes its *data interval*: the day that just ended,
in UTC. Airflow labels a run by the interval's **end**, so the run shown as
`{d.start_date + timedelta(days=1)} 00:00` processes {d.start_date}.
Every stage task shows the day it processed under *Rendered Templates* (`processed_day`).

**Manual runs.** *Trigger DAG w/ config* takes two parameters:
- `date` (YYYY-MM-DD): process this finished day instead of the last one (a backfill of one
  date; its input must be there);
- `accept_low_volume` (true/false): publish a day known to be small on purpose; its
  low-volume guardrail breaches are recorded as accepted (a quarantine share over the limit
  is never accepted).

**State.** `report` and `gate` run whatever happened before them: the report names the failed
stage and its reason, and `gate` fails the run unless every stage succeeded, so a green run
published and a red one did not. Deterministic failures (validation, schema, config, key,
budget, missing input) fail at once; I/O, database and network errors retry with backoff.
Failures go to the notifiers ({_notify(d)}); soft guardrail alerts after `monitor` too.
{deadline}

**Config**: `{config}`. Heavy stages share the pool `{d.heavy_pool}`
({", ".join(d.heavy_stages) or "none"}). Owner: {d.owner}.

| task | does |
|---|---|
| `wait_for_input` | waits (deferred) for the day's `_SUCCESS` marker, up to {wait} h |
{_stage_rows(DAILY)}
| `gate` | fails the run unless every stage succeeded; tells the notifiers |

The run report (`reports/{purpose}/date=D/report.html` under the data root) and the audit
index (`reports/{purpose}/index.html`) say what each run did. README: "Scheduling with
Airflow".
"""


def maintenance_doc(d: Deployment) -> str:
    return f"""\
### {maintenance_description()}

Every day, for each purpose in turn ({", ".join(d.purposes)}): erasure requests remove the
user everywhere (every zone, the feature store, the consent log), then partitions past their
retention window are deleted. Both rewrite every date's partitions, so they hold the data
root's lock alone while daily stages hold it shared: a backfill and a purge never interleave.
A failed task goes to the notifiers ({_notify(d)}). Owner: {d.owner}.

| task | does |
|---|---|
{_stage_rows(MAINTENANCE)}
"""


def task_doc(name: str) -> str:
    """A stage task's doc (`doc_md`: Airflow's UI shows it; a plain `doc` shows as None)."""
    stage = STAGES[name]
    notes = []
    if stage.always:
        notes.append("runs whatever happened before it (`all_done`)")
    if stage.gated:
        notes.append("runs only once the day passed validation and the input guardrails")
    if stage.serial:
        notes.append("one date at a time: it writes a store every date shares")
    if stage.announces:
        notes.append("emits the feature view's Asset event when the release changed")
    if stage.alerts:
        notes.append("sends soft guardrail alerts to the notifiers; the run stays green")
    extra = "".join(f"\n- {n}" for n in notes)
    return f"**{name}**: {stage.does}.{extra}\n\nThe day processed: Rendered Templates, " \
           "`processed_day`."
