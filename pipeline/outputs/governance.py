"""The records of processing (GDPR Art. 30(1)) and a DPIA draft (Art. 35(7)) per purpose,
generated from what the pipeline already declares and measures: the config's `governance`
(controller, DPO, processors, transfers), the purpose's contract (description, legal basis,
columns), the event schema with each field's fideslang category (`schemas/data_categories.yaml`),
the access matrix (recipients), the retention windows, and the runs' manifests (the latest
re-identification rate, residual PII checks, budget spent, what privacy costs each group).

Written by every run's report stage to `reports/<purpose>/governance/` as HTML and PDF (the
PDF drawn by ReportLab from the same sections, no browser needed), so the documents a
regulator asks for never lag what the pipeline does. The DPIA is a draft: its sign-off is for
the reviewers the config names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

from pipeline.access.policy import AccessPolicy
from pipeline.config import PipelineConfig
from pipeline.config.files import read_yaml
from pipeline.core.errors import ConfigError
from pipeline.core.fs import DataPath
from pipeline.core.records import Manifest
from pipeline.core.storage import atomic_write_bytes
from pipeline.outputs import document as doc

FOLDER = "governance"
HANDLING = {"drop": "removed before anything else (direct identifier)",
            "pseudonymize": "replaced by a keyed HMAC-SHA256 pseudonym",
            "generalize": "coarsened (k-anonymity), the precise value then removed",
            "scan": "scanned for PII; every span found replaced by a keyed token",
            "keep": "kept as is"}
BASIS = {"consent": "consent, Art. 6(1)(a)", "contract": "contract, Art. 6(1)(b)",
         "legal_obligation": "legal obligation, Art. 6(1)(c)",
         "vital_interests": "vital interests, Art. 6(1)(d)",
         "public_task": "public task, Art. 6(1)(e)",
         "legitimate_interests": "legitimate interests, Art. 6(1)(f)"}


@dataclass(frozen=True)
class Section:
    title: str
    text: str = ""
    head: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    sections: tuple[Section, ...]


@cache
def _taxonomy(path: Path) -> dict:
    return read_yaml(path)


def categories(cfg: PipelineConfig) -> dict:
    """`schemas/data_categories.yaml` (beside the purposes folder), checked: every raw field and
    published column has a category the file's taxonomy holds."""
    path = cfg.paths.purposes_dir.parent / "data_categories.yaml"
    doc = _taxonomy(path)
    known = doc["data_categories"]
    missing = [f for f in cfg.event_schema.fields if f not in doc["raw_fields"]]
    missing += [c for c in cfg.purpose_spec.columns if c not in doc["published_columns"]]
    unknown = [c for c in (*doc["raw_fields"].values(), *doc["published_columns"].values())
               if c not in known]
    if missing or unknown:
        raise ConfigError(f"{path}: no category for {missing}; categories not in its taxonomy: "
                          f"{sorted(set(unknown))}")
    return doc


def _name(doc: dict, kind: str, key: str | None) -> str:
    entry = doc[kind].get(key or "") if key else None
    return f"{entry['name']} ({key})" if entry else (key or "not declared")


def _latest(manifests: Sequence[Manifest]) -> Manifest | None:
    published = [m for m in manifests if m.published]
    return published[-1] if published else (manifests[-1] if manifests else None)


def _common(cfg: PipelineConfig, policy: AccessPolicy | None, doc: dict) -> dict[str, Section]:
    spec, g, r = cfg.purpose_spec, cfg.governance, cfg.retention
    fields = [(name, f.handling, _name(doc, "data_categories", doc["raw_fields"][name]),
               HANDLING[f.handling]) for name, f in cfg.event_schema.fields.items()]
    published = [(c, _name(doc, "data_categories", doc["published_columns"][c]))
                 for c in spec.columns]
    readers = []
    if policy is not None:
        for action, what in (("read_published", "the published rows"),
                             ("read_features", "the DP cohort features (Feast)"),
                             ("read_reports", "the internal audit bundle"),
                             ("read_external_reports", "the external audit bundle")):
            for role in policy.readers(cfg.purpose, action):
                holders = len({w for w, r_, p in policy.grants()
                               if r_ == role and p == cfg.purpose})
                readers.append((role, policy.roles[role].description, what,
                                f"{holders} member(s)"))
    readers += [(p.name, p.does, "processor (Art. 28)", p.location) for p in g.processors]
    return {
        "controller": Section("Controller", rows=(
            ("Controller", g.controller.name, g.controller.contact),
            *((("Data protection officer", g.dpo.name, g.dpo.contact),) if g.dpo else ())),
            head=("Role", "Name", "Contact")),
        "purpose": Section("Purpose and legal basis", text=(
            f"{spec.description.strip()} Legal basis: {BASIS[spec.legal_basis]}; consent is "
            f"asked for the purpose '{spec.consent_purpose}', and each event is used only "
            "while its user's latest decision grants it (withdrawal, pause and reset take effect "
            f"at the next daily run). Data use: {_name(doc, 'data_uses', spec.data_use)}.")),
        "subjects": Section("Data subjects", text=(
            f"{_name(doc, 'data_subjects', 'customer')}: users of the app whose events reach "
            "the landing zone.")),
        "data": Section("Personal data collected (raw events) and what happens to each",
                        head=("Field", "Handling", "Category (fideslang)", "What the pipeline "
                              "does"), rows=tuple(fields)),
        "published": Section("What the purpose publishes", head=("Column", "Category"),
                             rows=tuple(published)),
        "recipients": Section("Recipients", head=("Who", "Role", "Receives", "Members / "
                                                  "location"), rows=tuple(readers) or (
            ("nobody", "", "", ""),)),
        "transfers": Section("Transfers to third countries", text=g.transfers),
        "retention": Section("Time limits for erasure", head=("Data", "Kept"), rows=(
            ("raw events (landing zone)", f"{r.raw_days} days"),
            ("quarantine (file, line, reason; never a value)", f"{r.quarantine_days} days"),
            ("staging zones (encrypted)", f"{r.staging_days} days"),
            ("published rows", f"{r.published_days} days"),
            ("DP cohort features and the privacy ledger", "kept: anonymous aggregates over "
             "many users, each release differentially private"),
            ("consent log, audit log", "kept as the accountability record; an erased user's "
             "consent rows are emptied"),
            ("on an erasure request", "every zone, the consent log and the feature store at "
             "the next daily run"))),
    }


def _safeguards(cfg: PipelineConfig, policy: AccessPolicy | None) -> Section:
    f, k = cfg.features, cfg.k_anonymity
    budget = cfg.budget
    rows = [
        ("Pseudonyms", "HMAC-SHA256 under a key derived per purpose (HKDF) from a master key "
                       "held in a secret store; a new published pseudonym each epoch"),
        ("Encryption at rest", "staging zones and the consent log: AES-256-GCM under a derived "
                               "key, bound to each partition or row"),
        ("k-anonymity", f"k = {k.k} users per published group" + (
            f", ℓ = {k.l} distinct sensitive values" if k.l else "")),
        ("Differential privacy", f"user-level ({'ε-DP, Laplace' if f.privacy == 'pure' else 'ρ-zCDP, Gaussian'}"  # noqa: E501
         f", {f.period}ly releases); at most "
         + (f"ε = {budget.epsilon_per_window:g}" if budget.accounting == "pure"
            else f"ρ = {budget.rho_per_window:g}")
         + f" per {budget.window_days} days, held by a MAC-chained ledger"),
        ("Free text", "Presidio and the project's recognizers; every span replaced by a keyed "
                      "token"),
        ("Publishing gate", "Great Expectations suite (allowlisted columns, no residual PII, "
                            "k-anonymity, ℓ-diversity) and the daily re-identification check "
                            "(at most 1/k singled out); a failure blocks publishing"),
        ("Access", "an access matrix decided by Casbin" + (
            f" ({len(policy.roles)} roles, {len(policy.members)} members; sha256 "
            f"{policy.sha256[:12]})" if policy else " (not configured)")
         + "; Feast permissions generated from it"),
        ("Accountability", "an append-only, MAC-chained audit log of releases, erasures, "
                           "rekeys, subject access, key issues and contract changes, verified "
                           "by every run"),
    ]
    return Section("Technical and organisational security measures (Art. 32)",
                   head=("Measure", "How"), rows=tuple(rows))


def _measured(manifests: Sequence[Manifest], cfg: PipelineConfig) -> Section:
    """Residual risk from what the runs measured (latest run, and over all runs)."""
    m = _latest(manifests)
    if m is None:
        return Section("Residual risk, measured", text="No run yet: nothing measured.")
    reid = m.reidentification
    pii_checks = [c for x in manifests if x.validation for c in x.validation.checks
                  if "pii" in c.expectation]
    dp = m.differential_privacy
    ka = m.k_anonymity
    disp = m.monitoring.disparity if m.monitoring else None
    alerts = sum(len(x.monitoring.alerts) for x in manifests if x.monitoring)
    rows = [
        ("Re-identification by an insider holding the staging zone",
         "not run" if reid is None else "not applicable (counts only)" if not reid.applicable
         else f"{reid.rate:.1%} singled out ({reid.worst_attack}); limit {reid.limit:.0%} "
              f"(1/k)", "published counts cover at least k users each" if reid is not None
         and not reid.applicable else "k-anonymous rows under keyed pseudonyms; the gate "
                                      "blocks above 1/k"),
        ("Residual personal data in what is published",
         f"{sum(c.success for c in pii_checks)} of {len(pii_checks)} column checks passed over "
         f"{len(manifests)} run(s)", "Presidio scan of every published string column; a "
                                     "failure blocks publishing"),
        ("Inference from the DP features",
         "no release yet" if dp is None or not dp.release_due else
         f"{dp.unit} {dp.window_spent:g} spent of {dp.window_budget:g} per "
         f"{dp.window_days} days", "user-level DP; the ledger refuses a release over budget"),
        ("Small groups served worse (disparate cost)",
         "; ".join(x for x in (
             f"k-anonymity suppresses {ka.worst_suppression_ratio:.1f}× the overall share in "
             f"{ka.worst_suppression_group}" if ka and ka.worst_suppression_ratio else "",
             f"DP error {disp.worst_error_ratio:.1f}× the release's in "
             f"{disp.worst_error_group}" if disp and disp.worst_error_ratio else "") if x)
         or "not measured yet", "measured every run; soft guardrails alert above the "
                                "configured ratios"),
        ("Drift or anomalies in what is published", f"{alerts} soft guardrail alert(s) over "
         f"{len(manifests)} run(s)", "drift tested against the DP noise; notifiers told"),
    ]
    return Section(f"Residual risk, measured (latest run {m.date})",
                   head=("Risk", "Measured", "Measure"), rows=tuple(rows))


def records_of_processing(cfg: PipelineConfig, policy: AccessPolicy | None,
                          manifests: Sequence[Manifest], day: date) -> Document:
    doc = categories(cfg)
    c = _common(cfg, policy, doc)
    return Document(
        f"Record of processing activities: {cfg.purpose}",
        f"GDPR Art. 30(1), generated from the pipeline's contracts and config on {day}.",
        (c["controller"], c["purpose"], c["subjects"], c["data"], c["published"],
         c["recipients"], c["transfers"], c["retention"], _safeguards(cfg, policy)))


def dpia(cfg: PipelineConfig, policy: AccessPolicy | None, manifests: Sequence[Manifest],
         day: date) -> Document:
    doc = categories(cfg)
    c = _common(cfg, policy, doc)
    spec = cfg.purpose_spec
    raw = list(cfg.event_schema.fields)
    dropped = cfg.event_schema.with_handling("drop")
    necessity = Section("Necessity and proportionality", text=(
        f"Of {len(raw)} fields received, {len(dropped)} direct identifiers "
        f"({', '.join(dropped)}) are removed first, identifiers are pseudonymized, location, "
        "age, network and time are coarsened, and free text is scrubbed; the purpose "
        f"publishes {len(spec.columns)} allowlisted columns ({', '.join(spec.columns)}), each "
        "within a declared domain, and the validation suite fails on any other. Data is kept "
        f"only as long as the windows below. Legal basis: {BASIS[spec.legal_basis]}."))
    reviewers = cfg.governance.dpia_reviewers
    signoff = Section("Sign-off", head=("Reviewer", "Decision", "Date"), rows=tuple(
        (r, "", "") for r in reviewers) or (("(set governance.dpia_reviewers)", "", ""),))
    return Document(
        f"Data protection impact assessment (draft): {cfg.purpose}",
        f"GDPR Art. 35(7), drafted on {day} from the contracts, the config and what the runs "
        "measured; for the reviewers to complete and sign.",
        (Section("Systematic description of the processing", text=(
            "Daily scheduled runs ingest the app's raw events, keep those of users who "
            "consented to the purpose, remove or pseudonymize identifiers, scrub free text, "
            "generalize quasi-identifiers to k-anonymity, validate the table before publishing "
            "it, and release user-level differentially private cohort features to a feature "
            "store for ML teams.")),
         c["purpose"], c["data"], c["published"], c["recipients"], necessity, c["retention"],
         _measured(manifests, cfg), _safeguards(cfg, policy), c["controller"], signoff))


def _document(d: Document) -> doc.Document:
    return doc.Document(
        title=d.title, heading=d.title, intro=(doc.Note(d.subtitle, "view"),), width=72,
        sections=tuple(doc.Section(s.title, ((s.text,) if s.text else ())
                                   + ((doc.Table(s.head, s.rows),) if s.rows else ()))
                       for s in d.sections))


def to_html(d: Document) -> str:
    return doc.render_html(_document(d))


def to_pdf(d: Document) -> bytes:
    """The same sections as a PDF (ReportLab, A4), from the same document model."""
    return doc.render_pdf(_document(d))


def write_governance(area: DataPath, cfg: PipelineConfig, policy: AccessPolicy | None,
                     manifests: Sequence[Manifest], day: date) -> dict[str, DataPath]:
    """Both documents, as HTML and (`reports.pdf`) PDF, under `<area>/governance/`."""
    written = {}
    for name, document in (("records_of_processing", records_of_processing(
            cfg, policy, manifests, day)), ("dpia", dpia(cfg, policy, manifests, day))):
        formats = [(".html", lambda d: to_html(d).encode())]
        if cfg.reports.pdf:
            formats.append((".pdf", to_pdf))
        for suffix, render in formats:
            content = render(document)
            path = area / FOLDER / f"{name}{suffix}"
            atomic_write_bytes(path, content)
            written[f"{name}{suffix}"] = path
    return written
