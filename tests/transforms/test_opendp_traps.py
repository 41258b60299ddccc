"""OpenDP 0.16 behaviours the features stage depends on or works around (issue 5). Each test pins
today's behaviour, so an upgrade that changes it fails here and the design can be revisited."""

import opendp.prelude as dp
import polars as pl

from pipeline.config import PipelineConfig
from pipeline.transforms.features import MAX_ROWS_BOUND, _aggregations

dp.enable_features("contrib")

DATA = pl.DataFrame({"user": [f"u{i // 3}" for i in range(300)],
                     "group": [f"g{i % 7}" for i in range(300)]})
KEYS = pl.DataFrame({"group": [f"g{i}" for i in range(7)]})


def test_when_context_queries_are_released_then_each_takes_the_next_slot_until_none_remain(
) -> None:
    """Slots go to queries in the order they are released, whatever order they were built in;
    one more is refused. (`release_features` needs a single slot: it builds one measurement.)"""
    ctx = dp.Context.compositor(
        data=DATA.lazy(), privacy_unit=dp.unit_of(contributions=3),
        privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=2,
        margins=[dp.polars.Margin(by=["group"], max_length=10_000)])
    first, second, third = (ctx.query().group_by("group").agg(dp.len(signed=True)).with_keys(KEYS)
                            for _ in range(3))
    third.release().collect()
    first.release().collect()
    try:
        second.release()
    except Exception as exc:  # OpenDPException; its type is an implementation detail
        assert "out of queries" in str(exc)
    else:
        raise AssertionError("a third release on a two-slot context was not refused")


def _truncated(k: int, keep: str) -> pl.DataFrame:
    """Rows per group after `truncate_num_groups(k, keep=keep)`, released at an ε so large
    that the noise is below one row."""
    ctx = dp.Context.compositor(
        data=DATA.lazy(), privacy_unit=dp.unit_of(contributions=3, identifier="user"),
        privacy_loss=dp.loss_of(epsilon=1e5), split_evenly_over=1,
        margins=[dp.polars.Margin(by=["group"], max_length=10_000)])
    query = (ctx.query().truncate_num_groups(k, by=["group"], keep=keep)
             .group_by("group").agg(dp.len(signed=True)).with_keys(KEYS))
    return query.release().collect().sort("group")


def test_when_truncating_groups_first_then_each_user_keeps_k_minus_1() -> None:
    """`truncate_num_groups(k)` keeps k-1 groups per user (its filter is `rank < k`), and
    keep="first" keeps each user's lowest keys, not a random choice. `bound_contributions`
    therefore picks each user's cohorts itself, by a seeded hash, before OpenDP sees the data.
    (Each of DATA's 100 users has 3 rows in 3 different groups.)"""
    for k in (2, 3):
        assert abs(_truncated(k, "first")["len"].sum() - 100 * (k - 1)) < 25  # not 100 * k
    # A user's groups are 3 in a row mod 7; keeping the first one, no user keeps g5 or g6
    # ({5, 6, 0} and {6, 0, 1} keep g0).
    kept = dict(_truncated(2, "first").iter_rows())
    assert kept["g0"] > 35 and kept["g5"] + kept["g6"] < 10


def test_when_truncating_groups_by_sample_then_polars_rejects_the_plan() -> None:
    """keep="sample" builds a struct holding the key twice; polars 1.36.1 refuses it."""
    try:
        _truncated(2, "sample")
    except (pl.exceptions.PolarsError, dp.OpenDPException) as exc:
        assert "multiple fields with name" in str(exc)
    else:
        raise AssertionError("truncate_num_groups(keep='sample') works now: consider it")


def test_when_summing_floats_by_group_then_it_needs_max_groups_and_is_very_noisy() -> None:
    """A float sum by group without public keys needs `Margin(max_groups=...)`; with keys it
    builds, but OpenDP charges for float rounding over `max_length` rows: at our public bound
    of 10^9 rows, the scale that gives an integer sum ε=1 gives a float sum ε in the
    hundreds. So
    `bound_contributions` rounds and casts every summed value to an integer."""
    data = pl.DataFrame({"group": ["g0", "g1"] * 50, "x": [1.5, 2.0] * 50}).with_columns(
        x_int=pl.col("x").round(0).cast(pl.Int64))  # in Polars: OpenDP has no round()
    unit, d_in = dp.unit_of(contributions=1)
    domain = dp.with_margin(dp.domain_of(data.lazy(), infer=True),
                            dp.polars.Margin(by=["group"], max_length=MAX_ROWS_BOUND))
    keys = pl.DataFrame({"group": ["g0", "g1"]}).lazy()

    def epsilon(column: pl.Expr, with_keys: bool = True) -> float:
        plan = data.lazy().group_by("group").agg(column.dp.sum((0, 6), scale=6.0))
        if with_keys:
            plan = plan.join(keys, on="group", how="right")
        m = dp.m.make_private_lazyframe(domain, unit, dp.max_divergence(), plan,
                                        global_scale=1.0)
        return m.map(d_in)

    try:
        epsilon(pl.col("x"), with_keys=False)
    except dp.OpenDPException as exc:
        assert "max_groups must be known" in str(exc)
    else:
        raise AssertionError("a float sum by group without max_groups builds now")
    assert epsilon(pl.col("x_int")) == 1.0
    assert epsilon(pl.col("x")) > 100


def test_when_scales_are_fixed_then_one_measurement_accounts_exactly_the_release_epsilon(
        cfg: PipelineConfig) -> None:
    """`release_features` skips the Context's scale search (~1,000 measurement builds per
    query) by fixing each statistic's scale from its budget share; OpenDP's own accounting of
    that one measurement must come to the configured ε, less the category votes' share (their
    own measurement, calibrated from OpenDP's accounting, takes the rest)."""
    f = cfg.features
    bounded = pl.DataFrame(
        {"region": ["Texas"], "age_band": ["25-34"], "device_type": ["mobile"],
         **{f"events_{c}": [1] for c in f.categories}, "purchase_rate_centred": [1],
         "mean_session_seconds_centred": [60]})
    unit, d_in = dp.unit_of(contributions=f.max_cohorts_per_user)
    domain = dp.with_margin(dp.domain_of(bounded.lazy(), infer=True),
                            dp.polars.Margin(by=["region", "age_band", "device_type"],
                                             max_length=1_000_000))
    keys = bounded.select("region", "age_band", "device_type").lazy()
    plan = bounded.lazy().group_by("region", "age_band", "device_type").agg(
        expr for expr, _, _ in _aggregations(f)).join(keys, on=["region", "age_band",
                                                              "device_type"], how="right")
    m = dp.m.make_private_lazyframe(domain, unit, dp.max_divergence(), plan, global_scale=1.0)
    votes = f.features.category_votes
    assert abs(m.map(d_in) - f.epsilon * (1 - (votes.budget_share if votes else 0))) < 1e-9
