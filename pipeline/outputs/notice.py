"""The privacy notice of a purpose, generated from its contracts: what is collected, what is
published and for what, how long each place keeps data, what the statistics cost in privacy,
and what a person can do. Built from the purpose file, the event schema, the retention,
k-anonymity, feature and budget config, never written by hand, so it cannot drift from what
the pipeline does.

Versioned in the audit bundle (`reports/{purpose}/notices/v<N>/`): a run whose contracts give a
notice different from the latest version records version N+1, with a diff against version N
(`diff.md`) and the digests of the files it was built from; the audit index lists every
version. The notice's text holds no date and no run detail, so only a change to what it says
makes a new version.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from html import escape

from pydantic import BaseModel

from pipeline.config import PipelineConfig
from pipeline.config.contracts import Domain, PurposeSpec
from pipeline.config.settings import GeneralizeConfig
from pipeline.core.fs import DataPath
from pipeline.core.storage import atomic_write_bytes, atomic_write_json
from pipeline.outputs.document import html_table, page

NOTICES = "notices"  # under the purpose's reports area

HANDLING_WORDS = {
    "drop": "never used: removed as soon as consent is checked",
    "pseudonymize": "replaced by a pseudonym made with a secret key of this purpose's own, so "
                    "it cannot be matched with other purposes' data",
    "generalize": "made coarse before use",
    "scan": "free text: names, e-mail addresses, phone and card numbers and other personal "
            "details found in it are replaced by their kind before use",
    "keep": "used as is",
}
EPOCH_WORDS = {"day": "day", "week": "week", "stable": "period of use"}


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    bullets: tuple[str, ...] = field(default=())


def notice_sections(cfg: PipelineConfig) -> list[Section]:
    """The notice of `cfg`'s purpose, section by section (see the module docstring)."""
    spec = cfg.purpose_spec
    return [
        Section("What it is for", (spec.description.strip(),
                                   f"Only people who agreed to “{spec.consent_purpose}” are "
                                   "included, and only while they agree.")),
        _collected(cfg),
        _published(cfg, spec),
        *([_statistics(cfg)] if cfg.features.enabled else []),
        _kept(cfg),
        _choices(spec),
    ]


def _coarse_words(name: str, g: GeneralizeConfig) -> str:
    """What the generalize stage makes of a precise field (`coarsen.PRECISE`), from config."""
    words = {
        "latitude": f"made coarse: your {g.region_level} and an H3 area (resolution "
                    f"{g.h3_resolution} or coarser), never the point itself",
        "age": f"made coarse: an age band ({', '.join(g.age_bands)})",
        "event_time": "made coarse: the date" + (" and the hour" if g.time_granularity ==
                                                 "hour" else ""),
        "ip_address": {"prefix": f"made coarse: the network (/{g.ipv4_prefix} for IPv4, "
                                 f"/{g.ipv6_prefix} for IPv6), never the address",
                       "country": "made coarse: the country only",
                       "drop": HANDLING_WORDS["drop"]}[g.ip],
        "postal_code": {"zip3": "made coarse: its first three digits",
                        "drop": HANDLING_WORDS["drop"]}[g.postal_code],
        "device_model": "made coarse: the device type, and the model only when many people "
                        "use it (else “other”)",
    }
    words["longitude"] = words["latitude"]
    return words.get(name, HANDLING_WORDS["generalize"])


def _collected(cfg: PipelineConfig) -> Section:
    schema = cfg.event_schema
    rows = tuple((name, _coarse_words(name, cfg.generalize) if f.handling == "generalize"
                  else HANDLING_WORDS[f.handling]) for name, f in schema.fields.items())
    return Section("What we collect", (
        f"Each event your app sends holds the fields below (event schema “{schema.name}”, "
        f"version {schema.version}). A field outside the schema, or a value out of range, is "
        "never used: the line is set aside, by its place only.",), ("Field", "How it is used"),
        rows)


def _domain_words(domain: Domain | None) -> str:
    if domain is None:
        return ""
    if domain.values:
        return "one of: " + ", ".join(domain.values)
    if domain.min is not None or domain.max is not None:
        low = "" if domain.min is None else f"at least {domain.min:g}"
        high = "" if domain.max is None else f"at most {domain.max:g}"
        return "a number " + " and ".join(p for p in (low, high) if p)
    return "text in a fixed format (no free text)" if domain.pattern else ""


def _column_words(spec: PurposeSpec, column: str) -> str:
    """What a published column says about a person, in words."""
    profile = spec.profile
    epoch = EPOCH_WORDS[profile.epoch] if profile else "day"
    if column in spec.pseudonym_columns:
        return (f"a pseudonym, new each {epoch}: it cannot be linked to your account or to "
                f"another {epoch}'s" if profile and profile.epoch != "stable"
                else "a pseudonym: it cannot be turned back into your account")
    if column == "pseudonym_key_id":
        return "which key made the pseudonym (nothing about you)"
    if profile is not None:
        if column in profile.context:
            return f"your most frequent {column.replace('_', ' ')} that {epoch}"
        if column in profile.interests.names:
            rank = ("most", "second most", "third most", "fourth most")[
                min(profile.interests.names.index(column), 3)]
            return (f"your {rank} frequent {profile.interests.column.replace('_', ' ')} "
                    f"that {epoch}")
        if profile.activity is not None and column == profile.activity.column:
            return f"how active you were that {epoch}, as a band"
    if spec.aggregate is not None and column in (spec.aggregate.users,
                                                 spec.aggregate.events):
        return f"how many {column} a segment had (never fewer than k users)"
    return column.replace("_", " ")


def _published(cfg: PipelineConfig, spec: PurposeSpec) -> Section:
    k, l = cfg.k_anonymity.k, cfg.k_anonymity.l  # noqa: E741
    rows = tuple((c, _column_words(spec, c), _domain_words(spec.domains.get(c)))
                 for c in spec.columns)
    if spec.profile is not None:
        shape = (f"One row per person per {EPOCH_WORDS[spec.profile.epoch]}, never your "
                 "events themselves: the columns below and nothing else (any other column "
                 "stops publishing).")
    elif spec.aggregate is not None:
        shape = ("Counts per segment, never a row per person: the columns below and nothing "
                 "else.")
    else:
        shape = "Rows with the columns below and nothing else."
    group = (f"Every published combination of values is shared by at least {k} people"
             + (f", with at least {l} different values of "
                f"{(spec.sensitive_attribute or '').replace('_', ' ')}"
                if l and spec.sensitive_attribute else "")
             + ": a rarer value is made coarser or left out, so nobody can be singled out, "
               "even by someone who holds the events.")
    return Section("What teams may use", (shape, group), ("Column", "What it says",
                                                           "Values"), rows)


def _statistics(cfg: PipelineConfig) -> Section:
    from pipeline.features import REGISTRY
    from pipeline.ledger.budget import RhoZCDP

    fc, budget = cfg.features, cfg.budget
    cost = fc.release_budget
    unit = "ρ" if fc.privacy == "zcdp" else "ε"
    limit = budget.limit
    per = "week (released on Sundays)" if fc.period == "week" else "day"
    rows = tuple((REGISTRY[name].label, REGISTRY[name].summary)
                 for name in fc.features.enabled())
    return Section("Statistics with differential privacy", (
        f"Statistics per group of people (region, age band and device type) are released "
        f"once per {per} with differential privacy: random noise hides whether any one person "
        f"is in them. You count in at most {fc.max_cohorts_per_user} group(s) per release, and "
        f"no released number moves by more than your bounded share.",
        f"Each release costs {unit} = {cost.value:g}"
        + (f" (counted as ρ = {cost.to(RhoZCDP).rho:g})"
           if fc.privacy != budget.accounting else "")
        + f"; the releases of any "
        f"{budget.window_days} days together may cost at most "
        f"{'ρ' if budget.accounting == 'zcdp' else 'ε'} = {limit:g}. A release is made once "
        "and kept: it is never drawn again.",), ("Statistic", "What it is"), rows)


def _kept(cfg: PipelineConfig) -> Section:
    r = cfg.retention
    rows = (("The events as received", f"{r.raw_days} days"),
            ("Where a line did not fit (its place, never its content)",
             f"{r.quarantine_days} days"),
            ("Working copies, encrypted", f"{r.staging_days} days"),
            ("What teams may use", f"{r.published_days} days"),
            ("Privacy-protected statistics", "kept: they do not depend on you beyond the "
                                             "bound above"))
    return Section("How long we keep it", ("Each day's data is deleted by the first run "
                                           "after its time is up.",),
                   ("What", "Kept for"), rows)


def _choices(spec: PurposeSpec) -> Section:
    return Section("What you can do", bullets=(
        "See your data and take it with you: one request gives you everything held about "
        "you, as CSV and JSON, and a page on what shapes your personalization.",
        "Pause: from the next daily run nothing new of yours is used; nothing is deleted, "
        "and it resumes only when you agree again.",
        "Reset your profile: what was derived from your events for this purpose is erased, "
        "and you start afresh under a new pseudonym that cannot be linked to the old one.",
        f"Withdraw your agreement to “{spec.consent_purpose}”: nothing of yours is used from "
        "the next run, and your rows leave what teams may use.",
        "Erase everything: your data is removed from every place above at the next daily "
        "run.",
    ))


# rendering -------------------------------------------------------------------------------

def to_markdown(purpose: str, sections: list[Section], header: str = "") -> str:
    lines = [f"# Privacy notice: {purpose}", ""] + ([header, ""] if header else [])
    for s in sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        if s.rows:
            lines += ["| " + " | ".join(s.head) + " |",
                      "|" + "|".join("---" for _ in s.head) + "|"]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
                      for r in s.rows]
            lines.append("")
        if s.bullets:
            lines += [f"- {b}" for b in s.bullets] + [""]
    return "\n".join(lines)


def to_html(purpose: str, sections: list[Section], header: str = "") -> str:
    parts = [f"<h1>Privacy notice: {escape(purpose)}</h1>"]
    if header:
        parts.append(f"<p class=view>{escape(header)}</p>")
    for s in sections:
        parts.append(f"<h2>{escape(s.title)}</h2>")
        parts += [f"<p>{escape(p)}</p>" for p in s.paragraphs]
        if s.rows:
            parts.append(html_table(list(s.rows), s.head))
        if s.bullets:
            parts.append("<ul>" + "".join(f"<li>{escape(b)}</li>" for b in s.bullets)
                         + "</ul>")
    return page(f"Privacy notice: {purpose}", "\n".join(parts), width=60)


# versions ---------------------------------------------------------------------------------

class NoticeVersion(BaseModel):
    """One version of a purpose's notice, as the audit bundle records it."""

    purpose: str
    version: int
    effective: str  # the run date that first used it
    sha256: str  # of the notice's text (`to_markdown` without a header)
    sources: dict[str, str]  # contract -> sha256 of what it was built from
    changed_sections: list[str] = []


def _sources(cfg: PipelineConfig) -> dict[str, str]:
    """Digests of what the notice is built from: the purpose file, the event schema and the
    config's blocks the notice reads."""
    paths = cfg.paths
    files = {"purpose file": paths.purposes_dir / f"{cfg.purpose}.yaml",
             "event schema": paths.event_schema}
    out = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
    for name in ("retention", "k_anonymity", "features", "budget"):
        block = getattr(cfg, name).model_dump(mode="json")
        out[f"config {name}"] = hashlib.sha256(json.dumps(block, sort_keys=True).encode()
                                               ).hexdigest()
    return out


def notice_versions(area: DataPath) -> list[NoticeVersion]:
    """Every version recorded under a purpose's reports area, oldest first."""
    found = [NoticeVersion.model_validate_json(p.read_text())
             for p in (area / NOTICES).glob("v*/version.json")]
    return sorted(found, key=lambda v: v.version)


def record_notice(area: DataPath, cfg: PipelineConfig, day: date) -> NoticeVersion:
    """The notice in force for a run of `day`: the latest version if the contracts still give
    its text, else a new version written beside it with its diff."""
    sections = notice_sections(cfg)
    text = to_markdown(cfg.purpose, sections)
    digest = hashlib.sha256(text.encode()).hexdigest()
    versions = notice_versions(area)
    latest = versions[-1] if versions else None
    if latest is not None and latest.sha256 == digest:
        return latest
    number = latest.version + 1 if latest else 1
    folder = area / NOTICES / f"v{number}"
    header = f"Version {number}, in force from {day.isoformat()}."
    changed: list[str] = []
    if latest is not None:
        before = (area / NOTICES / f"v{latest.version}" / "notice.md").read_text()
        before_text = _without_header(before)
        diff = "".join(difflib.unified_diff(
            before_text.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"v{latest.version}/notice.md", tofile=f"v{number}/notice.md"))
        changed = _changed_sections(before_text, text)
        atomic_write_bytes(folder / "diff.md", (
            f"# Privacy notice {cfg.purpose}: version {latest.version} to {number}\n\n"
            f"Sections changed: {', '.join(changed) or 'none'}.\n\n```diff\n{diff}```\n"
        ).encode())
    atomic_write_bytes(folder / "notice.md", to_markdown(cfg.purpose, sections, header)
                       .encode())
    atomic_write_bytes(folder / "notice.html", to_html(cfg.purpose, sections, header).encode())
    version = NoticeVersion(purpose=cfg.purpose, version=number, effective=day.isoformat(),
                            sha256=digest, sources=_sources(cfg), changed_sections=changed)
    atomic_write_json(folder / "version.json", version.model_dump(mode="json"))
    return version


def _without_header(markdown: str) -> str:
    """A stored notice's text as `to_markdown` gives it without a header."""
    lines = markdown.split("\n")
    if len(lines) > 3 and lines[2].startswith("Version "):
        lines = lines[:2] + lines[4:]
    return "\n".join(lines)


def _changed_sections(before: str, after: str) -> list[str]:
    def split(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        title = ""
        for line in text.split("\n"):
            if line.startswith("## "):
                title = line[3:]
            out[title] = out.get(title, "") + line + "\n"
        return out

    a, b = split(before), split(after)
    return [t for t in dict.fromkeys([*a, *b]) if t and a.get(t) != b.get(t)]
