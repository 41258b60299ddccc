"""The access matrix in the audit bundle, versioned: `reports/<purpose>/access/vN/` holds each
version the runs were made under (`matrix.md`, `matrix.html`, `version.json`) and, from the
second on, `diff.md` against the one before. A new version is written by the first run under
a changed matrix (as the privacy notice's are); the audit log names who ran it."""

from __future__ import annotations

import difflib
import json
from datetime import date
from html import escape

from pydantic import BaseModel

from pipeline.access.policy import AccessPolicy
from pipeline.core.fs import DataPath
from pipeline.core.storage import atomic_write_bytes, atomic_write_json
from pipeline.outputs.document import html_table, page

FOLDER = "access"


class MatrixVersion(BaseModel):
    version: int
    effective: str  # the first run date under it
    sha256: str


def _held_by(policy: AccessPolicy, role: str, *, external: bool) -> str:
    """Who holds `role` (`identity@purpose`), or in the external view only how many."""
    holders = policy.holders(role)
    if external:
        return f"{len({h.split('@')[0] for h in holders})} member(s)"
    return ", ".join(holders) or "nobody"


def to_markdown(policy: AccessPolicy) -> str:
    """Roles, what each may do and who holds it, per purpose."""
    lines = ["| Role | May | Held by |", "|---|---|---|"]
    for name, role in policy.roles.items():
        lines.append(f"| {name}: {role.description} | {', '.join(role.may)} | "
                     f"{_held_by(policy, name, external=False)} |")
    return "\n".join(["# Access matrix", "", f"Purposes: {', '.join(policy.purposes)}. "
                      f"Scheduled runs act as `{policy.scheduler_identity}`.", "", *lines, ""])


def section(policy: AccessPolicy, versions: list[MatrixVersion], *, external: bool,
            prefix: str = "") -> str:
    """The audit index's section: the matrix in force and every version with its diff."""
    rows = [(name, role.description, ", ".join(role.may),
             _held_by(policy, name, external=external)) for name, role in policy.roles.items()]
    history = " ".join(
        f'<a href="{prefix}{FOLDER}/v{v.version}/matrix.html">version {v.version}</a> '
        f"(from {escape(v.effective)}"
        + (f', <a href="{prefix}{FOLDER}/v{v.version}/diff.md">diff</a>)' if v.version > 1
           else ")") for v in reversed(versions))
    return (f"<p>Who may do what, decided by Casbin from <code>config/access.yaml</code> "
            f"(version {versions[-1].version if versions else 1}, sha256 "
            f"{escape(policy.sha256[:16])}); the audit log names who did it.</p>"
            + html_table(rows, ("Role", "What for", "May", "Held by"))
            + (f"<p>Versions: {history}</p>" if history else ""))


def matrix_versions(area: DataPath) -> list[MatrixVersion]:
    return sorted((MatrixVersion.model_validate_json(p.read_text())
                   for p in (area / FOLDER).glob("v*/version.json")),
                  key=lambda v: v.version)


def record_matrix(area: DataPath, policy: AccessPolicy, day: date) -> MatrixVersion:
    """The version in force for a run of `day`: the latest if the matrix is unchanged, else
    a new one beside it, with its diff."""
    versions = matrix_versions(area)
    latest = versions[-1] if versions else None
    if latest is not None and latest.sha256 == policy.sha256:
        return latest
    number = latest.version + 1 if latest else 1
    folder = area / FOLDER / f"v{number}"
    text = to_markdown(policy)
    if latest is not None:
        before = (area / FOLDER / f"v{latest.version}" / "matrix.md").read_text()
        diff = "".join(difflib.unified_diff(
            before.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"v{latest.version}/matrix.md", tofile=f"v{number}/matrix.md"))
        atomic_write_bytes(folder / "diff.md", (
            f"# Access matrix: version {latest.version} to {number}\n\n```diff\n{diff}```\n"
        ).encode())
    atomic_write_bytes(folder / "matrix.md", text.encode())
    atomic_write_bytes(folder / "matrix.html", page(
        f"Access matrix, version {number}", f"<h1>Access matrix, version {number}</h1>"
        f"<p>In force from {escape(day.isoformat())}.</p>"
        + section(policy, [], external=False)).encode())
    version = MatrixVersion(version=number, effective=day.isoformat(), sha256=policy.sha256)
    atomic_write_json(folder / "version.json", json.loads(version.model_dump_json()))
    return version
