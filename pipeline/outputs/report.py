"""The run report: a JSON manifest and a readable HTML page per date.

Built only from the stages' typed run records (counts, key ids, ε, check outcomes), never from
the data, so it cannot carry a personal value. The funnel must balance:
rows in = rows out + dropped (per reason) + quarantined (per reason).

The page is a list of sections, one function each, in the shell `pipeline.outputs.html.page`
that the audit index shares; `summary_rows` is also what the CLI prints.
"""

from __future__ import annotations

from datetime import date
from html import escape
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
from pipeline.core.fs import DataPath
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
from pipeline.outputs.governance import write_governance
from pipeline.outputs.html import html_table, page
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


def _guardrails(m: Manifest) -> str:
    g = m.guardrails
    if g is None:
        return "<p>Not checked in this run (it stopped before the guardrails).</p>"
    rows = [(c.name, c.measured_text(), c.limit, "held" if c.passed else
             "accepted by the operator" if c.accepted else "BREACHED", c.note)
            for c in g.checks]
    return ("<p>What the day's input must look like before anything is charged to the "
            "privacy ledger or published (config <code>guardrails</code>).</p>"
            + html_table(rows, ("Guardrail", "Measured", "Limit", "Outcome", "Note")))


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


def _stages(m: Manifest) -> str:
    rows = []
    for name in STAGES:
        o = m.outcomes.get(name)
        rows.append((name, o.status if o else "not run",
                     _error(o) if o and o.error else ""))
    run = f"<p>Run <code>{escape(m.run_id)}</code>.</p>\n" if m.run_id else ""
    return (run + html_table(rows, ("Stage", "Outcome", "Error")))


def _header(m: Manifest, external: bool) -> str:
    status = "Published" if m.published else "NOT published"
    why = "".join(f"<p class=bad>{escape(line)}</p>" for line in blocked_by(m))
    if m.validation and not m.validation.success:
        failed = [f"{c.expectation} ({c.column or 'table'})" for c in m.validation.failures]
        why += "<p class=bad>Validation failed: " + escape("; ".join(failed)) + "</p>"
    view = ("External view: no key ids, paths or per-column detail; counts under 10 shown as "
            "&lt;10." if external else "Internal view, with details. An external view without "
            "them is in <code>reports/external/</code>.")
    g = m.governed_by
    made = "" if g is None else (
        f"<p class=view>Made under code {escape(g.code_version)}, config sha256 "
        f"{escape(g.config_sha256[:12])}, purpose file sha256 {escape(g.purpose_sha256[:12])}"
        + (f", access matrix version {g.access_matrix_version}" if g.access_matrix_version
           else "") + ".</p>")
    return (f"<h1>Run {escape(m.date)}: purpose <em>{escape(m.purpose)}</em></h1>\n"
            f"<p class=\"{'ok' if m.published else 'bad'}\">{status}</p>{why}\n"
            f"<p class=view>{view} <a href=\"../index.html\">All runs</a></p>{made}")


def _funnel(m: Manifest) -> str:
    f = m.funnel
    rows: list[tuple[str, Count]] = [("Rows in (raw lines)", f.rows_in)]
    rows += [(f"Quarantined: {r}", n) for r, n in sorted(f.quarantined.items())]
    rows += [(f"Dropped: {r}", n) for r, n in sorted(f.dropped.items())]
    out = (f"Rows out (events of the {m.profiles.users_published:,} users whose "
           "profiles were published)" if m.profiles else "Rows out (published per-event table)")
    rows += [(out, f.rows_out),
             ("Balanced", "yes" if f.balanced else "NO")]
    return html_table(rows, ("Step", "Rows"))


def _pii(m: Manifest) -> str:
    pii = m.pii
    found = pii.found or {}
    by_column = [(col, entity, n) for col, per in sorted((pii.found_by_column or {}).items())
                 for entity, n in sorted(per.items())]
    tokens = ("<p>Each value is replaced by a keyed token (<code>&lt;TYPE:letters&gt;</code>"
              + (f", key id <code>{escape(pii.token_key_id)}</code>" if pii.token_key_id
                 else "")
              + "): equal values share a token.</p>")
    scan = ""
    if pii.column_scan is not None:
        flagged = [(c.column, ", ".join(c.reasons),
                    ", ".join(f"{e} ({n})" for e, n in c.entities.items()) or "-",
                    f"{c.share_with_pii:.1%} of {c.sampled}", c.action)
                   for c in pii.column_scan.flagged]
        scan = ("<h3>Columns not tagged as PII, checked by name and content</h3>"
                f"<p>Checked: {escape(', '.join(pii.column_scan.checked) or 'none')}.</p>"
                + (html_table(flagged, ("Column", "Flagged by", "Entities in sample",
                                        "Sampled values with PII", "Action"))
                   if flagged else "<p>None held PII.</p>"))
    return ((html_table(sorted(found.items()), ("Entity type", "Occurrences replaced"))
             if found else "<p>None.</p>")
            + "\n" + (html_table(by_column, ("Column", "Entity type", "Occurrences"))
                      if by_column else "")
            + f"\n{tokens}\n<p>Direct identifier columns removed: "
            f"{escape(', '.join(pii.dropped_columns or []))}</p>\n{scan}")


def _pseudonymization(m: Manifest) -> str:
    ps = m.pseudonymization or PseudonymizeDetails()
    return "<p>" + escape(ps.algorithm or "") + (
        f" with key id <code>{escape(ps.key_id)}</code>, key derived per purpose "
        f"({escape(ps.purpose or '')})." if ps.key_id else
        ", with a secret key derived per purpose.") + "</p>"


def _k_anonymity(m: Manifest) -> str:
    ka = m.k_anonymity or KAnonymitySummary()
    if not ka.sensitive_attribute:
        l_sentence = "no sensitive attribute declared."
    else:
        l_sentence = escape(f"ℓ-diversity of {ka.sensitive_attribute}: required "
                            f"{ka.l_required or 'none'}, achieved "
                            f"{'n/a' if ka.l_achieved is None else ka.l_achieved}.")
    loss = []
    for qi, info in sorted((ka.information_loss or {}).items()):
        detail = (f"mean resolution {info.mean_resolution}, mean cell "
                  f"{info.mean_cell_area_km2} km²" if info.mean_resolution is not None else "")
        levels = ", ".join(f"level {lv}: {n}" for lv, n in info.rows_per_level.items())
        share = "" if info.mean_level_share is None else info.mean_level_share
        loss.append((qi, share, levels, detail))
    return f"""<p>Over {escape(", ".join(ka.quasi_identifiers or []))}:
{escape(ka.achieved(ran=m.k_anonymity is not None))}; {l_sentence}
Groups short of that were generalized further
({escape(", ".join(ka.generalize_order or []))}, in that order), then suppressed:
{escape(str(ka.rows_suppressed))} rows
({escape(f"{(ka.share_rows_suppressed or 0):.1%}")}) of
{escape(str(ka.users_suppressed))} users in {escape(str(ka.groups_suppressed))}
groups; {escape(str(ka.groups_kept))} groups published.</p>
{html_table(loss, ("Quasi-identifier", "Generalization (0 = finest, 1 = coarsest)",
                   "Rows per level", "Detail"))}{_profiles(m)}"""


def _profiles(m: Manifest) -> str:
    """What k over each user's whole profile cost (a profile purpose only)."""
    pr = m.profiles
    if not pr:
        return ""
    kept = [(c, f"{share:.1%}" if share is not None else "n/a")
            for c, share in pr.exact_share.items()]
    return f"""
<p>Published as one profile per user and {escape(pr.epoch)} (a new pseudonym each
{escape(pr.epoch)}), k-anonymous over every published column, because an insider
holding the raw events can recompute each: {escape(f"{pr.users_published:,}")} of
{escape(f"{pr.users:,}")} users published in {escape(f"{pr.groups:,}")}
groups, {escape(f"{pr.users_suppressed:,}")} suppressed. Share of published users
whose value was kept exact (the rest gave it up as their group fell short of k):</p>
{html_table(kept, ("Profile column", "Kept exact"))}"""


def _data_protection(m: Manifest) -> str:
    """Consent drops, erasure and retention actions of the run, as counts and partitions."""
    dropped = m.funnel.dropped
    consent = [(reason.replace("_", " "), dropped.get(reason, 0)) for reason in REASONS]
    er, ret = m.erasure or ErasureRecord(not_touched={}), m.retention or RetentionRecord()
    removed, kept = sorted(er.removed.items()), sorted(er.not_touched.items())
    purged = [(p.area, p.date, f"{p.bytes:,} bytes", f"{p.retention_days} days")
              for p in ret.purged]
    return (
        html_table(consent, ("Events not used for lack of consent", "Rows"))
        + f"<p>Erasure requests on file: {escape(str(er.requests))}; users who have "
          f"withdrawn consent: {escape(str(er.withdrawn_users))}; who paused "
          f"personalization (nothing deleted, nothing new used): "
          f"{escape(str(er.paused_users))}; who reset their profile (what was derived "
          f"before the reset erased, a new pseudonym since): {escape(str(er.reset_users))}; "
          "partitions "
          f"rewritten without them this run: {escape(str(er.partitions_rewritten))}."
          "</p>"
        + (html_table(removed, ("Area", "Rows or lines removed this run")) if removed else "")
        + (html_table(kept, ("Kept as is", "Why")) if kept else "")
        + (html_table(purged, ("Area purged (retention)", "Partition date", "Size", "Window"))
           if purged else "<p>Retention: no partition had passed its window.</p>"))


def _feature_errors(m: Manifest) -> str:
    """Expected error (the planner's, at this release's users per cohort) next to realized."""
    if not m.feature_errors:
        return ""
    rows = [(e.label, f"{e.expected_error95:.4g}", "" if e.median_error95 is None
             else f"{e.median_error95:.4g}")
            for e in sorted(m.feature_errors, key=lambda e: e.label)]
    return html_table(rows, ("Feature", "Expected 95% error (plan)",
                             "Median 95% error bound of the release"))


def _drift(m: Manifest) -> str:
    """The release against the one before (tested against both releases' noise) and the
    published columns against the day before."""
    mon = m.monitoring
    if mon is None:
        return "<p>Not monitored: the day was not published.</p>"
    out = []
    fd = mon.features
    if fd is None:
        out.append(f"<p>DP release: {escape(mon.features_note)}.</p>")
    else:
        verdict = (f"{fd.significant} test(s) found drift" if fd.drifted
                   else "no drift beyond what noise and day-to-day variation give")
        out.append(
            f"<p>DP release of {escape(fd.release_date)} against {escape(fd.previous_date)}: "
            f"{fd.tests:,} tests over {fd.cohorts_compared:,} cohorts (each cohort, each "
            f"region, age band and device type, each feature), false alarms held at "
            f"{fd.alpha:g} per comparison: <strong>{escape(verdict)}</strong>. "
            f"{fd.cohorts_appeared} cohort(s) appeared, {fd.cohorts_disappeared} "
            "disappeared.</p>")
        if fd.findings:
            out.append(html_table(
                [(f.value, f.where, "" if f.before is None else f"{f.before:.4g}",
                  "" if f.now is None else f"{f.now:.4g}", f"{f.z:+.2f}", f"{f.p_value:.2g}")
                 for f in fd.findings],
                ("Feature", "Where", "Before", "Now", "z (calibrated)", "p-value")))
        out.append(html_table(
            [(v.value, f"{v.cohorts:,}", f"{v.variation_share:.0%}", f"{v.max_abs_z:.2f}",
              f"{v.p_value:.2g}") for v in fd.values],
            ("Feature", "Cohorts compared", "Day-to-day variation beyond noise",
             "Largest |z|", "p-value (all cohorts)")))
    if mon.columns:
        out.append(f"<p>Published columns against {escape(mon.columns_against or '')} "
                   "(Jensen-Shannon distance and population stability index; drift is a "
                   "shift above either threshold that the column's usual day-to-day "
                   "variation does not explain, by a G-test calibrated on earlier days):</p>")
        out.append(html_table(
            [(c.column, f"{c.categories:,}", f"{c.jensen_shannon:.3f}", f"{c.psi:.3f}",
              "not judged yet" if c.p_value is None else f"{c.p_value:.2g}",
              "" if c.inflation is None else f"{c.inflation:.1f}×",
              "DRIFT" if c.drifted else "stable") for c in mon.columns],
            ("Column", "Values", "Jensen-Shannon", "PSI", "p-value",
             "Usual variation (× a simple sample's)", "Result")))
        if mon.columns_note:
            out.append(f"<p>{escape(mon.columns_note)}.</p>")
    elif mon.columns_note:
        out.append(f"<p>Published columns: {escape(mon.columns_note)}.</p>")
    return "\n".join(out)


def _disparity(m: Manifest) -> str:
    """Per region, age band and device type: how much worse the release's values are."""
    d = m.monitoring.disparity if m.monitoring else None
    if d is None:
        return "<p>No release on this date.</p>"
    head = (f"<p>Worst group against the whole release: {escape(d.worst_unreliable_group)} "
            f"has {_ratio(d.worst_unreliable_ratio)} the share of values flagged unreliable; "
            f"{escape(d.worst_error_group)} {_ratio(d.worst_error_ratio)} the median relative "
            "error. Small groups pay more for the same privacy: the same noise is larger "
            "relative to their values.</p>")
    rows = [(g.dimension, g.group, f"{g.cohorts:,}", f"{g.users:,}",
             f"{g.unreliable_share:.0%}",
             "" if g.median_relative_error is None else f"{g.median_relative_error:.2f}")
            for g in d.groups]
    return head + html_table(rows, ("Dimension", "Group", "Cohorts", "Users (released)",
                                    "Values unreliable", "Median relative 95% error"))


def _k_groups(m: Manifest) -> str:
    """Per region, age band and device type: what k-anonymity suppressed and coarsened."""
    ka = m.k_anonymity
    if ka is None or not ka.group_costs:
        return ""
    head = (f"<p>k-anonymity: {escape(ka.worst_suppression_group or 'no group')} lost "
            f"{_ratio(ka.worst_suppression_ratio)} the overall share of rows to suppression. "
            "Generalization: the mean level its kept rows were published at (0 as fine as "
            "configured, 1 the coarsest).</p>")
    rows = [(g.dimension, g.group, _count(g.rows), f"{g.suppressed_share:.0%}",
             f"{g.generalization:.2f}") for g in ka.group_costs]
    return head + html_table(rows, ("Dimension", "Group", "Rows before k-anonymity",
                                    "Suppressed", "Generalization"))


def _reidentification(m: Manifest) -> str:
    r = m.reidentification
    if r is None:
        return "<p>Not run: the day did not reach the gate.</p>"
    if not r.applicable:
        return f"<p>Not applicable: {escape(r.note)}.</p>"
    head = (f"<p>An insider holding the day's generalized events under their staging "
            f"pseudonyms attacked the table before it was published: at most "
            f"<strong>{r.rate:.1%}</strong> of people singled out ({escape(r.worst_attack)}), "
            f"against the limit {r.limit:.1%} (1/k, k = {r.k}): "
            f"<strong>{'within' if r.passed else 'BREACHED: publishing blocked'}</strong>.</p>")
    rows = [(a.attack, _count(a.targets), _count(a.singled_out), f"{a.rate:.1%}")
            for a in r.attacks]
    return head + (html_table(rows, ("Attack", "People tried", "Singled out", "Rate"))
                   if rows else "")


def _alerts(m: Manifest) -> str:
    mon = m.monitoring
    if mon is None:
        return "<p>Not monitored: the day was not published.</p>"
    if not mon.alerts:
        return "<p>No soft guardrail breached" + (
            f" ({escape(mon.alerts_note)})" if mon.alerts_note else "") + ".</p>"
    return html_table([(a.guardrail, a.subject, f"{a.measured:g}", a.threshold, a.note)
                       for a in mon.alerts],
                      ("Guardrail", "Where", "Measured", "Threshold", "Note"))


def _ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def _validation(m: Manifest, data_docs: str | None) -> str:
    checks = [(c.expectation, c.column or "(table)", "pass" if c.success else "FAIL",
               c.observed if c.observed is not None else "",
               c.unexpected_count if c.unexpected_count is not None else "")
              for c in (m.validation.checks if m.validation else [])]
    docs = (f'<p><a href="{escape(data_docs)}">Great Expectations Data Docs</a></p>'
            if data_docs else "")
    return html_table(checks, ("Expectation", "Column", "Result", "Observed",
                               "Unexpected rows")) + f"\n{docs}"


def render_html(m: Manifest, data_docs: str | None, *, external: bool = False) -> str:
    sections = [
        ("Summary", html_table(summary_rows(m), ("Question", "Answer"))),
        ("Stages", _stages(m)),
        ("Row funnel", _funnel(m)),
        ("Input guardrails", _guardrails(m)),
        ("Personal data found in free text", _pii(m)),
        ("Pseudonymization", _pseudonymization(m)),
        ("k-anonymity and ℓ-diversity", _k_anonymity(m)),
        ("Consent, erasure and retention", _data_protection(m)),
        ("Differential privacy", f"<p>{escape(dp_summary(m.differential_privacy))}</p>"
                                 + _feature_errors(m)),
        ("Validation", _validation(m, data_docs)),
        ("Re-identification check", _reidentification(m)),
        ("Drift", _drift(m)),
        ("What privacy costs each group", _disparity(m) + _k_groups(m)),
        ("Soft guardrails (alerts)", _alerts(m)),
    ]
    body = "\n".join([_header(m, external),
                      *(f"<h2>{escape(title)}</h2>\n{html}" for title, html in sections)])
    return page(f"Privacy pipeline run {m.date} ({m.purpose})", body)


def _governed_by(ctx: RunContext, reports: DataPath, day: date) -> GovernedBy:
    """The hashes of what the run was made under; a new access matrix version if it changed."""
    hashes = contract_hashes(ctx)
    matrix = record_matrix(reports, ctx.policy, day) if ctx.policy else None
    return GovernedBy(code_version=code_version(), config_sha256=hashes["config"],
                      purpose_sha256=hashes["purpose"],
                      access_matrix_sha256=hashes.get("access"),
                      access_matrix_version=matrix.version if matrix else None)


def write_report(ctx: RunContext, day: date) -> DataPath:
    reports = ctx.area("reports", "write")
    notice = record_notice(reports, ctx.cfg, day)  # a new version if the contracts changed
    manifest = build_manifest(ctx, day).model_copy(update={
        "notice_version": notice.version, "governed_by": _governed_by(ctx, reports, day)})
    out = reports / partition_name(day)
    atomic_write_json(out / "manifest.json", manifest.model_dump(mode="json"))
    docs = manifest.validation.data_docs_index if manifest.validation else None
    html = render_html(manifest, Path(docs).as_uri() if docs else None)
    atomic_write_bytes(out / "report.html", html.encode())
    external = reports / "external" / partition_name(day) / "report.html"
    atomic_write_bytes(external, render_html(manifest.external_view(), None,
                                             external=True).encode())
    write_governance(reports, ctx.cfg, ctx.policy, load_manifests(reports), day)
    write_index(reports, ctx.policy)
    if not manifest.funnel.balanced:
        raise PipelineError(f"{day}: row funnel does not balance; see {out / 'manifest.json'}")
    return out / "report.html"
