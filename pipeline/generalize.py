"""Coarsen quasi-identifiers, then enforce k-anonymity over the purpose's quasi-identifiers.

GPS -> H3 cell at a configured resolution and a region (state or country) by offline reverse
geocoding; IP -> network prefix or nothing; age -> band; time -> date and hour; OS -> device
type. The precise values are dropped here. Groups still under k users are suppressed, counted
and reported.
"""

from __future__ import annotations

import ipaddress

import polars as pl
import polars_h3

from pipeline.config import GeneralizeConfig
from pipeline.funnel import StageStats
from pipeline.kanon import k_achieved, suppress_below_k

UNKNOWN = "unknown"


def h3_cells(resolution: int) -> pl.Expr:
    return polars_h3.latlng_to_cell("latitude", "longitude", resolution, return_dtype=pl.Utf8)


def regions(df: pl.DataFrame, *, min_population: int) -> pl.Series:
    """State (US) or country name of each point, by nearest populated place, offline.

    Points are rounded to ~1 km and de-duplicated first, so the lookup costs O(places seen).
    """
    import reverse_geocode  # ships its own place data: nothing is downloaded

    rounded = df.select(pl.col("latitude").round(2).alias("_lat"),
                        pl.col("longitude").round(2).alias("_lon"))
    uniq = rounded.unique().drop_nulls()
    places = reverse_geocode.search(list(uniq.iter_rows()), min_population=min_population)
    names = [p.get("state") if p.get("country_code") == "US" else p.get("country")
             for p in places]
    lookup = uniq.with_columns(region=pl.Series(names, dtype=pl.String))
    return rounded.join(lookup, on=["_lat", "_lon"], how="left",
                        maintain_order="left")["region"].fill_null(UNKNOWN)


def ip_prefixes(ips: pl.Series, *, v4: int, v6: int) -> pl.Series:
    """Network prefix of each address (`203.0.113.0/24`); one parse per distinct address."""
    uniq = ips.drop_nulls().unique()

    def prefix(ip: str) -> str | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        bits = v4 if addr.version == 4 else v6
        return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))

    lookup = pl.DataFrame({"ip": uniq, "prefix": [prefix(x) for x in uniq.to_list()]},
                          schema={"ip": pl.String, "prefix": pl.String})
    return ips.to_frame("ip").join(lookup, on="ip", how="left", maintain_order="left")["prefix"]


def age_bands(cfg: GeneralizeConfig) -> pl.Expr:
    return pl.col("age").cut(list(cfg.age_band_edges), labels=list(cfg.age_bands),
                             left_closed=True).cast(pl.String)


def generalize(table: pl.DataFrame, cfg: GeneralizeConfig, *, quasi_identifiers: tuple[str, ...],
               user_col: str, k: int) -> tuple[pl.DataFrame, StageStats]:
    """Coarsen, drop the precise values, and suppress groups of fewer than k users."""
    cols = [
        h3_cells(cfg.h3_resolution).fill_null(UNKNOWN).alias("h3_cell"),
        regions(table, min_population=cfg.region_min_population).alias("region"),
        age_bands(cfg).alias("age_band"),
        pl.col("event_time").dt.date().alias("event_date"),
        (pl.col("event_time").dt.hour().cast(pl.Int8) if cfg.time_granularity == "hour"
         else pl.lit(None, dtype=pl.Int8)).alias("event_hour"),
        pl.col("os").replace_strict(cfg.device_type_by_os, default="other",
                                    return_dtype=pl.String).alias("device_type"),
    ]
    if cfg.ip == "prefix":
        cols.append(ip_prefixes(table["ip_address"], v4=cfg.ipv4_prefix,
                                v6=cfg.ipv6_prefix).alias("ip_prefix"))
    coarse = table.with_columns(cols).drop("latitude", "longitude", "ip_address", "age",
                                           "event_time", strict=False)
    kept, suppression = suppress_below_k(coarse, quasi_identifiers, user_col, k)
    dropped = {"k_anonymity_suppressed": suppression["rows_suppressed"]}
    stats = StageStats("generalize", rows_in=table.height, rows_out=kept.height,
                       dropped={k_: v for k_, v in dropped.items() if v}, details={
                           "k_required": k,
                           "k_achieved": k_achieved(kept, quasi_identifiers, user_col),
                           "quasi_identifiers": list(quasi_identifiers),
                           "h3_resolution": cfg.h3_resolution, "ip": cfg.ip,
                           "time_granularity": cfg.time_granularity, **suppression})
    return kept, stats.check_balanced()
