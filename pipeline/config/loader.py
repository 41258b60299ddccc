"""`load_config`: a pipeline YAML (and the file it `extends`) into a checked `PipelineConfig`.

Relative paths in a config file are resolved against the directory holding that file, so a run
does not depend on the current working directory. Bad config fails here, naming the file and the
field, never later in a stage.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from pipeline.config.files import format_errors, read_yaml
from pipeline.config.settings import PipelineConfig
from pipeline.core.errors import ConfigError


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def _read_config(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file; `extends: other.yaml` starts from that file (merged key by key)."""
    if path in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    raw = read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return _merge(_read_config((path.parent / parent).resolve(), (*seen, path)), raw)


def _resolve(base: Path, value: Path | str) -> Path | str:
    if "://" in str(value):  # an object store URL
        return str(value)
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_config(path: str | Path) -> PipelineConfig:
    """Load and check `config/pipeline.yaml`, its schemas and its purpose file.

    Relative paths resolve against the directory of the file named here; a file that `extends`
    another must therefore sit beside it (as `config/pipeline.production.yaml` does).
    """
    path = Path(path).resolve()
    raw = _read_config(path)
    base = path.parent
    paths = raw.get("paths")
    if isinstance(paths, dict):
        raw["paths"] = {k: _resolve(base, v) if isinstance(v, str) else v for k, v in paths.items()}
    pii = raw.get("pii")
    if isinstance(pii, dict) and isinstance(pii.get("recognizers"), str) \
            and pii["recognizers"] != "default":
        pii["recognizers"] = str(_resolve(base, pii["recognizers"]))
    keys = raw.get("keys")
    if isinstance(keys, dict) and keys.get("file"):
        keys["file"] = _resolve(base, keys["file"])
    raw["source_path"] = path
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(path, exc)) from None
    check_compatible(cfg)
    return cfg


def check_compatible(cfg: PipelineConfig) -> None:
    """Rules that span sections or files (each section checks its own fields when built).

    Loads the referenced schema and purpose files, so a bad one fails at load time too."""
    path, f, b = cfg.source_path, cfg.features, cfg.budget
    spec = cfg.purpose_spec
    _ = cfg.event_schema, cfg.consent_schema
    problems = []
    if not b.accountant.admits(f.mechanism):
        problems.append("features.privacy: zcdp releases need budget.accounting: zcdp "
                        "(pure accounting cannot add up zCDP releases)")
    if f.period == "week" and cfg.retention.staging_days < 7:
        problems.append("a weekly feature set reads 7 days of generalized (staging) "
                        "partitions: retention.staging_days must be at least 7")
    cap = b.release_cap(f.mechanism)
    if not f.release_budget.within(cap):
        problems.append(f"features: a release of {f.release_budget.describe()} is over "
                        f"budget.max_{cap.param}_per_release ({cap.value:g})")
    if f.delta > b.delta_per_window:
        problems.append(f"features.delta {f.delta:g} is over budget.delta_per_window "
                        f"{b.delta_per_window:g}")
    if cfg.k_anonymity.l and not spec.event_sensitive_attribute:
        problems.append(f"k_anonymity.l is set but purpose {spec.purpose!r} declares no "
                        "sensitive_attribute")
    stray = [q for q in cfg.k_anonymity.generalize_order
             if q not in spec.event_quasi_identifiers]
    if stray:
        problems.append(f"k_anonymity.generalize_order names {stray}, which are not "
                        f"quasi-identifiers of purpose {spec.purpose!r}")
    unknown = set(f.device_types) - set(cfg.generalize.device_type_by_os.values())
    if unknown:
        problems.append(f"features.device_types {sorted(unknown)} are never produced by "
                        "generalize.device_type_by_os")
    day_field = cfg.ingest.day_field
    if day_field is not None and getattr(cfg.event_schema.fields.get(day_field), "type",
                                         None) != "timestamp":
        problems.append(f"ingest.day_field {day_field!r} is not a timestamp field of the "
                        "event schema")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
