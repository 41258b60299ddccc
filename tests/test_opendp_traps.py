"""OpenDP 0.16 behaviours the features stage depends on or works around (issue 5). Each test pins
today's behaviour, so an upgrade that changes it fails here and the design can be revisited."""

import opendp.prelude as dp
import polars as pl

from pipeline.config import PipelineConfig
from pipeline.features import _aggregations

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
    first, second, third = (ctx.query().group_by("group").agg(dp.len()).with_keys(KEYS)
                            for _ in range(3))
    third.release().collect()
    first.release().collect()
    try:
        second.release()
    except Exception as exc:  # OpenDPException; its type is an implementation detail
        assert "out of queries" in str(exc)
    else:
        raise AssertionError("a third release on a two-slot context was not refused")


def test_when_scales_are_fixed_then_one_measurement_accounts_exactly_the_release_epsilon(
        cfg: PipelineConfig) -> None:
    """`release_features` skips the Context's scale search (~1,000 measurement builds per
    query) by fixing each statistic's scale from its budget share; OpenDP's own accounting of
    that one measurement must come to the configured ε."""
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
    assert abs(m.map(d_in) - f.epsilon) < 1e-9
