"""Least privilege: the access matrix decides (Casbin), the CLI's sensitive commands ask it,
and the audit log of sensitive actions names who did what under which role, and shows an
edit, a removed entry or a rollback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from pipeline.access.policy import AccessPolicy, decide, load_policy
from pipeline.cli import Exit, main
from pipeline.core.errors import AuditLogIntegrityError, ConfigError
from pipeline.run import run_all
from tests.conftest import ROOT, generated_day

PRODUCTION = ROOT / "config" / "access.production.yaml"


def test_when_the_production_matrix_is_asked_then_each_role_gets_its_actions_only() -> None:
    policy = load_policy(PRODUCTION)
    allowed = {(who, p, a) for who in ("dpo", "recsys-team", "bi-team", "airflow",
                                       "external-auditor", "someone-else")
               for p in ("personalization", "analytics")
               for a in ("run", "subject_access", "read_features", "read_audit_log", "rekey")
               if decide(policy, who, p, a).allowed}
    assert ("dpo", "personalization", "subject_access") in allowed
    assert ("dpo", "personalization", "rekey") not in allowed
    assert ("recsys-team", "personalization", "read_features") in allowed
    assert ("recsys-team", "analytics", "read_features") not in allowed  # another purpose
    assert ("bi-team", "personalization", "read_features") not in allowed
    assert ("airflow", "analytics", "run") in allowed
    assert ("external-auditor", "analytics", "read_audit_log") in allowed
    assert not [x for x in allowed if x[0] == "someone-else"]
    assert decide(policy, "dpo", "personalization", "subject_access").role == "privacy_officer"
    assert not decide(policy, "dpo", "marketing", "subject_access").allowed  # no such purpose


def test_when_the_matrix_names_an_undeclared_role_then_loading_names_the_member(
        tmp_path: Path) -> None:
    doc = yaml.safe_load(PRODUCTION.read_text())
    doc["members"]["mallory"] = ["superuser@*"]
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"member 'mallory': role 'superuser' is not declared"):
        load_policy(path)
    assert AccessPolicy.model_validate(yaml.safe_load(PRODUCTION.read_text())).sha256 != \
        AccessPolicy.model_validate({**yaml.safe_load(PRODUCTION.read_text()),
                                     "members": {}}).sha256


def _matrix(tmp_path: Path) -> Path:
    doc = yaml.safe_load(PRODUCTION.read_text())
    doc["members"] = {"ops": ["operator@*"], "alice": ["privacy_officer@*"],
                      "mallory": ["ml_reader@personalization"], "airflow": ["operator@*"]}
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _audit(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    capsys.readouterr()
    assert main(["--config", str(config), "audit-log", "--json"]) == Exit.OK
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_when_a_reader_asks_for_a_subjects_data_then_it_is_denied_and_the_officer_is_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=80, seed=3, reports__pdf=True,
                                 paths__access_policy=str(_matrix(tmp_path)))
    account = json.loads((data / "raw" / "events" / "date=2026-11-01" / "events.jsonl")
                         .read_text().splitlines()[0])["account_id"]
    # outside a task (`dag.test()` leaves Airflow's task variables in the environment)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    monkeypatch.setenv("PRIVACY_PIPELINE_USER", "mallory")
    assert main(["--config", str(config), "run", "--date", "2026-11-01"]) == Exit.DENIED
    assert main(["--config", str(config), "subject-access", "--account-id", account]) \
        == Exit.DENIED
    err = capsys.readouterr().err
    assert "'mallory' may not subject access for purpose 'personalization'" in err
    assert account not in err
    monkeypatch.setenv("PRIVACY_PIPELINE_USER", "ops")
    assert main(["--config", str(config), "run", "--date", "2026-11-01"]) == Exit.OK
    # the feature view's Feast permissions, from the same matrix
    from pipeline.config import load_config
    from pipeline.outputs.feast import open_store

    perms = {p.name: p for p in open_store(load_config(config)).list_permissions()}
    assert perms["cohort_daily-readers"].policy.roles == ["ml_reader"]
    assert perms["cohort_daily-writers"].policy.roles == ["operator"]
    monkeypatch.setenv("PRIVACY_PIPELINE_USER", "alice")
    assert main(["--config", str(config), "subject-access", "--account-id", account,
                 "--out", str(tmp_path / "archive")]) == Exit.OK
    entries = _audit(config, capsys)
    seen = [(e["actor"], e["role"], e["action"], e["outcome"]) for e in entries]
    assert seen[:2] == [("mallory", "none", "run", "denied"),
                        ("mallory", "none", "subject_access", "denied")]
    assert ("ops", "operator", "purpose_change", "done") in seen
    assert ("ops", "operator", "policy_change", "done") in seen
    assert ("ops", "operator", "release", "done") in seen
    assert seen[-1] == ("alice", "privacy_officer", "subject_access", "done")
    assert entries[-1]["subject"] and len(entries[-1]["subject"]) == 16
    assert account not in json.dumps(entries)
    release = next(e for e in entries if e["action"] == "release")
    assert release["detail"]["unit"] == "ε" and release["detail"]["cost"] == 1.0
    # the bundle: the matrix (version 1), the records of processing and the DPIA draft
    reports = data / "reports" / "personalization"
    index = (reports / "index.html").read_text()
    assert "Access matrix" in index and "mallory@personalization" in index
    assert "mallory" not in (reports / "external" / "index.html").read_text()
    assert (reports / "access" / "v1" / "matrix.md").is_file()
    dpia = (reports / "governance" / "dpia.html").read_text()
    assert "Re-identification by an insider holding the staging zone" in dpia
    assert "0.0% singled out" in dpia and "limit 20% (1/k)" in dpia
    assert (reports / "governance" / "records_of_processing.pdf").read_bytes()[:5] == b"%PDF-"
    manifest = json.loads((reports / "date=2026-11-01" / "manifest.json").read_text())
    assert manifest["governed_by"]["access_matrix_version"] == 1
    assert len(manifest["governed_by"]["config_sha256"]) == 64


@pytest.mark.slow
def test_when_the_audit_log_is_edited_or_cut_or_rolled_back_then_the_next_run_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=60, seed=4, days=2)
    ctx, published = run_all("2026-11-01", config)
    assert published
    db = ctx.cfg.paths.local / "audit_log" / "audit_log.sqlite"
    backup = tmp_path / "audit_log.backup"
    n = len(ctx.audit_log().verify("personalization"))
    assert n >= 3  # the contracts, and the release

    def copy(src: Path, dst: Path) -> None:  # SQLite's backup: the write-ahead log included
        with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
            a.backup(b)

    def sql(statement: str) -> None:
        with sqlite3.connect(db) as con:
            con.execute(statement)

    copy(db, backup)

    # an edited entry: who released it
    sql("UPDATE audit_log SET actor = 'someone-else' WHERE action = 'release'")
    _, ok = run_all("2026-11-02", config)
    outcome = ctx.records(__import__("datetime").date(2026, 11, 2)).outcomes()["check_input"]
    assert not ok and outcome.error == "AuditLogIntegrityError"
    assert f"entry {n} was edited" in (outcome.message or "")
    # the last entry removed: the chain still verifies, the kept head does not
    copy(backup, db)
    sql(f"DELETE FROM audit_log WHERE n = {n}")
    with pytest.raises(AuditLogIntegrityError, match=rf"ends at entry {n - 1}, but entry {n} "
                                                     "was written"):
        ctx.audit_log().verify("personalization")
    # the whole log rolled back to an older copy (before the day's release)
    copy(backup, db)
    assert len(ctx.audit_log().verify("personalization")) == n
    _, ok = run_all("2026-11-02", config)
    assert ok  # a run appends: the day's release
    copy(backup, db)
    with pytest.raises(AuditLogIntegrityError, match="rolled back"):
        ctx.audit_log().verify("personalization")
