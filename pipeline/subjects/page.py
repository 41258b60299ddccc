"""The person's side of a subject-access archive: a README in plain language, and the page
"what shapes my personalization", which says what is held, what it became, and until when."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from pipeline.outputs.document import html_table, page

if TYPE_CHECKING:
    from pipeline.subjects.model import PurposeFindings, SubjectAccess

# In the order the data flows.
ZONE_WORDS = {
    "raw_events": "your events as we received them",
    "ingested": "your events as we parsed them (kept encrypted)",
    "consented": "your events we may use, given your consent (kept encrypted)",
    "scrubbed": "your events with personal details in free text replaced (kept encrypted)",
    "pseudonymized": "your events under a pseudonym instead of your account (kept encrypted)",
    "generalized": "your events with location, age and time made coarse (kept encrypted)",
    "pending": "what was about to be published, before its checks (kept encrypted)",
    "published": "what teams may use: never your account, only a pseudonym or group counts",
    "quarantine": "where a line you sent did not fit our format (its place, not its content)",
}
_ORDER = {z: i for i, z in enumerate(ZONE_WORDS)}


def _in_order(items: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return sorted(items, key=lambda r: (_ORDER.get(r[0], len(_ORDER)), r[1:]))


def readme(result: SubjectAccess) -> str:
    """The archive's README: what each file is, in plain words."""
    lines = [
        "# Your data, as this service holds it",
        "",
        f"Made on {result.requested_at}. Every table is here twice, as CSV (for a "
        "spreadsheet) and as JSON (for a program): the same rows.",
        "",
        "- `what_shapes_my_personalization.html`: start here; open it in a browser.",
        "- `raw_events.*`: the events we received from you and still hold, one row per line "
        "as it came (each value as text), with the file and line it is in.",
        "- `consent_history.*`: every consent decision we hold from you.",
        "- `summary.json`: how many rows each table holds.",
    ]
    for p in result.purposes:
        lines += ["", f"## Purpose: {p.purpose}", "", p.description.strip(), "",
                  f"- `{p.purpose}/pseudonyms.*`: the pseudonyms that stand for you in this "
                  "purpose's tables, one per key we use or used (we cannot turn one back into "
                  "your account without the key)."]
        for zone in sorted(p.rows):
            lines.append(f"- `{p.purpose}/{zone}/date=…`: {ZONE_WORDS.get(zone, zone)}.")
        lines += [
            f"- `{p.purpose}/groups.*`: the group of people you were published among each day, "
            "and how many people it holds (never fewer than k).",
            f"- `{p.purpose}/cohorts.*`: the cohorts (region, age band, device type) your events "
            "fell in each day.",
            f"- `{p.purpose}/releases.*`: the privacy-protected statistics your events went "
            "into, and what that means for you.",
            f"- `{p.purpose}/deletion_dates.*`: when each place deletes what it holds of you."]
    if result.erasure_requested:
        lines += ["", "You asked us to erase your data on "
                  f"{', '.join(result.erasure_requested)}: we keep only that request, so that "
                  "it is honoured every day."]
    return "\n".join(lines) + "\n"


def render_page(result: SubjectAccess) -> str:
    """The person's page: what we hold, what it became, until when."""
    held = [("Events you sent", f"{result.raw_lines:,} lines"),
            ("Consent decisions", f"{result.consent_records:,}")]
    sections = [("What we hold", html_table(held, ("What", "How much")))]
    if result.consent:
        sections.append(("Your consent decisions", html_table(
            [(c.get("purpose", ""), c.get("status", ""), c.get("recorded_at", ""))
             for c in result.consent], ("Purpose", "Decision", "When"))))
    if result.erasure_requested:
        sections.insert(0, ("Your erasure request", (
            f"<p>You asked us to erase your data on {escape(', '.join(result.erasure_requested))}. "
            "We hold nothing else of yours: only the request, so that it is honoured every day."
            "</p>")))
    elif not result.holds_anything:
        sections.insert(0, ("Nothing held", "<p>We hold no data of yours.</p>"))
    sections += [(f"Purpose: {p.purpose}", _purpose(p)) for p in result.purposes]
    sections.append(("What you can do", (
        "<p>Take this archive with you: every table is in it as CSV and JSON.</p><ul>"
        "<li><b>Pause</b> personalization for a purpose: from the next daily run nothing new "
        "of yours is used, and nothing is deleted; it resumes only when you agree again.</li>"
        "<li><b>Reset</b> your profile: what we derived from your events for that purpose is "
        "erased at the next run, and you start afresh under a new pseudonym that cannot be "
        "linked to the old profile (the events themselves stay for other purposes you agreed "
        "to).</li>"
        "<li><b>Erase</b> your data: it is removed from every place above at the next daily "
        "run.</li></ul><p>Privacy-protected statistics already released stay in every case: "
        "they do not depend on you by more than the bounds said above.</p>")))
    body = "\n".join(["<h1>What shapes my personalization</h1>",
                      f"<p class=view>Made on {escape(result.requested_at)}.</p>",
                      *(f"<h2>{escape(t)}</h2>\n{h}" for t, h in sections)])
    return page("What shapes my personalization", body, width=56)


STATUS_WORDS = {
    "granted": "you agreed: your events are used for it",
    "reset": "you reset your profile: only events since are used, under a new pseudonym that "
             "cannot be linked to the old profile, which was erased",
    "paused": "you paused it: nothing new of yours is used until you resume; nothing was "
              "deleted",
    "revoked": "you withdrew: nothing of yours is used, and your rows have left what is "
               "published",
    "none": "you have not agreed: nothing of yours is used",
}


def _purpose(p: PurposeFindings) -> str:
    parts = [f"<p>{escape(p.description.strip())}</p>"] if p.description else []
    parts.append(f"<p>Your choice: <b>{escape(p.status)}</b>, "
                 f"{escape(STATUS_WORDS.get(p.status, p.status))}.</p>")
    rows = [(ZONE_WORDS.get(z, z), f"{n:,}") for z, n in
            sorted(p.rows.items(), key=lambda zn: _ORDER.get(zn[0], len(_ORDER)))]
    parts.append(html_table(rows, ("Where", "Rows of yours")) if rows
                 else "<p>No rows of yours.</p>")
    if p.profiles is not None and p.profiles.height:
        cols = [c for c in p.profiles.columns if c not in ("user_pseudonym",
                                                           "pseudonym_key_id", "date")]
        parts.append("<h3>Your published profile, day by day</h3><p>This is what teams may "
                     "use to personalize for you: a profile under a pseudonym that changes "
                     "each day, shared by at least k people.</p>"
                     + html_table(list(p.profiles.select(cols).iter_rows()), tuple(cols)))
    if p.groups is not None and p.groups.height:
        parts.append("<h3>The groups you were published among</h3>"
                     + html_table(list(p.groups.iter_rows()),
                                  ("Day", "Group", "People in it")))
    if p.releases:
        parts.append("<h3>Privacy-protected statistics your events went into</h3>"
                     + "".join(f"<p>{escape(r.sentence)}</p>" for r in p.releases))
    if p.deletions is not None and p.deletions.height:
        rows2 = [(ZONE_WORDS.get(z, z), d, deleted or "kept (statistics only)")
                 for z, d, deleted in _in_order([(z, d, x) for z, d, x, _ in
                                                 p.deletions.iter_rows()])]
        parts.append("<h3>When it is deleted</h3><p>Each day's data goes at the first daily "
                     "run dated on or after the day shown.</p>"
                     + html_table(rows2, ("Where", "Day", "Deleted by the run of")))
    if p.unreadable:
        parts.append("<p class=bad>Some places could not be read for this archive: "
                     + escape("; ".join(p.unreadable)) + "</p>")
    return "\n".join(parts)
