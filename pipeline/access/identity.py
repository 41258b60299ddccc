"""Who is calling: the name the access matrix and the audit log know them by.

Inside an Airflow task, the scheduler's service identity (`scheduler_identity`: the workers
act for the DAG, whoever triggered it; Airflow's own log says who did). Elsewhere, the
environment variable the matrix names (set by a login wrapper, a CI job or a container), else
the login name. A name is a label, not a credential: the matrix is enforced where the caller
cannot change the code or the environment (the workers, an operator's host); everywhere else
it records who said they were acting.
"""

from __future__ import annotations

import getpass
import os

from pipeline.access.policy import AccessPolicy


def caller(policy: AccessPolicy | None) -> str:
    """Without a matrix (a library call), the matrix's default variable and scheduler name."""
    fields = AccessPolicy.model_fields
    scheduler = policy.scheduler_identity if policy else fields["scheduler_identity"].default
    env_var = policy.identity_env_var if policy else fields["identity_env_var"].default
    if os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return str(scheduler)
    named = os.environ.get(str(env_var), "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid:{os.getuid()}"
