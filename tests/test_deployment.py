"""The production stack's files agree with each other and parse."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_when_compose_file_is_read_then_airflow3_stack_is_complete() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    for name in ("postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer"):
        assert name in services, name
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["PRIVACY_PIPELINE_KEY_FILE"] == "/run/secrets/pipeline_key"
    assert "pipeline_key" in doc["secrets"]


def test_when_production_config_is_loaded_then_it_extends_the_default_with_redis() -> None:
    cfg = load_config(ROOT / "config" / "pipeline.production.yaml")
    assert cfg.feature_store.online_store.type == "redis"
    assert cfg.keys.file == Path("/run/secrets/pipeline_key")
    assert cfg.features == load_config(ROOT / "config" / "pipeline.yaml").features


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")),
                    reason="no docker compose client to check the file with")
def test_when_compose_client_present_then_config_parses() -> None:
    cmd = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    if subprocess.run([*cmd, "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client here has no compose plugin")
    result = subprocess.run([*cmd, "config", "--quiet"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
