"""The run report: a JSON manifest and a readable HTML page per date.

Built only from the stages' typed run records (counts, key ids, ε, check outcomes), never from
the data, so it cannot carry a personal value. The funnel must balance:
rows in = rows out + dropped (per reason) + quarantined (per reason).

The report is a `pipeline.outputs.document.Document`: a list of sections, one function each,
with charts (`pipeline.outputs.charts`), rendered to HTML by the Jinja2 templates the audit
index shares and to PDF by ReportLab; `summary_rows` is also what the CLI prints.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from pipeline.access.changes import code_version, contract_hashes
from pipeline.core.context import RunContext
from pipeline.core.details import (
    FeaturesDetails,
    GeneralizeDetails,
    MinimizeDetails,
    PseudonymizeDetails,
)
from pipeline.core.errors import PipelineError
from pipeline.core.fs import DataPath, is_local
from pipeline.core.layout import partition_name
from pipeline.core.records import (
    Count,
    ErasureRecord,
    Funnel,
    GovernedBy,
    GuardrailRecord,
    KAnonymitySummary,
    LedgerRecord,
    Manifest,
    MonitorRecord,
    PiiSummary,
    PublishRecord,
    R,
    ReidentificationRecord,
    RetentionRecord,
    RowsInOut,
    StageOutcome,
    StageStats,
    ValidationRecord,
)
from pipeline.core.storage import atomic_write_bytes, atomic_write_json
from pipeline.outputs.access_matrix import record_matrix
from pipeline.outputs.audit import load_manifests, write_index
from pipeline.outputs.charts import run_charts
from pipeline.outputs.document import (
    Chart,
    Document,
    Link,
    Links,
    Note,
    Part,
    Section,
    Table,
    render_pdf,
)
from pipeline.outputs.document import render_html as render_document
from pipeline.outputs.governance import write_governance
from pipeline.outputs.notice import record_notice
from pipeline.stages import DAILY, FUNNEL, STAGES
from pipeline.transforms.consent import REASONS

PERIOD_WORDS = {"day": "daily", "week": "weekly"}
REUSED_NOTE = "Rerun: the stored release was returned; no new noise was drawn."


def dp_summary(dp: LedgerRecord | None) -> str:
    """What this run's DP release cost and what its budget window now holds, in words."""
    if dp is None:
        return "No DP release: the features stage did not run."
    if not dp.release_due and dp.reason:
        return f"No DP release: {dp.reason}."
    if not dp.release_due:
        return (f"No release due: the {PERIOD_WORDS[dp.period]} feature set is next released "
                f"on {dp.next_release}.")
    charged = dp.budget
    cost = f"{charged.unit} = {charged.value:g}"
    first, last = dp.covers or (dp.date, dp.date)
    data = f"data of {last}" if first == last else f"data of {first} to {last}"
    # a pure-DP budget has no δ to spend: "δ = 0 of 0" says nothing
    delta = f", δ = {dp.delta:g}" if dp.delta or dp.window_delta_budget else ""
    window_delta = (f" (δ = {dp.window_delta_spent:g} of {dp.window_delta_budget:g})"
                    if dp.window_delta_budget else "")
    text = (f"{dp.mechanism}; {data}; {cost}{delta} for this release. "
            f"{dp.accounting.capitalize()} accounting: "
            f"{dp.unit} = {dp.window_spent:g} of {dp.window_budget:g}{window_delta} spent in "
            f"the {dp.window_days}-day window ending {dp.date}")
    if dp.window_as_epsilon is not None:
        text += f", which is ({dp.window_as_epsilon:.3g}, {dp.window_as_epsilon_delta:g})-DP"
    return text + "." + (f" {REUSED_NOTE}" if dp.reused_stored_release else "")


def build_manifest(ctx: RunContext, day: date) -> Manifest:
    """The manifest of the date as its stages last left it (each stage's latest outcome; a
    rerun of some stages, as `rekey` does, keeps the others'). The row funnel is the run of
    funnel stages that last succeeded, up to the first that did not: no figure from a stage
    that failed, or from after one, is shown."""
    records = ctx.records(day)
    outcomes = _this_run(records.outcomes(), ctx.run_id)
    ran = {n for n, o in outcomes.items() if o.status == "succeeded"}
    stats = records.stats()
    chain: list[StageStats] = []
    for name in FUNNEL:
        if name not in ran or name not in stats:
            break
        chain.append(stats[name])
    for before, after in zip(chain, chain[1:], strict=False):
        if before.rows_out != after.rows_in:
            raise PipelineError(f"{day}: {before.stage} wrote {before.rows_out} rows but "
                                f"{after.stage} read {after.rows_in}")
    dropped: dict[str, Count] = {}
    for s in chain:
        for reason, n in s.dropped.items():
            dropped[reason] = int(dropped.get(reason, 0)) + n
    quarantined = chain[0].quarantined if chain else {}
    rows_in = chain[0].rows_in if chain else 0
    rows_out = chain[-1].rows_out if chain else 0
    balanced = rows_in == rows_out + sum(map(int, dropped.values())) + sum(quarantined.values())

    def record(kind: type[R], stage: str) -> R | None:  # only from a stage that finished
        finished = stage in outcomes and outcomes[stage].status != "running"
        return records.load(kind) if finished else None

    validation = record(ValidationRecord, "validate")
    publish = records.load(PublishRecord) if "publish" in ran else None
    shown = {s.stage: s for s in chain}
    gen, pseudo = shown.get("generalize"), shown.get("pseudonymize")
    return Manifest(
        date=str(day), purpose=ctx.cfg.purpose, run_id=ctx.run_id, outcomes=outcomes,
        funnel=Funnel(rows_in=rows_in, rows_out=rows_out, dropped=dropped,
                      quarantined=dict(quarantined), balanced=balanced,
                      last_stage=chain[-1].stage if chain else None),
        stages={s.stage: RowsInOut(rows_in=s.rows_in, rows_out=s.rows_out) for s in chain},
        pii=PiiSummary.from_stats(shown.get("detect_pii")),
        pseudonymization=pseudo.details_of(PseudonymizeDetails) if pseudo else None,
        k_anonymity=gen.details_of(GeneralizeDetails).summary() if gen else None,
        profiles=shown["minimize"].details_of(MinimizeDetails).profiles
        if "minimize" in shown else None,
        guardrails=record(GuardrailRecord, "guardrails"),
        validation=validation, erasure=record(ErasureRecord, "erase"),
        retention=record(RetentionRecord, "retention"),
        differential_privacy=record(LedgerRecord, "features"),
        feature_errors=stats["features"].details_of(FeaturesDetails).errors
        if "features" in stats and "features" in ran else None,
        published=all(n in ran for n in DAILY if not STAGES[n].always),
        feature_store=publish, monitoring=record(MonitorRecord, "monitor"),
        reidentification=record(ReidentificationRecord, "reidentify"))


def _this_run(outcomes: dict[str, StageOutcome], run_id: str) -> dict[str, StageOutcome]:
    """The outcomes the manifest shows: after a stage that failed in this run, an outcome an
    earlier run left (its validation, its release) is not this run's and is left out, so a
    blocked run never reads as if it had validated or released."""
    failed = [n for n, o in outcomes.items() if o.run_id == run_id and o.status == "failed"]
    if not failed:
        return outcomes
    order = list(STAGES)
    first = min(order.index(n) for n in failed)
    return {n: o for n, o in outcomes.items()
            if n not in STAGES or order.index(n) <= first or o.run_id == run_id}


def _count(n: Count | None) -> str:
    """A count with thousands separators, or as coarsened ("<10") in the external view."""
    return f"{n:,}" if isinstance(n, int) else str(n)


def summary_rows(m: Manifest) -> list[tuple[str, str]]:
    """The first screen: one line per question a reviewer asks first (also the CLI's)."""
    f, ka = m.funnel, m.k_anonymity or KAnonymitySummary()
    n, val = m.run_totals(), m.validation
    er, ret = m.erasure or ErasureRecord(), m.retention or RetentionRecord()
    return [
        ("Published", "yes" if m.published else "NO: publishing was blocked"),
        ("Rows", f"{_count(f.rows_in)} in = {_count(f.rows_out)} published + "
                 f"{_count(n.dropped)} dropped + {_count(n.quarantined)} quarantined "
                 f"({'balanced' if f.balanced else 'NOT balanced'})"),
        ("Personal data replaced in free text", f"{_count(n.pii_replaced)} values"),
        ("Input guardrails", _guardrail_summary(m.guardrails)),
        ("k-anonymity / ℓ-diversity", ka.achieved(ran=m.k_anonymity is not None)),
        ("Re-identification (insider join attack)", m.reidentification.describe().split(
            ": ", 1)[1] if m.reidentification else "not run"),
        ("Validation", f"{val.passed} of {len(val.checks)} checks passed"
         if val and val.checks else "not run"),
        ("Differential privacy", dp_summary(m.differential_privacy)),
        ("Erasure and retention", f"{er.requests} erasure request(s) on file, "
         f"{er.partitions_rewritten} partition(s) rewritten; {len(ret.purged)} "
         "partition(s) past retention deleted"),
        *([("Privacy notice", f"version {m.notice_version} in force (the audit index lists "
                              "every version and what changed)")]
          if m.notice_version is not None else []),
    ]


def _guardrail_summary(g: GuardrailRecord | None) -> str:
    if g is None:
        return "not checked"
    if g.breached:
        return "BREACHED: " + "; ".join(c.name for c in g.breached)
    held = f"held ({len(g.checks)} checks)"
    return held + (f"; accepted by the operator: {', '.join(c.name for c in g.accepted)}"
                   if g.accepted else "")


def _guardrails(m: Manifest) -> tuple[Part, ...]:
    g = m.guardrails
    if g is None:
        return ("Not checked in this run (it stopped before the guardrails).",)
    rows = tuple((c.name, c.measured_text(), c.limit, "held" if c.passed else
                  "accepted by the operator" if c.accepted else "BREACHED", c.note)
                 for c in g.checks)
    return ("What the day's input must look like before anything is charged to the privacy "
            "ledger or published (config guardrails).",
            Table(("Guardrail", "Measured", "Limit", "Outcome", "Note"), rows))


def _error(o: StageOutcome) -> str:
    return f"{o.error}: {o.message}" if o.message else str(o.error)


def blocked_by(m: Manifest) -> list[str]:
    """Why the run did not publish, stage by stage: what failed (and why), what never ran."""
    lines = []
    for name, stage in STAGES.items():
        o = m.outcomes.get(name)
        if o is not None and o.status == "failed":
            lines.append(f"Stage {name} failed: {_error(o)}")
        elif o is not None and o.status == "running" and not stage.always:
            lines.append(f"Stage {name} did not finish (killed or timed out)")
        elif o is None and not stage.always and not stage.maintenance:
            lines.append(f"Stage {name} did not run")
    return [] if m.published else lines


def _status(name: str, o: StageOutcome | None) -> str:
    if o is None:
        return "not run"
    if name == "report" and o.status == "running":
        return "writing this report"  # the report is written by the stage it reports on
    return o.status


def _stages(m: Manifest) -> tuple[Part, ...]:
    rows = tuple((name, _status(name, m.outcomes.get(name)),
                  _error(o) if (o := m.outcomes.get(name)) and o.error else "")
                 for name in STAGES)
    return ((f"Run {m.run_id}.",) if m.run_id else ()) + (
        Table(("Stage", "Outcome", "Error"), rows),)


def _header(m: Manifest, external: bool, links: tuple[Link, ...]) -> tuple[Part, ...]:
    out: list[Part] = [Note("Published" if m.published else "NOT published",
                            "ok" if m.published else "bad")]
    out += [Note(line, "bad") for line in blocked_by(m)]
    if m.validation and not m.validation.success:
        failed = [f"{c.expectation} ({c.column or 'table'})" for c in m.validation.failures]
        out.append(Note("Validation failed: " + "; ".join(failed), "bad"))
    out.append(Note("External view: no key ids, paths or per-column detail; counts under 10 "
                    "shown as <10." if external else "Internal view, with details. An "
                    "external view without them is in reports/<purpose>/external/.", "view"))
    g = m.governed_by
    if g is not None:
        out.append(Note(
            f"Made under code {g.code_version}, config sha256 {g.config_sha256[:12]}, purpose "
            f"file sha256 {g.purpose_sha256[:12]}" + (
                f", access matrix version {g.access_matrix_version}"
                if g.access_matrix_version else "") + ".", "view"))
    out.append(Links(links))
    return tuple(out)


def _funnel(m: Manifest, charts: dict[str, Chart]) -> tuple[Part, ...]:
    f = m.funnel
    rows: list[tuple[str, Count | str]] = [("Rows in (raw lines)", f.rows_in)]
    rows += [(f"Quarantined: {r}", n) for r, n in sorted(f.quarantined.items())]
    rows += [(f"Dropped: {r}", n) for r, n in sorted(f.dropped.items())]
    out = (f"Rows out (events of the {m.profiles.users_published:,} users whose "
           "profiles were published)" if m.profiles else "Rows out (published per-event table)")
    rows += [(out, f.rows_out), ("Balanced", "yes" if f.balanced else "NO")]
    return _chart(charts, "funnel") + (Table(("Step", "Rows"), tuple(rows)),)


def _chart(charts: dict[str, Chart], name: str) -> tuple[Part, ...]:
    return (charts[name],) if name in charts else ()


def _pii(m: Manifest, charts: dict[str, Chart]) -> tuple[Part, ...]:
    pii = m.pii
    found = pii.found or {}
    by_column = tuple((col, entity, n) for col, per in sorted((pii.found_by_column or {}).items())
                      for entity, n in sorted(per.items()))
    out: list[Part] = [Table(("Entity type", "Occurrences replaced"),
                             tuple(sorted(found.items())))
                       if found else "None found in this run."]
    out += _chart(charts, "pii")
    if by_column:
        out.append(Table(("Column", "Entity type", "Occurrences"), by_column))
    out.append("Each value is replaced by a keyed token (<TYPE:letters>"
               + (f", key id {pii.token_key_id}" if pii.token_key_id else "")
               + "): equal values share a token.")
    out.append("Direct identifier columns removed: "
               + (", ".join(pii.dropped_columns or []) or "none") + ".")
    if pii.column_scan is not None:
        flagged = tuple((c.column, ", ".join(c.reasons),
                         ", ".join(f"{e} ({n:,})" for e, n in c.entities.items()) or "-",
                         f"{c.share_with_pii:.1%} of {c.sampled:,}", c.action)
                        for c in pii.column_scan.flagged)
        out.append("Columns not tagged as PII, checked by name and content: "
                   + (", ".join(pii.column_scan.checked) or "none") + ".")
        out.append(Table(("Column", "Flagged by", "Entities in sample",
                          "Sampled values with PII", "Action"), flagged)
                   if flagged else "None held PII.")
    return tuple(out)


def _pseudonymization(m: Manifest) -> tuple[Part, ...]:
    ps = m.pseudonymization or PseudonymizeDetails()
    return ((ps.algorithm or "") + (
        f" with key id {ps.key_id}, key derived per purpose ({ps.purpose or ''})."
        if ps.key_id else ", with a secret key derived per purpose."),)


def _k_anonymity(m: Manifest, charts: dict[str, Chart]) -> tuple[Part, ...]:
    ka = m.k_anonymity or KAnonymitySummary()
    l_sentence = ("no sensitive attribute declared." if not ka.sensitive_attribute else
                  f"ℓ-diversity of {ka.sensitive_attribute}: required "
                  f"{ka.l_required or 'none'}, achieved "
                  f"{'n/a' if ka.l_achieved is None else ka.l_achieved}.")
    loss = []
    for qi, info in sorted((ka.information_loss or {}).items()):
        detail = (f"mean resolution {info.mean_resolution}, mean cell "
                  f"{info.mean_cell_area_km2} km²" if info.mean_resolution is not None else "")
        levels = ", ".join(f"level {lv}: {_count(n)}" for lv, n in info.rows_per_level.items())
        share = "" if info.mean_level_share is None else f"{info.mean_level_share:.2f}"
        loss.append((qi, share, levels, detail))
    text = (f"Over {', '.join(ka.quasi_identifiers or [])}: "
            f"{ka.achieved(ran=m.k_anonymity is not None)}; {l_sentence} Groups short of that "
            f"were generalized further ({', '.join(ka.generalize_order or [])}, in that "
            f"order), then suppressed: {_count(ka.rows_suppressed)} rows "
            f"({(ka.share_rows_suppressed or 0):.1%}) of {_count(ka.users_suppressed)} users "
            f"in {_count(ka.groups_suppressed)} groups; {_count(ka.groups_kept)} groups "
            "published.")
    return (text, *_chart(charts, "k_levels"),
            Table(("Quasi-identifier", "Generalization (0 = finest, 1 = coarsest)",
                   "Rows per level", "Detail"), tuple(loss)), *_profiles(m))


def _profiles(m: Manifest) -> tuple[Part, ...]:
    """What k over each user's whole profile cost (a profile purpose only)."""
    pr = m.profiles
    if not pr:
        return ()
    kept = tuple((c, f"{share:.1%}" if share is not None else "n/a")
                 for c, share in pr.exact_share.items())
    return (f"Published as one profile per user and {pr.epoch} (a new pseudonym each "
            f"{pr.epoch}), k-anonymous over every published column, because an insider "
            f"holding the raw events can recompute each: {pr.users_published:,} of "
            f"{pr.users:,} users published in {pr.groups:,} groups, {pr.users_suppressed:,} "
            "suppressed. Share of published users whose value was kept exact (the rest gave "
            "it up as their group fell short of k):",
            Table(("Profile column", "Kept exact"), kept))


def _data_protection(m: Manifest) -> tuple[Part, ...]:
    """Consent drops, erasure and retention actions of the run, as counts and partitions."""
    dropped = m.funnel.dropped
    consent = tuple((reason.replace("_", " "), dropped.get(reason, 0)) for reason in REASONS)
    er, ret = m.erasure or ErasureRecord(not_touched={}), m.retention or RetentionRecord()
    removed, kept = tuple(sorted(er.removed.items())), tuple(sorted(er.not_touched.items()))
    purged = tuple((p.area, p.date, f"{p.bytes:,} bytes", f"{p.retention_days} days")
                   for p in ret.purged)
    out: list[Part] = [
        Table(("Events not used for lack of consent", "Rows"), consent),
        f"Erasure requests on file: {_count(er.requests)}; users who have withdrawn "
        f"consent: {_count(er.withdrawn_users)}; who paused personalization (nothing "
        f"deleted, nothing new used): {_count(er.paused_users)}; who reset their profile "
        f"(what was derived before the reset erased, a new pseudonym since): "
        f"{_count(er.reset_users)}; partitions rewritten without them this run: "
        f"{_count(er.partitions_rewritten)}."]
    if removed:
        out.append(Table(("Area", "Rows or lines removed this run"), removed))
    if kept:
        out.append(Table(("Kept as is", "Why"), kept))
    out.append(Table(("Area purged (retention)", "Partition date", "Size", "Window"), purged)
               if purged else "Retention: no partition had passed its window.")
    return tuple(out)


def _differential_privacy(m: Manifest, charts: dict[str, Chart]) -> tuple[Part, ...]:
    """What the release cost, the budget over time, and each feature's error: expected (the
    planner's, at this release's users per cohort) next to realized."""
    out: list[Part] = [dp_summary(m.differential_privacy)]
    out += _chart(charts, "budget")
    if m.feature_errors:
        out += _chart(charts, "feature_errors")
        out.append(Table(("Feature", "Expected 95% error (plan)",
                          "Median 95% error bound of the release"),
                         tuple((e.label, f"{e.expected_error95:.4g}",
                                "" if e.median_error95 is None else f"{e.median_error95:.4g}")
                               for e in sorted(m.feature_errors, key=lambda e: e.label))))
    return tuple(out)


def _drift(m: Manifest) -> tuple[Part, ...]:
    """The release against the one before (tested against both releases' noise) and the
    published columns against the day before."""
    mon = m.monitoring
    if mon is None:
        return ("Not monitored: the day was not published.",)
    out: list[Part] = []
    fd = mon.features
    if fd is None:
        out.append(f"DP release: {mon.features_note}.")
    else:
        verdict = (f"{fd.significant} test(s) found drift" if fd.drifted
                   else "no drift beyond what noise and day-to-day variation give")
        out.append(
            f"DP release of {fd.release_date} against {fd.previous_date}: {fd.tests:,} tests "
            f"over {fd.cohorts_compared:,} cohorts (each cohort, each region, age band and "
            f"device type, each feature), false alarms held at {fd.alpha:g} per comparison: "
            f"{verdict}. {fd.cohorts_appeared} cohort(s) appeared, {fd.cohorts_disappeared} "
            "disappeared.")
        if fd.findings:
            out.append(Table(
                ("Feature", "Where", "Before", "Now", "z (calibrated)", "p-value"),
                tuple((f.value, f.where, "" if f.before is None else f"{f.before:.4g}",
                       "" if f.now is None else f"{f.now:.4g}", f"{f.z:+.2f}",
                       f"{f.p_value:.2g}") for f in fd.findings)))
        out.append(Table(
            ("Feature", "Cohorts compared", "Day-to-day variation beyond noise",
             "Largest |z|", "p-value (all cohorts)"),
            tuple((v.value, v.cohorts, f"{v.variation_share:.0%}", f"{v.max_abs_z:.2f}",
                   f"{v.p_value:.2g}") for v in fd.values)))
    if mon.columns:
        out.append(f"Published columns against {mon.columns_against or ''} (Jensen-Shannon "
                   "distance and population stability index; drift is a shift above either "
                   "threshold that the column's usual day-to-day variation does not explain, "
                   "by a G-test calibrated on earlier days):")
        out.append(Table(
            ("Column", "Values", "Jensen-Shannon", "PSI", "p-value",
             "Usual variation (× a simple sample's)", "Result"),
            tuple((c.column, c.categories, f"{c.jensen_shannon:.3f}", f"{c.psi:.3f}",
                   "not judged yet" if c.p_value is None else f"{c.p_value:.2g}",
                   "" if c.inflation is None else f"{c.inflation:.1f}×",
                   "DRIFT" if c.drifted else "stable") for c in mon.columns)))
        if mon.columns_note:
            out.append(f"{mon.columns_note}.")
    elif mon.columns_note:
        out.append(f"Published columns: {mon.columns_note}.")
    return tuple(out)


def _disparity(m: Manifest) -> tuple[Part, ...]:
    """Per region, age band and device type: how much worse the release's values are."""
    d = m.monitoring.disparity if m.monitoring else None
    if d is None:
        return ("No release on this date.",)
    head = (f"Worst group against the whole release: {d.worst_unreliable_group} has "
            f"{_ratio(d.worst_unreliable_ratio)} the share of values flagged unreliable; "
            f"{d.worst_error_group} {_ratio(d.worst_error_ratio)} the median relative error. "
            "Small groups pay more for the same privacy: the same noise is larger relative "
            "to their values.")
    rows = tuple((g.dimension, g.group, g.cohorts, g.users, f"{g.unreliable_share:.0%}",
                  "" if g.median_relative_error is None else f"{g.median_relative_error:.2f}")
                 for g in d.groups)
    return (head, Table(("Dimension", "Group", "Cohorts", "Users (released)",
                         "Values unreliable", "Median relative 95% error"), rows))


def _k_groups(m: Manifest) -> tuple[Part, ...]:
    """Per region, age band and device type: what k-anonymity suppressed and coarsened."""
    ka = m.k_anonymity
    if ka is None or not ka.group_costs:
        return ()
    head = (f"k-anonymity: {ka.worst_suppression_group or 'no group'} lost "
            f"{_ratio(ka.worst_suppression_ratio)} the overall share of rows to suppression. "
            "Generalization: the mean level its kept rows were published at (0 as fine as "
            "configured, 1 the coarsest).")
    rows = tuple((g.dimension, g.group, g.rows, f"{g.suppressed_share:.0%}",
                  f"{g.generalization:.2f}") for g in ka.group_costs)
    return (head, Table(("Dimension", "Group", "Rows before k-anonymity", "Suppressed",
                         "Generalization"), rows))


def _reidentification(m: Manifest) -> tuple[Part, ...]:
    r = m.reidentification
    if r is None:
        return ("Not run: the day did not reach the gate.",)
    if not r.applicable:
        return (f"Not applicable: {r.note}.",)
    head = (f"An insider holding the day's generalized events under their staging "
            f"pseudonyms attacked the table before it was published: at most {r.rate:.1%} of "
            f"people singled out ({r.worst_attack}), against the limit {r.limit:.1%} "
            f"(1/k, k = {r.k}): {'within' if r.passed else 'BREACHED: publishing blocked'}.")
    rows = tuple((a.attack, a.targets, a.singled_out, f"{a.rate:.1%}") for a in r.attacks)
    return (head,) + ((Table(("Attack", "People tried", "Singled out", "Rate"), rows),)
                      if rows else ())


def _alerts(m: Manifest) -> tuple[Part, ...]:
    mon = m.monitoring
    if mon is None:
        return ("Not monitored: the day was not published.",)
    if not mon.alerts:
        return ("No soft guardrail breached" + (
            f" ({mon.alerts_note})" if mon.alerts_note else "") + ".",)
    return (Table(("Guardrail", "Where", "Measured", "Threshold", "Note"),
                  tuple((a.guardrail, a.subject, f"{a.measured:g}", a.threshold, a.note)
                        for a in mon.alerts)),)


def _ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def observed_text(value: object) -> str:
    """A check's observed value as a reviewer reads it: `rows with pii: 0; entities: none`,
    not a Python repr."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, dict):
        return "; ".join(f"{str(k).replace('_', ' ')}: {observed_text(v) or 'none'}"
                         for k, v in value.items()) or "none"
    if isinstance(value, list | tuple | set):
        return ", ".join(observed_text(v) for v in value) or "none"
    return str(value)


def _validation(m: Manifest, data_docs: str | None) -> tuple[Part, ...]:
    checks = tuple((c.expectation, c.column or "(table)", "pass" if c.success else "FAIL",
                    observed_text(c.observed),
                    c.unexpected_count if c.unexpected_count is not None else "")
                   for c in (m.validation.checks if m.validation else []))
    out: tuple[Part, ...] = (Table(("Expectation", "Column", "Result", "Observed",
                                    "Unexpected rows"), checks),)
    if data_docs:
        out += (Link("Great Expectations Data Docs", data_docs,
                     "(every check with its details; opens offline)"),)
    return out


def report_document(m: Manifest, data_docs: str | None, *, external: bool = False,
                    history: tuple[Manifest, ...] = (), pdf: str | None = None) -> Document:
    """The run report as a document (`render_html`, `render_pdf`). `history`: the runs up to
    this one, oldest first, for the charts over time; `pdf`: the PDF's relative link."""
    charts = run_charts(m, history or (m,))
    links = (Link("All runs", "../index.html"),) + ((Link("PDF", pdf),) if pdf else ())
    sections = (
        Section("Summary", (Table(("Question", "Answer"), tuple(summary_rows(m))),)),
        Section("Stages", _stages(m)),
        Section("Row funnel", _funnel(m, charts)),
        Section("Input guardrails", _guardrails(m)),
        Section("Personal data found in free text", _pii(m, charts)),
        Section("Pseudonymization", _pseudonymization(m)),
        Section("k-anonymity and ℓ-diversity", _k_anonymity(m, charts)),
        Section("Consent, erasure and retention", _data_protection(m)),
        Section("Differential privacy", _differential_privacy(m, charts)),
        Section("Validation", _validation(m, data_docs)),
        Section("Re-identification check", _reidentification(m)),
        Section("Drift", _drift(m)),
        Section("What privacy costs each group", _disparity(m) + _k_groups(m)),
        Section("Soft guardrails (alerts)", _alerts(m)),
    )
    return Document(title=f"Privacy pipeline run {m.date} ({m.purpose})",
                    heading=f"Run {m.date}: purpose {m.purpose}",
                    intro=_header(m, external, links), sections=sections)


def render_html(m: Manifest, data_docs: str | None, *, external: bool = False,
                history: tuple[Manifest, ...] = (), pdf: str | None = None) -> str:
    return render_document(report_document(m, data_docs, external=external, history=history,
                                           pdf=pdf))


def _governed_by(ctx: RunContext, reports: DataPath, day: date) -> GovernedBy:
    """The hashes of what the run was made under; a new access matrix version if it changed."""
    hashes = contract_hashes(ctx)
    matrix = record_matrix(reports, ctx.policy, day) if ctx.policy else None
    return GovernedBy(code_version=code_version(), config_sha256=hashes["config"],
                      purpose_sha256=hashes["purpose"],
                      access_matrix_sha256=hashes.get("access"),
                      access_matrix_version=matrix.version if matrix else None)


def _docs_link(docs: str | None, report_dir: DataPath) -> str | None:
    """The Data Docs index as a link from the report: relative when both are on this machine
    (the bundle opens from wherever it is copied), else a file URI."""
    if not docs:
        return None
    if is_local(report_dir):
        return Path(os.path.relpath(docs, str(report_dir))).as_posix()
    return Path(docs).as_uri()


def write_report(ctx: RunContext, day: date) -> DataPath:
    reports = ctx.area("reports", "write")
    notice = record_notice(reports, ctx.cfg, day)  # a new version if the contracts changed
    manifest = build_manifest(ctx, day).model_copy(update={
        "notice_version": notice.version, "governed_by": _governed_by(ctx, reports, day)})
    out = reports / partition_name(day)
    atomic_write_json(out / "manifest.json", manifest.model_dump(mode="json"))
    history = tuple(h for h in load_manifests(reports) if h.date <= manifest.date)
    docs = manifest.validation.data_docs_index if manifest.validation else None
    pdf = "report.pdf" if ctx.cfg.reports.pdf else None
    internal = report_document(manifest, _docs_link(docs, out), history=history, pdf=pdf)
    external_dir = reports / "external" / partition_name(day)
    external = report_document(manifest.external_view(), None, external=True,
                               history=tuple(h.external_view() for h in history), pdf=pdf)
    for folder, document in ((out, internal), (external_dir, external)):
        atomic_write_bytes(folder / "report.html", render_document(document).encode())
        if pdf:
            atomic_write_bytes(folder / pdf, render_pdf(document))
    write_governance(reports, ctx.cfg, ctx.policy, load_manifests(reports), day)
    write_index(reports, ctx.policy)
    if not manifest.funnel.balanced:
        raise PipelineError(f"{day}: row funnel does not balance; see {out / 'manifest.json'}")
    return out / "report.html"
