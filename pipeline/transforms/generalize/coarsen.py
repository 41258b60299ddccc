"""Coarsen quasi-identifiers, then enforce k-anonymity (and ℓ-diversity) over the purpose's
quasi-identifiers. Each generalizer is a small function picked by `GeneralizeConfig`:

- GPS -> H3 cell, adaptive: starts at `h3_resolution`; a cell whose group is short of k users
  moves to its parent, down to `h3_floor_resolution` (`kanon.enforce`).
- GPS -> city, region (US state, else country) or country, by offline reverse geocoding
  against places of at least `region_min_population` people (`reverse-geocode` ships its data).
- IP -> network prefix (/24, /48), country (`iptocc`, offline), or nothing.
- Postal code -> ZIP3, with the 17 ZIP3 areas HIPAA Safe Harbor restricts mapped to 000.
- Age -> bands (and wider bands as a fallback), time -> date and hour or day, OS -> device
  type, device model -> itself if enough users have it, else "other".

The precise values are dropped here. Groups still short of k are suppressed, counted and
reported with the information lost.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Sequence

import polars as pl
import polars_h3

from pipeline.config import GeneralizeConfig, age_band_labels
from pipeline.core.details import (
    GeneralizeDetails,
    GeneralizeTally,
    H3Tally,
    InformationLoss,
    KGroupCost,
)
from pipeline.core.records import StageStats
from pipeline.features.base import DIMENSIONS
from pipeline.transforms.generalize.kanon import (
    Hierarchy,
    Suppression,
    at_levels,
    enforce,
    k_achieved,
    l_achieved,
)

UNKNOWN = "unknown"
OTHER = "other"
# ZIP3 areas of 20,000 people or fewer (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)(i)(B), 2000
# census list); published as 000.
RESTRICTED_ZIP3 = frozenset({"036", "059", "063", "102", "203", "556", "692", "790", "821", "823",
                             "830", "831", "878", "879", "884", "890", "893"})
PRECISE = ("latitude", "longitude", "ip_address", "age", "event_time", "postal_code",
           "device_model")


def day_part(hour: pl.Expr) -> pl.Expr:
    """Night (0-5), morning (6-11), afternoon (12-17), evening (18-23): the exact hour of each
    event, with a user's other events, singles the user out (measured: 55% of users re-found by
    joining published rows to raw events; with day parts and no session length, 12%)."""
    return (pl.when(hour < 6).then(pl.lit("night")).when(hour < 12).then(pl.lit("morning"))
            .when(hour < 18).then(pl.lit("afternoon")).otherwise(pl.lit("evening")))


def h3_hierarchy(cfg: GeneralizeConfig, base: str = "_h3_base") -> Hierarchy:
    """`h3_cell` at `h3_resolution` minus the level, down to the floor (cells as UInt64)."""
    return Hierarchy("h3_cell", cfg.h3_resolution - cfg.h3_floor_resolution,
                     lambda level: polars_h3.cell_to_parent(base, cfg.h3_resolution - level),
                     sources=(base,))


def h3_base(cfg: GeneralizeConfig) -> pl.Expr:
    return polars_h3.latlng_to_cell("latitude", "longitude", cfg.h3_resolution).alias("_h3_base")


def adaptive_h3_cells(points: pl.DataFrame, cfg: GeneralizeConfig, *, user_col: str, k: int
                      ) -> tuple[pl.DataFrame, Suppression]:
    """GPS points to the finest H3 cell holding >= k users, coarsened cell by cell to the floor;
    points whose floor cell is still short are suppressed. `h3_cell` comes back as UInt64."""
    h3 = h3_hierarchy(cfg)
    located = points.with_columns(h3_base(cfg))
    return enforce(located, ["h3_cell"], user_col, k, hierarchies=[h3])


def place_levels(cfg: GeneralizeConfig) -> tuple[str, ...]:
    """Place names from `region_level` up to country: the region hierarchy's levels."""
    order = ("city", "region", "country")
    return order[order.index(cfg.region_level):]


def places(df: pl.DataFrame, cfg: GeneralizeConfig) -> pl.DataFrame:
    """`_place_<level>` columns (city, region, country) per row, from the nearest place of at
    least `region_min_population` people, offline. Region is the US state, elsewhere the
    country. Points are rounded to ~1 km and de-duplicated first: one lookup per place seen."""
    import reverse_geocode  # ships its own place data: nothing is downloaded

    rounded = df.select(pl.col("latitude").round(2).alias("_lat"),
                        pl.col("longitude").round(2).alias("_lon"))
    uniq = rounded.unique().drop_nulls()
    found = reverse_geocode.search(list(uniq.iter_rows()),
                                   min_population=cfg.region_min_population) if uniq.height else []
    region = [p.get("state") if p.get("country_code") == "US" else p.get("country")
              for p in found]
    names = {"city": [f"{p.get('city')}, {r}" for p, r in zip(found, region, strict=True)],
             "region": region, "country": [p.get("country") for p in found]}
    lookup = uniq.with_columns(pl.Series(f"_place_{lv}", names[lv], dtype=pl.String)
                               for lv in place_levels(cfg))
    return (rounded.join(lookup, on=["_lat", "_lon"], how="left", maintain_order="left")
            .drop("_lat", "_lon").fill_null(UNKNOWN))


def region_hierarchy(cfg: GeneralizeConfig) -> Hierarchy:
    """`region` at `region_level`, then each wider place up to country."""
    levels = place_levels(cfg)

    return Hierarchy("region", len(levels) - 1, lambda level: pl.col(f"_place_{levels[level]}"),
                     sources=tuple(f"_place_{lv}" for lv in levels))


def age_hierarchy(cfg: GeneralizeConfig) -> Hierarchy:
    """`age_band` from the configured edges, then each list of wider edges in turn."""
    edge_lists = (cfg.age_band_edges, *cfg.age_band_coarser_edges)

    def band(edges: Sequence[int]) -> pl.Expr:
        return pl.col("age").cut(list(edges), labels=list(age_band_labels(edges)),
                                 left_closed=True).cast(pl.String)

    return Hierarchy("age_band", len(edge_lists) - 1, lambda level: band(edge_lists[level]),
                     sources=("age",))


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


def ip_countries(ips: pl.Series) -> pl.Series:
    """ISO country code of each address, offline (`iptocc` ships the registries' data);
    null for private, reserved and malformed addresses."""
    import iptocc

    uniq = ips.drop_nulls().unique()
    lookup = pl.DataFrame({"ip": uniq, "country": iptocc.country_code(uniq.to_list())},
                          schema={"ip": pl.String, "country": pl.String})
    return ips.to_frame("ip").join(lookup, on="ip", how="left", maintain_order="left")["country"]


def zip3(codes: pl.Expr) -> pl.Expr:
    """First three digits of a US ZIP (or ZIP+4); restricted ZIP3s become 000; else null."""
    first3 = codes.str.strip_chars().str.extract(r"^(\d{3})\d{2}(?:-\d{4})?$")
    return pl.when(first3.is_in(sorted(RESTRICTED_ZIP3))).then(pl.lit("000")).otherwise(first3)


def device_model_users(df: pl.DataFrame, *, user_col: str) -> pl.DataFrame:
    """Distinct users per device model; adds up over shards, which hold disjoint users."""
    return (df.group_by("device_model").agg(pl.col(user_col).n_unique().alias("users"))
            .drop_nulls("device_model"))


def common_device_models(users: pl.DataFrame, *, min_users: int, top_n: int | None
                         ) -> list[str]:
    """Models that at least `min_users` users have (and, if set, among the `top_n` most used),
    from `device_model_users` of every shard."""
    merged = (users.group_by("device_model").agg(pl.col("users").sum())
              .filter(pl.col("users") >= min_users)
              .sort(["users", "device_model"], descending=[True, False]))
    return (merged.head(top_n) if top_n else merged)["device_model"].to_list()


def device_model_groups(df: pl.DataFrame, *, user_col: str, min_users: int,
                        top_n: int | None) -> pl.Series:
    """The device model where at least `min_users` users (and, if set, it is among the `top_n`
    most used) have it; "other" for the rare ones, which single people out."""
    common = common_device_models(device_model_users(df, user_col=user_col),
                                  min_users=min_users, top_n=top_n)
    return _model_group(df, common)


def _model_group(df: pl.DataFrame, common: list[str]) -> pl.Series:
    return df.select(pl.when(pl.col("device_model").is_in(common)).then(pl.col("device_model"))
                     .otherwise(pl.lit(OTHER)))["device_model"]


def hierarchies(cfg: GeneralizeConfig) -> dict[str, Hierarchy]:
    return {h.column: h for h in (h3_hierarchy(cfg), age_hierarchy(cfg), region_hierarchy(cfg))}


def locate(table: pl.DataFrame, cfg: GeneralizeConfig, *, common_models: list[str]
           ) -> pl.DataFrame:
    """Each row's coarse values (still with the precise ones), every hierarchy at level 0:
    row by row, so a shard is located on its own."""
    cols: list[pl.Expr | pl.Series] = [
        h3_base(cfg),
        pl.col("event_time").dt.date().alias("event_date"),
        (pl.col("event_time").dt.hour().cast(pl.Int8) if cfg.time_granularity == "hour"
         else pl.lit(None, dtype=pl.Int8)).alias("event_hour"),
        day_part(pl.col("event_time").dt.hour()).alias("day_part"),
        pl.col("os").replace_strict(cfg.device_type_by_os, default=OTHER,
                                    return_dtype=pl.String).alias("device_type"),
    ]
    if "ip_address" in table.columns and cfg.ip == "prefix":
        cols.append(ip_prefixes(table["ip_address"], v4=cfg.ipv4_prefix,
                                v6=cfg.ipv6_prefix).alias("ip_prefix"))
    elif "ip_address" in table.columns and cfg.ip == "country":
        cols.append(ip_countries(table["ip_address"]).alias("ip_country"))
    if "postal_code" in table.columns and cfg.postal_code == "zip3":
        cols.append(zip3(pl.col("postal_code")).alias("zip3"))
    if "device_model" in table.columns:
        cols.append(_model_group(table, common_models).alias("device_model_group"))
    return at_levels(pl.concat([table.with_columns(cols), places(table, cfg)],
                               how="horizontal"), list(hierarchies(cfg).values()))


_PLAN_SEED = 11  # any fixed seed: every shard's plan rows must hash a user alike


class Generalizer:
    """Generalization over a day in shards, exact as if the day were one table.

    Enforcement (`kanon.enforce`) decides by distinct users and distinct sensitive values per
    group, and a row's fate depends only on its quasi-identifiers' source values. So: pass 1
    (`plan`) collects each shard's distinct (user, source values, sensitive value) rows, which
    are small, and enforces on them once; the outcome is a mapping from source values to
    published values. Pass 2 (`apply`) joins each shard to it; rows with no mapping are
    suppressed. Device models are counted over all shards first."""

    def __init__(self, cfg: GeneralizeConfig, *, quasi_identifiers: Sequence[str],
                 user_col: str, k: int, l: int | None = None,  # noqa: E741
                 sensitive: str | None = None, order: Sequence[str] = ("h3_cell", "age_band")
                 ) -> None:
        self.cfg, self.qis, self.user_col, self.k = cfg, list(quasi_identifiers), user_col, k
        self.l, self.sensitive, self.order = l, sensitive, list(order)
        self.ordered = [hierarchies(cfg)[c] for c in order]
        stepped = {h.column for h in self.ordered}
        # What decides a row's published values: the stepped hierarchies' sources and the
        # other quasi-identifiers as they are.
        self.on = [*(src for h in self.ordered for src in h.sources),
                   *(q for q in self.qis if q not in stepped)]
        self.common: list[str] = []

    def plan(self, shards: Iterable[pl.DataFrame]) -> None:
        """Pass 1 over the shards (iterated twice: device models, then the plan rows), here;
        `device_users`, `use_devices`, `plan_rows` and `plan_from` are its steps, for an
        engine that runs the per-shard ones where the shards are."""
        if any("device_model" in t.columns for t in itertools.islice(shards, 1)):
            self.use_devices([self.device_users(t) for t in shards])
        self.plan_from([self.plan_rows(t) for t in shards])

    def device_users(self, table: pl.DataFrame) -> pl.DataFrame | None:
        """One shard's (device model, users): what picks the common models."""
        if "device_model" not in table.columns:
            return None
        return device_model_users(table, user_col=self.user_col)

    def use_devices(self, users: list[pl.DataFrame | None]) -> None:
        """The common device models, from every shard's `device_users`."""
        found = [u for u in users if u is not None]
        if found:
            self.common = common_device_models(
                pl.concat(found), min_users=self.cfg.device_model_min_users or self.k,
                top_n=self.cfg.device_model_top_n)

    def plan_rows(self, table: pl.DataFrame) -> pl.DataFrame:
        """One shard's distinct (user, source values, sensitive value) rows (after
        `use_devices`): small, and all the plan needs of the shard."""
        keep = list(dict.fromkeys([self.user_col, *self.on, *self.qis,
                                   *([self.sensitive] if self.sensitive else [])]))
        # The plan only counts users, so the user is a 64-bit hash of the pseudonym: 8 bytes
        # a row where the pseudonym is 64 characters (at 10M events the plan rows of every
        # shard meet in one process). Two users sharing a hash (about 1 in 10^7 on a day of
        # a million users) would count as one: more generalization, never less.
        return (locate(table, self.cfg, common_models=self.common).select(keep)
                .with_columns(pl.col(self.user_col).cast(pl.String).hash(seed=_PLAN_SEED))
                .unique())

    def plan_from(self, parts: list[pl.DataFrame]) -> None:
        """Enforce k (and ℓ) once over every shard's `plan_rows`."""
        rows = pl.concat(parts).unique()  # the user as `plan_rows` hashed it
        kept, self.suppression = enforce(rows, self.qis, self.user_col, self.k,
                                         hierarchies=self.ordered, l=self.l,
                                         sensitive=self.sensitive)
        published = [c for h in self.ordered for c in (h.column, h.level_column)]
        self.mapping = kept.select(*self.on, *published).unique()
        self.k_achieved = k_achieved(kept, self.qis, self.user_col)
        self.l_achieved = (l_achieved(kept, self.qis, self.sensitive)
                           if self.sensitive and self.sensitive in kept.columns else None)

    def apply(self, table: pl.DataFrame) -> tuple[pl.DataFrame, StageStats]:
        """Pass 2: one shard generalized, its precise values dropped, and its tally (rows,
        levels, H3 cells) for `stats`. Reads only the plan, so shards may run anywhere."""
        located = locate(table, self.cfg, common_models=self.common)
        dims = [d for d in DIMENSIONS if d in located.columns]
        located = located.with_columns(pl.col(d).cast(pl.String).fill_null(UNKNOWN)
                                       .alias(f"_g_{d}") for d in dims).drop(
            *(c for h in self.ordered for c in (h.column, h.level_column)))
        kept = located.join(self.mapping, on=self.on, how="inner", nulls_equal=True,
                            maintain_order="left")
        groups = _group_tally(located, kept, dims, [h.level_column for h in self.ordered])
        levels = {h.column: dict(kept.get_column(h.level_column).value_counts().iter_rows())
                  for h in self.ordered}
        h3 = H3Tally()
        known = kept.select(pl.col("h3_cell").drop_nulls())
        if known.height:
            sums = known.select(polars_h3.get_resolution("h3_cell").sum().alias("r"),
                                polars_h3.cell_area("h3_cell", "km^2").sum().alias("a"))
            h3 = H3Tally(resolutions=float(sums["r"][0]), area_km2=float(sums["a"][0]),
                         cells=known.height)
        out = (kept.with_columns(polars_h3.int_to_str("h3_cell").fill_null(UNKNOWN)
                                 .alias("h3_cell"))
               .drop(*PRECISE, *(c for c in kept.columns if c.startswith(("_h3_base",
                                                                          "_place_",
                                                                          "_level_", "_g_"))),
                     strict=False))
        return out, StageStats(stage="generalize", rows_in=table.height, rows_out=kept.height,
                               details=GeneralizeTally(levels=levels, h3=h3, groups=groups))

    def stats(self, parts: Sequence[StageStats]) -> StageStats:
        """The stage's stats from every shard's tally (`apply`)."""
        tally = StageStats.merged(parts)
        rows_in, rows_out = tally.rows_in, tally.rows_out
        done = tally.details_of(GeneralizeTally)
        loss: dict[str, InformationLoss] = {}
        for h in self.ordered:
            counts = dict(sorted(done.levels[h.column].items()))
            n = sum(counts.values())
            mean = sum(lv * c for lv, c in counts.items()) / n if n else 0.0
            loss[h.column] = InformationLoss(
                mean_level_share=round(mean / h.levels, 4) if h.levels else 0.0,
                rows_per_level={str(lv): c for lv, c in counts.items()})
        cells = done.h3.cells
        loss["h3_cell"] = (loss.get("h3_cell") or InformationLoss()).model_copy(update={
            "mean_resolution": round(done.h3.resolutions / cells, 2) if cells else None,
            "mean_cell_area_km2": round(done.h3.area_km2 / cells, 2) if cells else None})
        suppressed = rows_in - rows_out
        cfg = self.cfg
        costs = group_costs(done.groups, {h.level_column: h.levels for h in self.ordered},
                            rows_in=rows_in, rows_out=rows_out)
        worst = max(costs[1:], key=lambda c: c.suppressed_share, default=None)
        overall = costs[0].suppressed_share if costs else 0.0
        return StageStats(stage="generalize", rows_in=rows_in, rows_out=rows_out,
                          dropped={"k_anonymity_suppressed": suppressed} if suppressed else {},
                          details=GeneralizeDetails(
            k_required=self.k, k_achieved=self.k_achieved, l_required=self.l,
            sensitive_attribute=self.sensitive, l_achieved=self.l_achieved,
            quasi_identifiers=list(self.qis), generalize_order=list(self.order),
            share_rows_suppressed=round(suppressed / rows_in, 4) if rows_in else 0.0,
            information_loss=loss, group_costs=costs,
            worst_suppression_ratio=round(worst.suppressed_share / overall, 3)
            if worst is not None and overall else None,
            worst_suppression_group=f"{worst.dimension}={worst.group}" if worst else None,
            h3_resolution=cfg.h3_resolution,
            h3_floor_resolution=cfg.h3_floor_resolution, region_level=cfg.region_level,
            ip=cfg.ip, postal_code=cfg.postal_code, time_granularity=cfg.time_granularity,
            users_suppressed=self.suppression.users_suppressed,
            groups_suppressed=self.suppression.groups_suppressed,
            groups_kept=self.suppression.groups_kept,
            rows_suppressed=suppressed)).check_balanced()


def _group_tally(located: pl.DataFrame, kept: pl.DataFrame, dims: Sequence[str],
                 level_columns: Sequence[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Per group of each dimension (its value before generalizing): rows in, rows kept, and
    each hierarchy's level summed over the kept rows (`GeneralizeTally.groups`)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for d in dims:
        g = f"_g_{d}"
        rows = dict(located.group_by(g).len().iter_rows())
        sums = kept.group_by(g).agg(pl.len().alias("kept"),
                                    *(pl.col(c).cast(pl.Int64).sum().alias(c)
                                      for c in level_columns))
        per: dict[str, dict[str, int]] = {str(v): {"rows": int(n), "kept": 0} for v, n in
                                          rows.items()}
        for row in sums.iter_rows(named=True):
            per[str(row[g])].update({"kept": int(row["kept"]),
                                     **{f"level:{c}": int(row[c]) for c in level_columns}})
        out[d] = per
    return out


def group_costs(groups: dict[str, dict[str, dict[str, int]]], levels: dict[str, int], *,
                rows_in: int, rows_out: int) -> list[KGroupCost]:
    """Overall first, then each dimension's groups: suppressed share and generalization
    (mean level share over the hierarchies that can step) from the shards' tallies."""
    steppable = {c: n for c, n in levels.items() if n}

    def generalization(tally: dict[str, int]) -> float:
        kept = tally.get("kept", 0)
        if not kept or not steppable:
            return 0.0
        return round(sum(tally.get(f"level:{c}", 0) / (kept * n) for c, n in steppable.items())
                     / len(steppable), 4)

    total: dict[str, int] = {"kept": rows_out}
    if groups:
        first = next(iter(groups.values()))
        for c in steppable:
            total[f"level:{c}"] = sum(t.get(f"level:{c}", 0) for t in first.values())
    out = [KGroupCost(dimension="all", group="all", rows=rows_in,
                      suppressed_share=round(1 - rows_out / rows_in, 4) if rows_in else 0.0,
                      generalization=generalization(total))]
    for d, per in groups.items():
        out.extend(KGroupCost(dimension=d, group=g, rows=t["rows"],
                              suppressed_share=round(1 - t.get("kept", 0) / t["rows"], 4)
                              if t["rows"] else 0.0, generalization=generalization(t))
                   for g, t in sorted(per.items()))
    return out


def generalize_table(table: pl.DataFrame, cfg: GeneralizeConfig, *,
                     quasi_identifiers: Sequence[str], user_col: str, k: int,
                     l: int | None = None,  # noqa: E741
                     sensitive: str | None = None,
                     order: Sequence[str] = ("h3_cell", "age_band")
               ) -> tuple[pl.DataFrame, StageStats]:
    """Coarsen, drop the precise values, generalize short groups further along `order`, and
    suppress what is still short of k users (or l sensitive values): `Generalizer` on one
    table."""
    g = Generalizer(cfg, quasi_identifiers=quasi_identifiers, user_col=user_col, k=k, l=l,
                    sensitive=sensitive, order=order)
    g.plan([table])
    out, tally = g.apply(table)
    return out, g.stats([tally])
