"""The run report: a JSON manifest and a readable HTML page per date.

Built only from the stages' own accounting (counts, key ids, ε, check outcomes), never from
the data, so it cannot carry a personal value. The funnel must balance:
rows in = rows out + dropped (per reason) + quarantined (per reason).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError
from pipeline.core.storage import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from pipeline.run import RunContext

FUNNEL_STAGES = ("ingest", "consent", "detect_pii", "pseudonymize", "generalize", "minimize")


PERIOD_WORDS = {"day": "daily", "week": "weekly"}
REUSED_NOTE = "Rerun: the stored release was returned; no new noise was drawn."


def release_cost(dp: dict[str, Any]) -> tuple[str, float]:
    """What a release (its `ledger.json`) counts against the budget: ("ρ", ρ) under zCDP
    accounting, else ("ε", ε)."""
    if dp["accounting"] == "zcdp":
        return "ρ", float(dp["rho"])
    return "ε", float(dp["epsilon"])


def totals(m: dict[str, Any]) -> dict[str, Any]:
    """Rows dropped and quarantined, and PII values replaced, over a run. The external view
    carries them precomputed (and coarsened), since its per-reason counts are coarsened."""
    if "totals" in m:
        return dict(m["totals"])
    f = m["funnel"]
    return {"dropped": sum(f["dropped"].values()), "quarantined": sum(f["quarantined"].values()),
            "pii_replaced": sum((m["pii"]["found"] or {}).values())}


def dp_summary(dp: dict[str, Any] | None) -> str:
    """What this run's DP release cost and what its budget window now holds, in words."""
    if not dp:
        return "No DP release: the features stage did not run."
    if not dp.get("release_due", True):
        return (f"No release due: the {PERIOD_WORDS[dp['period']]} feature set is next released "
                f"on {dp['next_release']}.")
    unit = "ρ" if dp["accounting"] == "zcdp" else "ε"
    cost = f"ρ = {dp['rho']:g}" if dp["epsilon"] is None else f"ε = {dp['epsilon']:g}"
    first, last = dp["period"]
    data = f"data of {last}" if first == last else f"data of {first} to {last}"
    text = (f"{dp['mechanism']}; {data}; {cost}, "
            f"δ = {dp['delta']:g} for this release. {dp['accounting']} accounting: "
            f"{unit} = {dp['window_spent']:g} of {dp['window_budget']:g} "
            f"(δ = {dp['window_delta_spent']:g} of {dp['window_delta_budget']:g}) spent in the "
            f"{dp['window_days']}-day window ending {dp['date']}")
    if dp["accounting"] == "zcdp":
        text += (f", which is ({dp['window_as_epsilon']:.3g}, {dp['window_as_epsilon_delta']:g})"
                 "-DP")
    return text + "." + (f" {REUSED_NOTE}" if dp.get("reused_stored_release") else "")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def build_manifest(ctx: RunContext, date: str) -> dict[str, Any]:
    stats = ctx.load_stats(date)
    if "ingest" not in stats:
        raise PipelineError(f"{date}: no ingest accounting found; run the stages first")
    chain = [stats[s] for s in FUNNEL_STAGES if s in stats]
    for before, after in zip(chain, chain[1:], strict=False):
        if before.rows_out != after.rows_in:
            raise PipelineError(f"{date}: {before.stage} wrote {before.rows_out} rows but "
                                f"{after.stage} read {after.rows_in}")
    dropped: dict[str, int] = {}
    for s in chain:
        for reason, n in s.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
    quarantined = stats["ingest"].quarantined
    rows_in, rows_out = stats["ingest"].rows_in, chain[-1].rows_out
    balanced = rows_in == rows_out + sum(dropped.values()) + sum(quarantined.values())
    run_dir = ctx.run_dir(date)
    validation = _read_json(run_dir / "validation.json")
    ledger = _read_json(run_dir / "ledger.json")
    publish = _read_json(run_dir / "publish.json")
    pii = stats.get("detect_pii")
    gen = stats.get("generalize")
    pseudo = stats.get("pseudonymize")
    return {
        "date": date, "purpose": ctx.cfg.purpose,
        "funnel": {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped,
                   "quarantined": quarantined, "balanced": balanced,
                   "last_stage": chain[-1].stage},
        "stages": {s.stage: {"rows_in": s.rows_in, "rows_out": s.rows_out} for s in chain},
        "pii": {"found": pii.details["pii_found"] if pii else None,
                "found_by_column": pii.details["pii_found_by_column"] if pii else None,
                "dropped_columns": pii.details["dropped_columns"] if pii else None,
                "column_scan": pii.details.get("column_scan") if pii else None,
                "token_key_id": pii.details.get("token_key_id") if pii else None},
        "pseudonymization": pseudo.details if pseudo else None,
        "k_anonymity": {key: gen.details.get(key) for key in (
            "k_required", "k_achieved", "l_required", "l_achieved", "sensitive_attribute",
            "quasi_identifiers", "generalize_order", "rows_suppressed", "share_rows_suppressed",
            "users_suppressed", "groups_suppressed", "groups_kept", "information_loss")}
        if gen else None,
        "validation": validation,
        "erasure": _read_json(run_dir / "erasure.json"),
        "retention": _read_json(run_dir / "retention.json"),
        "differential_privacy": ledger,
        "published": bool(publish) and bool(validation and validation.get("success")),
        "feature_store": publish,
    }


def html_table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    th = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _l_sentence(ka: dict[str, Any]) -> str:
    if not ka.get("sensitive_attribute"):
        return "no sensitive attribute declared."
    return escape(f"ℓ-diversity of {ka['sensitive_attribute']}: required "
                  f"{ka.get('l_required') or 'none'}, achieved {ka.get('l_achieved')}.")


def _loss_rows(loss: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for qi, info in sorted(loss.items()):
        detail = (f"mean resolution {info['mean_resolution']}, mean cell "
                  f"{info['mean_cell_area_km2']} km²" if "mean_resolution" in info else "")
        per_level = info.get("rows_per_level", {}).items()
        levels = ", ".join(f"level {lv}: {n}" for lv, n in per_level)
        rows.append((qi, info.get("mean_level_share", ""), levels, detail))
    return rows


def _data_protection(m: dict[str, Any]) -> str:
    """Consent drops, erasure and retention actions of the run, as counts and partitions."""
    dropped = m["funnel"]["dropped"]
    consent = [(reason.replace("_", " "), dropped.get(reason, 0)) for reason in
               ("no_consent", "consent_revoked", "consent_withdrawn_since")]
    er = m.get("erasure") or {}
    removed = sorted((er.get("removed") or {}).items())
    kept = sorted((er.get("not_touched") or {}).items())
    purged = [(p["area"], p["date"], f"{p['bytes']:,} bytes", f"{p['retention_days']} days")
              for p in (m.get("retention") or {}).get("purged", [])]
    return (
        html_table(consent, ("Events not used for lack of consent", "Rows"))
        + f"<p>Erasure requests on file: {escape(str(er.get('requests', 0)))}; users who have "
          f"withdrawn consent: {escape(str(er.get('withdrawn_users', 0)))}; partitions "
          f"rewritten without them this run: {escape(str(er.get('partitions_rewritten', 0)))}."
          "</p>"
        + (html_table(removed, ("Area", "Rows or lines removed this run")) if removed else "")
        + (html_table(kept, ("Kept as is", "Why")) if kept else "")
        + (html_table(purged, ("Area purged (retention)", "Partition date", "Size", "Window"))
           if purged else "<p>Retention: no partition had passed its window.</p>"))


def summary_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The first screen: one line per question a reviewer asks first."""
    f, ka, val = m["funnel"], m["k_anonymity"] or {}, m["validation"] or {}
    n = totals(m)
    checks = val.get("checks", [])
    er = m.get("erasure") or {}
    purged = (m.get("retention") or {}).get("purged", [])
    return [
        ("Published", "yes" if m["published"] else "NO: publishing was blocked"),
        ("Rows", f"{_count(f['rows_in'])} in = {_count(f['rows_out'])} published + "
                 f"{_count(n['dropped'])} dropped + {_count(n['quarantined'])} quarantined "
                 f"({'balanced' if f['balanced'] else 'NOT balanced'})"),
        ("Personal data replaced in free text", f"{_count(n['pii_replaced'])} values"),
        ("k-anonymity / ℓ-diversity",
         f"k {ka.get('k_achieved')} (required {ka.get('k_required')}), "
         f"ℓ {ka.get('l_achieved')} (required {ka.get('l_required')})"),
        ("Validation", f"{sum(c['success'] for c in checks)} of {len(checks)} checks passed"
         if checks else "not run"),
        ("Differential privacy", dp_summary(m["differential_privacy"])),
        ("Erasure and retention", f"{er.get('requests', 0)} erasure request(s) on file, "
         f"{er.get('partitions_rewritten', 0)} partition(s) rewritten; {len(purged)} "
         "partition(s) past retention deleted"),
    ]


def _count(n: Any) -> str:
    """A count with thousands separators, or as coarsened ("<10") in the external view."""
    return f"{n:,}" if isinstance(n, int) else str(n)


def external_view(m: dict[str, Any], small: int = 10) -> dict[str, Any]:
    """The manifest for readers outside the team: no key ids, paths, observed values or
    per-column detail, and counts below `small` shown as "<small" (small cells can single a
    person out), in the spirit of sdcMicro's external report."""

    def coarse(n: Any) -> Any:
        return f"<{small}" if isinstance(n, int) and 0 < n < small else n

    ext = json.loads(json.dumps(m))
    ext["totals"] = {name: coarse(n) for name, n in totals(m).items()}
    f = ext["funnel"]
    for part in ("dropped", "quarantined"):
        f[part] = {r: coarse(n) for r, n in f[part].items()}
    ext["pii"] = {"found": {e: coarse(n) for e, n in (m["pii"]["found"] or {}).items()},
                  "dropped_columns": m["pii"]["dropped_columns"]}
    ext["pseudonymization"] = {"algorithm": (m["pseudonymization"] or {}).get("algorithm")}
    if ext["k_anonymity"]:
        for key in ("rows_suppressed", "users_suppressed", "groups_suppressed"):
            ext["k_anonymity"][key] = coarse(ext["k_anonymity"][key])
    if ext["validation"]:
        ext["validation"] = {"success": m["validation"]["success"], "data_docs_index": None,
                             "checks": [{**c, "observed": None, "unexpected_count": None}
                                        for c in m["validation"]["checks"]]}
    if ext.get("erasure"):
        ext["erasure"]["removed"] = {a: coarse(n) for a, n in m["erasure"]["removed"].items()}
    if ext.get("retention"):
        ext["retention"]["purged"] = [{**p, "bytes": 0} for p in m["retention"]["purged"]]
    if ext["differential_privacy"]:
        ext["differential_privacy"].pop("ledger", None)
    ext["feature_store"] = None
    return ext


def render_html(m: dict[str, Any], data_docs: str | None, *, external: bool = False) -> str:
    f = m["funnel"]
    status = ("Published" if m["published"] else "NOT published")
    val = m["validation"] or {}
    why = ""
    if val and not val.get("success"):
        failed = [f"{c['expectation']} ({c['column'] or 'table'})" for c in val["checks"]
                  if not c["success"]]
        why = "<p class=bad>Validation failed: " + escape("; ".join(failed)) + "</p>"
    funnel_rows = [("Rows in (raw lines)", f["rows_in"])]
    funnel_rows += [(f"Quarantined: {r}", n) for r, n in sorted(f["quarantined"].items())]
    funnel_rows += [(f"Dropped: {r}", n) for r, n in sorted(f["dropped"].items())]
    funnel_rows += [("Rows out (published per-event table)", f["rows_out"]),
                    ("Balanced", "yes" if f["balanced"] else "NO")]
    pii = m["pii"]["found"] or {}
    scan = m["pii"].get("column_scan") or {"checked": [], "flagged": []}
    flagged = [(c["column"], ", ".join(c["reasons"]),
                ", ".join(f"{e} ({n})" for e, n in c["entities"].items()) or "-",
                f"{c['share_with_pii']:.1%} of {c['sampled']}", c["action"])
               for c in scan["flagged"]]
    ka = m["k_anonymity"] or {}
    dp = m["differential_privacy"] or {}
    ps = m["pseudonymization"] or {}
    checks = [(c["expectation"], c["column"] or "(table)", "pass" if c["success"] else "FAIL",
               c["observed"] if c["observed"] is not None else "",
               c["unexpected_count"] if c["unexpected_count"] is not None else "")
              for c in val.get("checks", [])]
    docs_link = (f'<p><a href="{escape(data_docs)}">Great Expectations Data Docs</a></p>'
                 if data_docs else "")
    by_column = [(col, entity, n) for col, found in sorted((m["pii"].get("found_by_column")
                                                           or {}).items())
                 for entity, n in sorted(found.items())]
    token_key = m["pii"].get("token_key_id")
    tokens = ("<p>Each value is replaced by a keyed token (<code>&lt;TYPE:letters&gt;</code>"
              + (f", key id <code>{escape(str(token_key))}</code>" if token_key else "")
              + "): equal values share a token.</p>")
    scan_html = "" if "column_scan" not in m["pii"] else (
        "<h3>Columns not tagged as PII, checked by name and content</h3>"
        f"<p>Checked: {escape(', '.join(scan['checked']) or 'none')}.</p>"
        + (html_table(flagged, ("Column", "Flagged by", "Entities in sample",
                            "Sampled values with PII", "Action"))
           if flagged else "<p>None held PII.</p>"))
    pseudo_html = escape(ps.get("algorithm") or "") + (
        f" with key id <code>{escape(str(ps['key_id']))}</code>, key derived per purpose "
        f"({escape(str(ps.get('purpose', '')))})." if ps.get("key_id") else
        ", with a secret key derived per purpose.")
    view = ("External view: no key ids, paths or per-column detail; counts under 10 shown as "
            "&lt;10." if external else "Internal view, with details. An external view without "
            "them is in <code>reports/external/</code>.")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Privacy pipeline run {escape(m['date'])} ({escape(m['purpose'])})</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#1a1a1a}}
table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}
td,th{{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}}
th{{background:#f2f2f2}} .ok{{color:#176b2c}} .bad{{color:#b00020;font-weight:600}}
.view{{color:#555;font-size:.9rem}}
</style></head><body>
<h1>Run {escape(m['date'])}: purpose <em>{escape(m['purpose'])}</em></h1>
<p class="{'ok' if m['published'] else 'bad'}">{status}</p>{why}
<p class=view>{view} <a href="../index.html">All runs</a></p>
<h2>Summary</h2>{html_table(summary_rows(m), ("Question", "Answer"))}
<h2>Row funnel</h2>{html_table(funnel_rows, ("Step", "Rows"))}
<h2>Personal data found in free text</h2>
{html_table(sorted(pii.items()), ("Entity type", "Occurrences replaced"))
 if pii else "<p>None.</p>"}
{html_table(by_column, ("Column", "Entity type", "Occurrences")) if by_column else ""}
{tokens}
<p>Direct identifier columns removed: {escape(", ".join(m['pii']['dropped_columns'] or []))}</p>
{scan_html}
<h2>Pseudonymization</h2>
<p>{pseudo_html}</p>
<h2>k-anonymity and ℓ-diversity</h2>
<p>Over {escape(", ".join(ka.get('quasi_identifiers') or []))}:
required k = {escape(str(ka.get('k_required')))},
achieved k = {escape(str(ka.get('k_achieved')))}; {_l_sentence(ka)}
Groups short of that were generalized further
({escape(", ".join(ka.get('generalize_order') or []))}, in that order), then suppressed:
{escape(str(ka.get('rows_suppressed')))} rows
({escape(f"{(ka.get('share_rows_suppressed') or 0):.1%}")}) of
{escape(str(ka.get('users_suppressed')))} users in {escape(str(ka.get('groups_suppressed')))}
groups; {escape(str(ka.get('groups_kept')))} groups published.</p>
{html_table(_loss_rows(ka.get('information_loss') or {}),
        ("Quasi-identifier", "Generalization (0 = finest, 1 = coarsest)", "Rows per level",
         "Detail"))}
<h2>Consent, erasure and retention</h2>
{_data_protection(m)}
<h2>Differential privacy</h2>
<p>{escape(dp_summary(dp))}</p>
<h2>Validation</h2>
{html_table(checks, ("Expectation", "Column", "Result", "Observed", "Unexpected rows"))}
{docs_link}
</body></html>
"""


def write_report(ctx: RunContext, date: str) -> Path:
    manifest = build_manifest(ctx, date)
    out = ctx.root / "reports" / f"date={date}"
    atomic_write_json(out / "manifest.json", manifest)
    docs = (manifest["validation"] or {}).get("data_docs_index")
    html = render_html(manifest, Path(docs).as_uri() if docs else None)
    atomic_write_bytes(out / "report.html", html.encode())
    external = ctx.root / "reports" / "external" / f"date={date}" / "report.html"
    atomic_write_bytes(external, render_html(external_view(manifest), None,
                                             external=True).encode())
    from pipeline.outputs.audit import write_index

    write_index(ctx.root / "reports")
    if not manifest["funnel"]["balanced"]:
        raise PipelineError(f"{date}: row funnel does not balance; see {out / 'manifest.json'}")
    return out / "report.html"
