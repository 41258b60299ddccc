from datetime import UTC, datetime

import polars as pl

from pipeline.config import PipelineConfig
from pipeline.generalize import generalize, ip_prefixes
from pipeline.kanon import k_achieved, suppress_below_k


def test_when_ip_generalized_then_network_prefix_only() -> None:
    ips = pl.Series(["203.0.113.77", "2001:db8:85a3:1:2:3:4:5", "not-an-ip", None])
    assert ip_prefixes(ips, v4=24, v6=48).to_list() == [
        "203.0.113.0/24", "2001:db8:85a3::/48", None, None]


def test_when_k_counted_then_users_not_rows() -> None:
    df = pl.DataFrame({"u": ["a"] * 10 + ["b", "c"], "qi": ["x"] * 10 + ["y", "y"]})
    assert k_achieved(df, ["qi"], "u") == 1
    kept, info = suppress_below_k(df, ["qi"], "u", k=2)
    assert kept["qi"].unique().to_list() == ["y"] and info["rows_suppressed"] == 10


def test_when_generalized_then_precise_values_gone_and_every_group_has_k_users(
        cfg: PipelineConfig) -> None:
    n = 12
    table = pl.DataFrame({
        "user_pseudonym": [f"u{i % 6}" for i in range(n)],
        "age": [30] * 10 + [70, 70],
        "latitude": [40.7128] * n, "longitude": [-74.0060] * n,
        "ip_address": ["198.51.100.7"] * n, "os": ["iOS"] * n,
        "event_time": [datetime(2026, 11, 1, 13, 5, tzinfo=UTC)] * n,
    })
    out, stats = generalize(table, cfg.generalize, quasi_identifiers=(
        "region", "h3_cell", "age_band", "device_type"), user_col="user_pseudonym", k=3)
    assert not {"latitude", "longitude", "ip_address", "age", "event_time"} & set(out.columns)
    assert out["region"].unique().to_list() == ["New York"]
    assert out["age_band"].unique().to_list() == ["25-34"]
    assert out["event_hour"].unique().to_list() == [13]
    assert out["device_type"].unique().to_list() == ["mobile"]
    assert out["ip_prefix"].unique().to_list() == ["198.51.100.0/24"]
    assert stats.dropped == {"k_anonymity_suppressed": 2}  # the two 70-year-old rows, 2 users
    assert stats.details["k_achieved"] >= 3
