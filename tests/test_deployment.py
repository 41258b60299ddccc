"""The production stack's files agree with each other and parse, and every Airflow service gets
the same secrets."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.orchestration.deployment import load_deployment

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
           "airflow-triggerer")
SHARED_SECRETS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY",
                  "AIRFLOW__API_AUTH__JWT_SECRET")


def test_when_compose_file_is_read_then_airflow3_stack_is_complete() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "redis", *AIRFLOW}
    for name, service in services.items():  # every long-running service says if it is well
        assert name == "airflow-init" or "test" in service["healthcheck"], name
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["PRIVACY_PIPELINE_KEY_FILE"] == "/run/secrets/pipeline_key"
    assert services["airflow-scheduler"]["user"].startswith("${AIRFLOW_UID")
    assert any(v.endswith(":/opt/privacy-pipeline/data/raw")
               for v in services["airflow-scheduler"]["volumes"])  # the landing volume
    assert "pipeline_key" in doc["secrets"]
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()


def test_when_production_config_is_loaded_then_it_extends_the_default_with_redis() -> None:
    cfg = load_config(ROOT / "config" / "pipeline.production.yaml")
    assert cfg.feature_store.online_store.type == "redis"
    assert cfg.keys.file == Path("/run/secrets/pipeline_key")
    assert cfg.features == load_config(ROOT / "config" / "pipeline.yaml").features
    for name in ("deployment.yaml", "deployment.production.yaml"):
        deployment = load_deployment(ROOT / "config" / name)
        for purpose, path in deployment.purposes.items():  # each names a matching config
            assert load_config(path).purpose == purpose, (name, purpose)


def _compose() -> list[str]:
    cmd = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    if not (shutil.which("docker-compose") or shutil.which("docker")):
        pytest.skip("no docker compose client to check the file with (.ci/run installs one)")
    if subprocess.run([*cmd, "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client here has no compose plugin (.ci/run installs one)")
    return cmd


def test_when_env_is_generated_then_every_airflow_service_gets_the_same_secrets(
        tmp_path: Path) -> None:
    cmd = _compose()
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    without = subprocess.run([*cmd, "config"], cwd=tmp_path, capture_output=True, text=True)
    assert without.returncode != 0 and "compose-env" in without.stderr  # no .env: refused
    subprocess.run([sys.executable, str(ROOT / "tasks.py"), "compose-env", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    result = subprocess.run([*cmd, "config"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    env = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    for secret in SHARED_SECRETS:
        values = {services[s]["environment"][secret] for s in AIRFLOW}
        assert len(values) == 1 and len(values.pop()) >= 32, secret
    assert {services[s]["user"] for s in AIRFLOW} == {f"{env['AIRFLOW_UID']}:0"}
    assert (tmp_path / ".secrets" / "passwords" / "simple_auth_manager_passwords.json"
            ).stat().st_mode & 0o777 == 0o600
    # the notifiers' e-mail connection is made from .env, the same in every service
    smtp = {services[s]["environment"]["AIRFLOW_CONN_SMTP_DEFAULT"] for s in AIRFLOW}
    assert len(smtp) == 1 and json.loads(smtp.pop())["host"] == env["SMTP_HOST"]
    # what the pipeline writes is on the host, where a reviewer can open it
    mounts = [m.split(":")[:2] if isinstance(m, str) else [m["source"], m["target"]]
              for m in services["airflow-scheduler"]["volumes"]]  # compose v1 or v2 form
    [source] = [src for src, target in mounts if target == "/opt/privacy-pipeline/data"]
    assert source == str(tmp_path / "pipeline-data")  # a host folder, not a named volume
    assert "pools import" in " ".join(services["airflow-init"]["command"])
    again = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "compose-env",
                            str(tmp_path)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr  # never overwritten
