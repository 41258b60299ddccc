"""The pipeline's exceptions: everything it raises on purpose is a `PipelineError`.

Every message names a file, row, field or rule, never a value from the data: these messages end
up in logs, Airflow task output and reports, which must not carry personal data.

    PipelineError
    ├── ConfigError            config, schema or CLI argument missing, malformed or inconsistent
    ├── KeyUnavailableError    no usable key: the run stops rather than go on unkeyed
    ├── StorageError           a partition cannot be read or decrypted
    │   └── MissingInputError  a stage's input partition does not exist
    ├── ErasureRequestError    a line of the erasure request file is not a request
    ├── PiiPolicyError         an untagged column holds PII and the policy says stop
    ├── GuardrailError         the day's input breaches a guardrail: nothing charged or published
    ├── ValidationFailedError  the minimization suite failed: publishing is blocked
    ├── BudgetExceededError    a DP release would overspend its window: nothing released
    ├── LedgerIntegrityError   the ledger and a stored release disagree: no redraw
    ├── ConsentLogIntegrityError  the consent log or its landing file was rewritten
    ├── StageCrashedError      an unexpected error in a stage; its message is withheld
    ├── UndeclaredAccessError  a stage touched a zone or record its row in the table omits
    ├── NotFoundError          what was asked for does not exist (an unknown cohort)
    ├── TransientError         an I/O or connection error that may pass: worth a retry
    └── RunFailedError         a run's gate: a stage failed or did not run, nothing published

Only `TransientError` is `retryable`: every other error recurs on a retry (the same data, the
same config), so a scheduler should fail the run at once and tell someone.
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
from pathlib import Path

log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """Base class: anything the pipeline raises on purpose."""

    retryable = False


class ConfigError(PipelineError):
    """A config or schema file, or a command-line argument, is missing, malformed or
    inconsistent."""


class KeyUnavailableError(PipelineError):
    """No pseudonymization key could be loaded; the run must stop rather than go on unkeyed."""


class StorageError(PipelineError):
    """A partition cannot be read: not encrypted where it should be, written under a key that
    is not loaded, or altered."""


class MissingInputError(StorageError):
    """A stage's input partition does not exist (run the earlier stage first)."""


class ErasureRequestError(PipelineError):
    """A line of the erasure request file is not a request; it names the line, not the id."""


class PiiPolicyError(PipelineError):
    """A column not tagged as PII holds PII and the policy says to stop (`undeclared_columns`)."""


class GuardrailError(PipelineError):
    """The day's input is not what a normal day looks like (too few rows or users, too much
    quarantined, far from recent days' volume): the day may have lost its input upstream, so
    nothing is charged to the ledger or published (`pipeline.transforms.guardrails`)."""


class NotFoundError(PipelineError):
    """What was asked for does not exist: a cohort outside the public grid, a day never
    released."""


class ValidationFailedError(PipelineError):
    """The minimization suite failed: publishing is blocked for this partition."""


class BudgetExceededError(PipelineError):
    """A DP release would overspend the privacy budget of its window; nothing is released."""


class LedgerIntegrityError(PipelineError):
    """The privacy ledger and the stored release disagree; refuse rather than redraw noise."""


class AccessDeniedError(PipelineError):
    """The caller's roles in the access matrix do not allow the action for the purpose."""


class AuditLogIntegrityError(PipelineError):
    """The audit log of sensitive actions was edited, reordered, truncated or rewound."""


class ConsentLogIntegrityError(PipelineError):
    """The consent log's chain is broken, or the landing file no longer holds what was
    imported from it: nobody's consent can be trusted until it is restored."""


class UndeclaredAccessError(PipelineError):
    """A stage touched a zone or run record that its row in `pipeline.stages` does not
    declare: a bug in the stage or in the table, stopped before it does anything."""


class StageCrashedError(PipelineError):
    """A stage raised something the pipeline did not expect. Only the error's type and where
    it was raised are kept: library messages can quote data values (a failed cast lists them)."""


class TransientError(PipelineError):
    """An I/O, network or database error that may not recur: the one kind worth retrying."""

    retryable = True


class RunFailedError(PipelineError):
    """The run's gate: a stage failed or never ran in this run, so the day is not published."""


# Errors of the machine, not of the data or config: a retry may find them gone (a full disk,
# a locked SQLite file, Postgres or Redis unreachable).
TRANSIENT = (OSError, sqlite3.OperationalError)
TRANSIENT_NAMES = {"OperationalError", "InterfaceError", "ConnectionError"}


# An object store refusing us for want of credentials: a setup problem, told plainly (botocore's
# messages name the missing setting, never data).
CREDENTIAL_NAMES = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                    "NoAuthTokenError"}


def safe_error(exc: Exception) -> PipelineError:
    """The error to report and raise: a PipelineError's own (its messages hold no values), a
    transient one's with its message (paths and hosts), a missing object-store credential as
    a config error, else only its type and frames."""
    if isinstance(exc, PipelineError):
        return exc
    if type(exc).__name__ in CREDENTIAL_NAMES:
        return ConfigError(f"the object store refused the data root: {type(exc).__name__}: "
                           f"{exc}. Provide its credentials in the environment (for S3: "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile) or in "
                           "paths.storage_options")
    if isinstance(exc, TRANSIENT) or type(exc).__name__ in TRANSIENT_NAMES:
        return TransientError(f"{type(exc).__name__}: {exc}")
    frames = traceback.extract_tb(exc.__traceback__)
    log.error("unexpected %s (message withheld: it may quote data values); raised at:\n%s",
              type(exc).__name__, "".join(traceback.format_list(frames)))
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return StageCrashedError(f"unexpected {type(exc).__name__}{where}; its message is "
                             "withheld (it may quote data values), the frames are in the log")
