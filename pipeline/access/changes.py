"""What a run is governed by, as hashes: the purpose's contract (its allowlist file), the
pipeline config and the access matrix, and the code's version. A run logs a change of any of
them in the audit log (who ran with the new version first), and the manifest records them, so
a reviewer can tell which rules a published day was made under."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache, partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import PipelineConfig

if TYPE_CHECKING:
    from pipeline.core.context import RunContext
    from pipeline.ledger.audit_log import AuditEntry

CHANGE_ACTIONS = {"purpose": "purpose_change", "config": "config_change",
                  "access": "policy_change"}


def config_sha256(cfg: PipelineConfig) -> str:
    """The loaded config (after `extends`), not the file's bytes: a comment is no change."""
    dump = cfg.model_dump(mode="json", exclude={"source_path"})
    return hashlib.sha256(json.dumps(dump, sort_keys=True, default=str).encode()).hexdigest()


def contract_hashes(ctx: RunContext) -> dict[str, str]:
    cfg = ctx.cfg
    purpose_file = cfg.paths.purposes_dir / f"{cfg.purpose}.yaml"
    out = {"purpose": hashlib.sha256(purpose_file.read_bytes()).hexdigest(),
           "config": config_sha256(cfg)}
    if ctx.policy is not None:
        out["access"] = ctx.policy.sha256
    return out


@cache
def code_version() -> str:
    """The package version, and the git commit when run from a checkout (`+g<sha>`,
    `.dirty` with uncommitted changes); the version alone in an installed image."""
    try:
        base = version("privacy-pipeline")
    except PackageNotFoundError:
        base = "unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{sha}{'.dirty' if dirty else ''}" if sha else base


def log_changes(ctx: RunContext) -> list[str]:
    """Verify the purpose's audit chain, then log each governing file whose hash differs from
    the last one logged (all of them on a purpose's first run). Returns the kinds logged."""
    entries = ctx.audit_log("write").verify(ctx.cfg.purpose)
    changed = []
    role = (ctx.policy.role_for(ctx.actor, ctx.cfg.purpose, "run") if ctx.policy else None)
    for kind, digest in contract_hashes(ctx).items():
        action = CHANGE_ACTIONS[kind]
        if _last(entries, action) != digest:
            ctx.audit(action, role=role or "unassigned", detail={
                "sha256": digest, "previous_sha256": _last(entries, action),
                "code_version": code_version()},
                unless=partial(_logged, action=action, digest=digest))  # by a run meanwhile
            changed.append(kind)
    return changed


def _logged(entries: list[AuditEntry], *, action: str, digest: str) -> bool:
    return _last(entries, action) == digest


def _last(entries: list[AuditEntry], action: str) -> str | None:
    """The hash the last `action` entry logged."""
    found = [e for e in entries if e.action == action]
    return str(found[-1].detail.get("sha256")) if found else None
