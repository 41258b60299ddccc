from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import write_config


def test_when_repo_config_loaded_then_schemas_and_purpose_are_checked() -> None:
    cfg = load_config(Path(__file__).parents[1] / "config" / "pipeline.yaml")
    assert cfg.purpose_spec.columns[0] == "user_pseudonym"
    assert cfg.event_schema.with_handling("drop") == ["name", "email", "phone", "home_city",
                                                      "device_model"]
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
