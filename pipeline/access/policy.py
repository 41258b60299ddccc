"""Who may do what, per purpose: roles and members from `config/access.yaml`, decided by Casbin.

The file is data: roles (what each may do), and members (who holds which role, for which
purpose or `*` for every one). Casbin (pycasbin: Apache's RBAC-with-domains model, pure
Python, 40 ms to import) decides each request `(identity, purpose, action)`; Cedar says more
(attribute conditions, a policy language of its own) than this matrix needs, and OPA is a
server to run. The same matrix is rendered in the audit bundle
(`pipeline.outputs.access_matrix`), versioned by its hash, and turned into Feast permissions
for the purpose's feature views (`pipeline.outputs.feast`).

Actions:
- `run`: run the daily and maintenance stages (what the scheduler does);
- `release`: charge the privacy ledger and publish DP features (a run's `features`);
- `erase`: carry out erasure requests;
- `rekey`, `issue_key`, `export_mac_keys`: key handling;
- `subject_access`: read everything held of one person, and give it to them;
- `scrub_text`: run the PII scrubber on text given on the command line;
- `read_published`, `read_features`: read the purpose's published rows, its Feast features;
- `read_reports`, `read_external_reports`, `read_audit_log`: the bundle, inside and out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from pipeline.config.files import load_model
from pipeline.core.errors import AccessDeniedError, ConfigError
from pipeline.core.model import Model

Action = Literal["run", "release", "erase", "rekey", "issue_key", "export_mac_keys",
                 "subject_access", "scrub_text", "read_published", "read_features",
                 "read_reports", "read_external_reports", "read_audit_log"]
ACTIONS: tuple[str, ...] = get_args(Action)
EVERY = "*"

# RBAC with domains: a member holds a role in a purpose (the domain); a role's rows say what
# it may do. `*` as a member's purpose is expanded to every purpose of the file when loaded.
_MODEL = """
[request_definition]
r = sub, dom, act

[policy_definition]
p = sub, dom, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.act == p.act
"""


class Role(Model):
    description: str
    may: list[Action] = Field(min_length=1)


class AccessPolicy(Model):
    """`config/access.yaml`."""

    version: int = 1
    purposes: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]] = Field(
        min_length=1)
    # who the caller is: this environment variable, else the login name
    identity_env_var: str = "PRIVACY_PIPELINE_USER"
    # what scheduled runs act as (the Airflow workers' service identity)
    scheduler_identity: str = "airflow"
    roles: dict[str, Role] = Field(min_length=1)
    # identity -> ["role@purpose" or "role@*"]; the identity `*` is anyone (development only)
    members: dict[str, list[str]]

    @field_validator("members")
    @classmethod
    def _grants(cls, members: dict[str, list[str]]) -> dict[str, list[str]]:
        for who, grants in members.items():
            for g in grants:
                if g.count("@") != 1:
                    raise ValueError(f"member {who!r}: {g!r} is not 'role@purpose' "
                                     "(or 'role@*')")
        return members

    @model_validator(mode="after")
    def _declared(self) -> AccessPolicy:
        for who, grants in self.members.items():
            for g in grants:
                role, purpose = g.split("@")
                if role not in self.roles:
                    raise ValueError(f"member {who!r}: role {role!r} is not declared under "
                                     f"roles ({', '.join(self.roles)})")
                if purpose != EVERY and purpose not in self.purposes:
                    raise ValueError(f"member {who!r}: purpose {purpose!r} is not declared "
                                     f"under purposes ({', '.join(self.purposes)})")
        return self

    @property
    def sha256(self) -> str:
        """The matrix's version: a hash of what it grants (not of the file's comments)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True)
                              .encode()).hexdigest()

    def grants(self) -> list[tuple[str, str, str]]:
        """(identity, role, purpose) for every membership, `*` purposes expanded."""
        return [(who, role, p) for who, gs in sorted(self.members.items()) for g in gs
                for role, purpose in [g.split("@")]
                for p in (self.purposes if purpose == EVERY else [purpose])]

    @cached_property
    def _enforcer(self):  # noqa: ANN202 - casbin.Enforcer, imported here
        import casbin

        model = casbin.Enforcer.new_model(text=_MODEL)
        e = casbin.Enforcer(model)
        for name, role in self.roles.items():
            for p in self.purposes:
                for action in role.may:
                    e.add_policy(name, p, action)
        for who, role, p in self.grants():
            e.add_grouping_policy(who, role, p)
        return e

    def allows(self, identity: str, purpose: str, action: str) -> bool:
        """Casbin's decision; the identity `*` in `members` stands for anyone."""
        e = self._enforcer
        return bool(e.enforce(identity, purpose, action) or (
            EVERY in self.members and e.enforce(EVERY, purpose, action)))

    def role_for(self, identity: str, purpose: str, action: str) -> str | None:
        """The first of the identity's roles in the purpose that allows the action."""
        for who in (identity, EVERY):
            for w, role, p in self.grants():
                if w == who and p == purpose and action in self.roles[role].may:
                    return role
        return None

    def holders(self, role: str) -> list[str]:
        """`identity@purpose` for every holder of `role` (the bundle's access matrix)."""
        return sorted({f"{w}@{p}" for w, r, p in self.grants() if r == role})

    def readers(self, purpose: str, action: str) -> list[str]:
        """The roles that may do `action` in `purpose` (recipients, Feast roles)."""
        return sorted({r for _, r, p in self.grants()
                       if p == purpose and action in self.roles[r].may})


@dataclass(frozen=True)
class Decision:
    identity: str
    purpose: str
    action: str
    role: str | None

    @property
    def allowed(self) -> bool:
        return self.role is not None


def load_policy(path: Path | None) -> AccessPolicy:
    if path is None:
        raise ConfigError("paths.access_policy is not set: sensitive commands are refused "
                          "without an access matrix (see config/access.yaml)")
    return load_model(AccessPolicy, path)


def decide(policy: AccessPolicy, identity: str, purpose: str, action: str) -> Decision:
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}")
    if purpose not in policy.purposes:
        return Decision(identity, purpose, action, None)
    role = policy.role_for(identity, purpose, action) if policy.allows(
        identity, purpose, action) else None
    return Decision(identity, purpose, action, role)


def refusal(decision: Decision) -> AccessDeniedError:
    """The error for a denied decision, naming who, what and where (never a data value)."""
    return AccessDeniedError(
        f"{decision.identity!r} may not {decision.action.replace('_', ' ')} for purpose "
        f"{decision.purpose!r}: no role of theirs allows it in the access matrix "
        "(config/access.yaml)")


def require(policy: AccessPolicy, identity: str, purpose: str, action: str) -> Decision:
    """The decision, or AccessDeniedError (`refusal`)."""
    decision = decide(policy, identity, purpose, action)
    if not decision.allowed:
        raise refusal(decision)
    return decision
