"""The publish gate: a Great Expectations suite over the minimized table.

Checks: columns are exactly the purpose's allowlist; pseudonyms are 64 lowercase hex digits and
never null; no string column holds anything shaped like an e-mail address, phone number or IP
address, nor anything the project's PII detector finds (each distinct value analyzed once);
k-anonymity over the quasi-identifiers is at least k, and ℓ-diversity at least ℓ. Results are
kept in SUMMARY form with no sample of unexpected values, and the custom expectations report
counts only, so neither the results nor Data Docs can carry a raw value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from pipeline.config import PurposeSpec
from pipeline.core.records import CheckResult, ValidationRecord
from pipeline.outputs.data_docs import make_offline
from pipeline.transforms.generalize.kanon import group_sizes
from pipeline.transforms.pseudonymize import PSEUDONYM_PATTERN
from pipeline.transforms.validate import expectations as gx_expectations  # noqa: F401  (registers the k and ℓ expectations)
from pipeline.transforms.validate.merge import ShardValidation, merged_validation

if TYPE_CHECKING:
    from pipeline.transforms.pii.detect import FastAnalyzer

# Shapes of direct identifiers that must not survive minimization.
RESIDUAL_PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    # Not inside a run of letters and digits: H3 cells are hex strings with long digit runs
    # (`8828308281fffff`), ~2% of which look like a phone number otherwise.
    # (As a character or the text's edge rather than a lookaround: the same matches, in the
    # dialect Polars' vectorized regex engine runs.)
    "phone": r"(?:^|[^0-9A-Za-z])(?:\+?\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}"
             r"(?:$|[^0-9A-Za-z])",
    "ipv4": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    "ipv6": r"\b(?:[0-9A-Fa-f]{1,4}:){4,7}[0-9A-Fa-f]{1,4}\b",
}
# No partial_unexpected_list: GX would otherwise copy up to 20 offending values into results.
SAFE_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0,
                      "include_unexpected_rows": False, "return_unexpected_index_query": False}


def build_expectations(spec: PurposeSpec, *, string_columns: list[str], k: int,
                       l: int | None = None, groups: bool = True) -> list:  # noqa: E741
    """The suite; without `groups`, no k-anonymity or ℓ-diversity check (for one shard of a
    day, where a group's users span shards: `validate_shards` checks them on the merge)."""
    import great_expectations.expectations as gxe

    exps: list = [gxe.ExpectTableColumnsToMatchSet(column_set=list(spec.columns),
                                                   exact_match=True)]
    for col in spec.pseudonym_columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
        exps.append(gx_expectations.ExpectColumnValuesToFullyMatchPattern(
            column_name=col, pattern=PSEUDONYM_PATTERN,
            description=f"Every {col} is a pseudonym: 64 lowercase hex digits (HMAC-SHA256)"))
    for col, d in spec.domains.items():  # what minimize enforced, checked again
        if d.values is not None:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(d.values)))
        elif d.pattern is not None and col in string_columns:
            exps.append(gx_expectations.ExpectColumnValuesToFullyMatchPattern(
                column_name=col, pattern=f"^(?:{d.pattern})$",
                description=f"Every value of {col} is in its declared domain (pattern)"))
        elif d.min is not None or d.max is not None:
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=d.min,
                                                          max_value=d.max))
    for col in string_columns:
        if col in spec.pseudonym_columns:
            continue
        exps.append(gx_expectations.ExpectColumnValuesToHoldNoPiiShape(
            column_name=col, patterns=RESIDUAL_PII_PATTERNS,
            description=f"No value of {col} contains anything shaped like an e-mail address, "
            "phone number or IP address"))
        exps.append(gx_expectations.ExpectColumnToHaveNoDetectedPii(
            scanned_column=col, description=f"Column {col} holds no value Presidio detects as "
            "personal data (names, e-mails, phones, IPs, card numbers and the rest)"))
    if spec.aggregate:  # each published count covers at least k users
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=spec.aggregate.users, min_value=k))
    elif groups:
        exps.append(gx_expectations.ExpectTableToBeKAnonymous(
            quasi_identifiers=list(spec.quasi_identifiers), user_column=spec.user_col,
            min_k=k, description=f"Every combination of {', '.join(spec.quasi_identifiers)} "
            f"is shared by at least {k} distinct users (k-anonymity)"))
    if l is not None and spec.sensitive_attribute and groups and not spec.aggregate:
        exps.append(gx_expectations.ExpectTableToBeLDiverse(
            quasi_identifiers=list(spec.quasi_identifiers),
            sensitive_column=spec.sensitive_attribute, min_l=l,
            description=f"Every group of {', '.join(spec.quasi_identifiers)} holds at least "
            f"{l} distinct values of {spec.sensitive_attribute} (ℓ-diversity)"))
    return exps


def _quiet_gx() -> None:
    for name in ("great_expectations", "great_expectations.core", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def validate_table(table: pl.DataFrame, spec: PurposeSpec, *, k: int, gx_root: Path,
                   run_name: str, detector: FastAnalyzer,
                   l: int | None = None, groups: bool = True  # noqa: E741
                   ) -> ValidationRecord:
    """Run the suite on `table`; write results and Data Docs under `gx_root`. `detector`
    scans every string column for residual PII."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()
    gx_root.mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=str(gx_root))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    name = f"minimization_{spec.purpose}"
    source = ctx.data_sources.add_or_update_pandas(name="pipeline")
    asset = next((a for a in source.assets if a.name == name), None) or \
        source.add_dataframe_asset(name=name)
    batch_def = next((b for b in asset.batch_definitions if b.name == "whole_table"), None) or \
        asset.add_batch_definition_whole_dataframe("whole_table")
    # Rebuilt from code on every run, so a changed allowlist or k takes effect.
    for collection in (ctx.checkpoints, ctx.validation_definitions, ctx.suites):
        if any(item.name == name for item in collection.all()):
            collection.delete(name)
    string_columns = [c for c, t in table.schema.items() if t == pl.String]
    suite = ctx.suites.add(gx.ExpectationSuite(
        name=name, expectations=build_expectations(
            spec, string_columns=string_columns, k=k, l=l, groups=groups)))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def,
                                                                suite=suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name=name, validation_definitions=[vd], result_format=SAFE_RESULT_FORMAT,
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")]))
    with gx_expectations.pii_detector(detector):
        result = checkpoint.run(batch_parameters={"dataframe": table.to_pandas()},
                                run_id=gx.core.run_identifier.RunIdentifier(run_name=run_name))
    checks = []
    for vr in result.run_results.values():
        for r in vr.results:
            cfg = r.expectation_config  # GX fills it for every result of a suite run
            kwargs = cfg.kwargs if cfg is not None else {}
            res = r.result or {}
            column = (kwargs.get("column") or kwargs.get("scanned_column")
                      or kwargs.get("column_name"))
            checks.append(CheckResult(expectation=cfg.type if cfg else "unknown", column=column,
                                      success=bool(r.success),
                                      observed=res.get("observed_value"),
                                      unexpected_count=res.get("unexpected_count")))
    docs = gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    make_offline(docs.parent)  # the CDN scripts and styles as shipped copies, linked relatively
    return ValidationRecord(success=bool(result.success), checks=checks,
                            data_docs_index=str(docs) if docs.exists() else None)


def validate_shard(table: pl.DataFrame, spec: PurposeSpec, *, k: int, gx_root: Path,
                   run_name: str, detector: FastAnalyzer, l: int | None = None  # noqa: E741
                   ) -> ShardValidation:
    """The suite on one shard of a day (where the shard is), in Great Expectations."""
    qis, user, sensitive = list(spec.quasi_identifiers), spec.user_col, spec.sensitive_attribute
    record = validate_table(table, spec, k=k, gx_root=gx_root, run_name=run_name,
                            detector=detector, l=l, groups=False)
    if spec.aggregate:
        return ShardValidation(record, None, None)
    return ShardValidation(
        record, group_sizes(table, qis, user),
        table.select(*qis, sensitive).unique() if l is not None and sensitive else None)


def validate_shards(shards: Iterable[pl.DataFrame], spec: PurposeSpec, *, k: int,
                    gx_root: Path, run_name: str, detector: FastAnalyzer,
                    l: int | None = None) -> ValidationRecord:  # noqa: E741
    """The suite on a day in shards, one after another in this process (see
    `merged_validation`)."""
    return merged_validation([validate_shard(t, spec, k=k, gx_root=gx_root,
                                             run_name=f"{run_name}-shard{i:05d}",
                                             detector=detector, l=l)
                              for i, t in enumerate(shards)], spec, k=k, l=l)
