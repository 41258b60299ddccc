from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.core.errors import ConfigError
from tests.conftest import ROOT, write_config


def test_when_repo_config_loaded_then_schemas_and_purpose_are_checked() -> None:
    cfg = load_config(ROOT / "config" / "pipeline.yaml")
    assert cfg.purpose_spec.columns[0] == "user_pseudonym"
    assert cfg.event_schema.with_handling("drop") == ["name", "email", "phone", "home_city"]
    assert cfg.generalize.age_bands[0] == "under-18"


def test_when_a_field_is_wrong_then_error_names_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, k_anonymity__k=1)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "k_anonymity.k" in str(err.value)


def test_when_an_unknown_key_is_present_then_load_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path, features__epsilonn=2.0)
    with pytest.raises(ConfigError, match="features.epsilonn"):
        load_config(path)


def test_when_device_types_cannot_be_produced_then_load_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path, features__device_types=["mobile", "smartwatch"])
    with pytest.raises(ConfigError, match="smartwatch"):
        load_config(path)


@pytest.mark.parametrize(("override", "message"), [
    ({"generalize__h3_floor_resolution": 9}, "h3_floor_resolution must not be finer"),
    ({"generalize__age_band_coarser_edges": [[18, 30]]}, "must be a subset of the finer edges"),
    ({"k_anonymity__generalize_order": ["h3_cell", "zip3"]}, "generalize_order"),
    ({"features__privacy": "zcdp"}, "privacy: zcdp is set by rho"),
    ({"features__privacy": "zcdp", "features__epsilon": None, "features__rho": 0.5},
     "need budget.accounting: zcdp"),
    ({"features__cohorts": "private"}, "cohorts: private needs a delta > 0"),
    ({"features__cohorts": "private", "features__delta": 1e-6}, "over budget.delta_per_window"),
    ({"budget__accounting": "zcdp"}, "accounting: zcdp needs rho_per_window"),
])
def test_when_generalization_config_is_inconsistent_then_load_fails(
        tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, **override))


def test_when_l_is_set_without_a_sensitive_attribute_then_load_fails(tmp_path: Path) -> None:
    purposes = tmp_path / "purposes"
    purposes.mkdir()
    spec = (ROOT / "schemas" / "purposes" / "personalization.yaml")
    (purposes / "personalization.yaml").write_text(
        spec.read_text().replace("sensitive_attribute: content_category", ""))
    path = write_config(tmp_path, paths__purposes_dir=str(purposes))
    with pytest.raises(ConfigError, match="declares no sensitive_attribute"):
        load_config(path)


def test_when_the_data_root_is_an_object_store_then_a_local_root_is_required(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local_root: required when data_root is an object "):
        load_config(write_config(tmp_path, paths__data_root="s3://lake/data"))
    with pytest.raises(ConfigError, match="no filesystem for nosuchstore://"):
        load_config(write_config(tmp_path, paths__data_root="nosuchstore://lake/data",
                                 paths__local_root=str(tmp_path)))
    cfg = load_config(write_config(tmp_path, paths__data_root="s3://lake/data",
                                   paths__local_root="local"))
    assert str(cfg.paths.root) == "s3://lake/data"
    assert cfg.paths.local == tmp_path / "local"  # relative to the config file, as any path


@pytest.mark.parametrize(("override", "message"), [
    ({"budget__epsilon_per_window": float("inf")}, "budget.epsilon_per_window"),
    ({"features__epsilon": float("nan")}, "features.epsilon"),
    ({"features__feature_set": "../published/personalization"}, "features.feature_set"),
    ({"ingest__day_field": "os"}, "ingest.day_field 'os' is not a timestamp"),
])
def test_when_a_value_would_disable_a_guarantee_or_escape_its_folder_then_load_fails(
        tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, **override))


def test_when_a_yaml_key_is_given_twice_then_load_fails_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text().replace("k_anonymity:\n", "k_anonymity:\n  k: 50\n", 1)
    path.write_text(text)  # k: 50, then the file's own k: 5 below it
    with pytest.raises(ConfigError, match=r"key 'k' given twice"):
        load_config(path)


def test_when_a_purpose_name_is_a_path_then_load_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("purpose: personalization",
                                             "purpose: ../../etc"))
    with pytest.raises(ConfigError, match="purpose"):
        load_config(path)


def test_when_generate_is_asked_for_no_days_then_it_is_a_usage_error(tmp_path: Path) -> None:
    from pipeline.cli import main

    with pytest.raises(SystemExit) as usage:
        main(["--config", str(write_config(tmp_path)), "generate", "--days", "0"])
    assert usage.value.code == 2


def test_when_an_object_store_root_has_no_credentials_then_the_error_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli import main
    from tests.conftest import TEST_KEY_TEXT

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    monkeypatch.setattr("pipeline.cli._setup_logging", lambda *a, **k: None)
    config = write_config(tmp_path, paths__data_root="s3://no-such-bucket/pp",
                          paths__local_root=str(tmp_path / "local"))
    assert main(["--config", str(config), "run", "--date", "2026-11-01"]) == 5
    err = capsys.readouterr().err
    assert "NoCredentialsError" in err and "AWS_ACCESS_KEY_ID" in err
    assert "Traceback" not in err
