from datetime import UTC, datetime

import polars as pl
import polars_h3
import pytest

from pipeline.config import GeneralizeConfig, PipelineConfig
from pipeline.transforms.generalize.coarsen import (
    adaptive_h3_cells,
    device_model_groups,
    generalize_table,
    ip_countries,
    ip_prefixes,
    zip3,
)
from pipeline.transforms.generalize.kanon import enforce, k_achieved, l_achieved

QIS = ("region", "h3_cell", "age_band", "device_type")


def events(n_users: int, *, lat: float = 40.7128, lon: float = -74.0060, age: int = 30,
           prefix: str = "u", category: str = "news") -> pl.DataFrame:
    return pl.DataFrame({
        "user_pseudonym": [f"{prefix}{i}" for i in range(n_users)],
        "age": [age] * n_users, "latitude": [lat] * n_users, "longitude": [lon] * n_users,
        "ip_address": ["198.51.100.7"] * n_users, "os": ["iOS"] * n_users,
        "postal_code": ["10001"] * n_users, "device_model": ["iPhone 15"] * n_users,
        "content_category": [category] * n_users,
        "event_time": [datetime(2026, 11, 1, 13, 5, tzinfo=UTC)] * n_users,
    })


def test_when_ip_generalized_then_network_prefix_only() -> None:
    ips = pl.Series(["203.0.113.77", "2001:db8:85a3:1:2:3:4:5", "not-an-ip", None])
    assert ip_prefixes(ips, v4=24, v6=48).to_list() == [
        "203.0.113.0/24", "2001:db8:85a3::/48", None, None]


def test_when_ip_mapped_to_country_then_offline_registry_answers() -> None:
    ips = pl.Series(["8.8.8.8", "81.2.69.160", "10.0.0.1", "not-an-ip", None])
    assert ip_countries(ips).to_list() == ["US", "GB", None, None, None]


def test_when_postal_code_coarsened_then_zip3_and_restricted_areas_are_000() -> None:
    codes = pl.DataFrame({"z": ["10001", "03601", "89012-1234", "8901", "ABCDE", None]})
    coarse = codes.select(zip3(pl.col("z")).alias("z"))["z"].to_list()
    assert coarse == ["100", "000", "000", None, None, None]


def test_when_device_model_is_rare_then_it_becomes_other() -> None:
    df = pl.DataFrame({"u": ["a", "b", "c", "d", "a"],
                       "device_model": ["Pixel", "Pixel", "Pixel", "Nokia 3310", "Pixel"]})
    assert device_model_groups(df, user_col="u", min_users=3, top_n=None).to_list() == [
        "Pixel", "Pixel", "Pixel", "other", "Pixel"]
    assert device_model_groups(df, user_col="u", min_users=1, top_n=1).to_list()[3] == "other"


def test_when_k_counted_then_users_not_rows() -> None:
    df = pl.DataFrame({"u": ["a"] * 10 + ["b", "c"], "qi": ["x"] * 10 + ["y", "y"]})
    assert k_achieved(df, ["qi"], "u") == 1
    kept, info = enforce(df, ["qi"], "u", k=2)
    assert kept["qi"].unique().to_list() == ["y"] and info.rows_suppressed == 10


def test_when_cells_are_sparse_then_they_coarsen_until_k_users_and_the_rest_is_suppressed(
        cfg: PipelineConfig) -> None:
    gen = GeneralizeConfig(**{**cfg.generalize.model_dump(), "h3_resolution": 9,
                              "h3_floor_resolution": 5})
    dense = events(6, lat=40.7128, lon=-74.0060, prefix="dense")
    # 6 users spread ~2 km apart: no res-9 cell holds 5 of them, a coarser one does.
    spread = pl.concat([events(1, lat=40.80 + 0.02 * i, lon=-73.95, prefix=f"s{i}-")
                        for i in range(6)])
    lonely = events(1, lat=-33.87, lon=151.21, prefix="alone")
    points = pl.concat([dense, spread, lonely])
    kept, info = adaptive_h3_cells(points, gen, user_col="user_pseudonym", k=5)
    res = kept.select(polars_h3.get_resolution("h3_cell").alias("r"), "user_pseudonym")
    assert set(res.filter(pl.col("user_pseudonym").str.starts_with("dense"))["r"]) == {9}
    assert set(res.filter(pl.col("user_pseudonym").str.starts_with("s"))["r"]) < {5, 6, 7, 8}
    assert info.users_suppressed == 1 and "alone0" not in kept["user_pseudonym"].to_list()
    assert k_achieved(kept, ["h3_cell"], "user_pseudonym") >= 5


def test_when_generalized_then_precise_values_gone_and_every_group_has_k_users(
        cfg: PipelineConfig) -> None:
    table = pl.concat([events(4), events(2, age=70, prefix="old")])
    out, stats = generalize_table(table, cfg.generalize, quasi_identifiers=QIS,
                            user_col="user_pseudonym", k=3)
    assert not {"latitude", "longitude", "ip_address", "age", "event_time", "postal_code",
                "device_model"} & set(out.columns)
    assert not [c for c in out.columns if c.startswith("_")]
    assert out["region"].unique().to_list() == ["New York"]
    assert out["age_band"].unique().to_list() == ["25-34"]
    assert out["event_hour"].unique().to_list() == [13]
    assert out["device_type"].unique().to_list() == ["mobile"]
    assert out["ip_prefix"].unique().to_list() == ["198.51.100.0/24"]
    assert out["zip3"].unique().to_list() == ["100"]
    assert out["device_model_group"].unique().to_list() == ["iPhone 15"]
    # The two 70-year-olds: no finer cell or wider age band ("55+") gives them 3 users.
    assert stats.dropped == {"k_anonymity_suppressed": 2}
    assert stats.details.k_achieved >= 3  # type: ignore[attr-defined]
    assert stats.details.share_rows_suppressed == pytest.approx(  # type: ignore[attr-defined]
        2 / 6, abs=1e-4)


def test_when_a_group_is_short_then_age_widens_before_rows_are_suppressed(
        cfg: PipelineConfig) -> None:
    # 3 users aged 30 and 2 aged 20: apart, the 20-year-olds are short of k=5 at every cell
    # resolution; in the wider band 18-34 all five share a group.
    table = pl.concat([events(3), events(2, age=20, prefix="young")])
    out, stats = generalize_table(table, cfg.generalize, quasi_identifiers=QIS,
                            user_col="user_pseudonym", k=5)
    assert out.height == 5 and stats.dropped == {}
    assert out["age_band"].unique().to_list() == ["18-34"]
    loss = stats.details.information_loss  # type: ignore[attr-defined]
    assert loss["age_band"].mean_level_share == 1.0
    assert loss["h3_cell"].mean_resolution == cfg.generalize.h3_floor_resolution


def test_when_groups_have_one_sensitive_value_then_l_diversity_merges_them(
        cfg: PipelineConfig) -> None:
    # Two groups of 5 users ~1 km apart: each is 5-anonymous in its own res-8 cell but reads
    # only "news" or only "food" (l = 1); in a shared parent cell they are 2-diverse.
    table = pl.concat([events(5, category="news"),
                       events(5, lat=40.7218, prefix="f", category="food")])
    _, plain = generalize_table(table, cfg.generalize, quasi_identifiers=QIS, k=5,
                          sensitive="content_category", user_col="user_pseudonym")
    assert plain.details.l_achieved == 1  # type: ignore[attr-defined]
    out, stats = generalize_table(table, cfg.generalize, quasi_identifiers=QIS, k=5, l=2,
                            sensitive="content_category", user_col="user_pseudonym")
    assert stats.dropped == {} and stats.details.l_achieved == 2  # type: ignore[attr-defined]
    assert l_achieved(out, QIS, "content_category") == 2 and out["h3_cell"].n_unique() == 1
    assert stats.details.information_loss["h3_cell"].mean_resolution < 8  # type: ignore[attr-defined]


def test_when_region_level_is_city_then_short_groups_climb_to_state() -> None:
    gen = GeneralizeConfig(region_level="city", device_type_by_os={"iOS": "mobile"},
                           h3_resolution=4, h3_floor_resolution=4, age_band_coarser_edges=())
    # Brooklyn and Manhattan points: each city short of k=4, New York state holds both.
    table = pl.concat([events(2, lat=40.6782, lon=-73.9442, prefix="b"),
                       events(2, lat=40.7831, lon=-73.9712, prefix="m")])
    out, _ = generalize_table(table, gen, quasi_identifiers=("region",), user_col="user_pseudonym",
                        k=2, order=("region",))
    assert len(set(out["region"])) == 2 and all(", New York" in r for r in out["region"])
    out, _ = generalize_table(table, gen, quasi_identifiers=("region",), user_col="user_pseudonym",
                        k=4, order=("region",))
    assert out["region"].unique().to_list() == ["New York"]
