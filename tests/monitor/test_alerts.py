"""Soft guardrails (`pipeline.monitor.alerts`): each alert says what, where, the measured value
and its threshold, and fires only past it."""

from __future__ import annotations

from pipeline.config.settings import AlertsConfig
from pipeline.core.details import KGroupCost
from pipeline.monitor.alerts import disparity_alerts, spike_alerts, suppression_alert
from pipeline.monitor.model import Disparity, GroupCost

CFG = AlertsConfig()


def test_when_a_pii_type_jumps_past_its_recent_median_then_one_alert_names_type_and_threshold(
        ) -> None:
    history = [{"EMAIL_ADDRESS": 10.0, "PERSON": 40.0}, {"EMAIL_ADDRESS": 12.0, "PERSON": 35.0},
               {"EMAIL_ADDRESS": 9.0, "PERSON": 44.0}]
    today = {"EMAIL_ADDRESS": 80, "PERSON": 50, "IBAN_CODE": 25, "US_SSN": 3}
    alerts = spike_alerts("pii_spike", {k: float(v) for k, v in today.items()}, history, today,
                          CFG, unit="found")
    # e-mail 80 > 3 x 10; IBAN new (median 0) and found 25 >= 20 times; SSN new but only 3;
    # PERSON 50 within 3 x 40
    assert [a.subject for a in alerts] == ["EMAIL_ADDRESS", "IBAN_CODE"]
    assert alerts[0].describe() == ("pii_spike: EMAIL_ADDRESS: measured 80, threshold <= 3 x "
                                    "median 10 found over 3 run(s) (80 this run)")
    assert spike_alerts("pii_spike", {"EMAIL_ADDRESS": 80.0}, [], today, CFG, unit="") == []


def test_when_a_large_group_loses_many_times_the_overall_share_then_it_alerts_small_ones_do_not(
        ) -> None:
    costs = [KGroupCost(dimension="all", group="all", rows=10_000, suppressed_share=0.05,
                        generalization=0.3),
             KGroupCost(dimension="region", group="Nevada", rows=40, suppressed_share=1.0,
                        generalization=0.0),
             KGroupCost(dimension="age_band", group="65+", rows=900, suppressed_share=0.4,
                        generalization=0.9),
             KGroupCost(dimension="age_band", group="25-34", rows=5_000, suppressed_share=0.02,
                        generalization=0.2)]
    [alert] = suppression_alert(costs, CFG)
    assert alert.subject == "age_band=65+: rows suppressed" and alert.measured == 8.0
    assert "40% of its 900 rows against 5% overall" in alert.note
    assert suppression_alert(costs, CFG.model_copy(update={"max_k_suppression_ratio": 10})) == []


def test_when_the_worst_group_is_far_noisier_than_the_release_then_disparity_alerts() -> None:
    overall = GroupCost(dimension="all", group="all", cohorts=10, users=900,
                        unreliable_share=0.1, median_relative_error=0.2)
    d = Disparity(groups=[overall], worst_unreliable_ratio=4.5,
                  worst_unreliable_group="age_band=under-18", worst_error_ratio=1.5,
                  worst_error_group="region=Oregon")
    [alert] = disparity_alerts(d, CFG)
    assert alert.subject == "age_band=under-18: unreliable DP values" and alert.measured == 4.5
    assert alert.threshold == "<= 3 x the whole release"
    assert disparity_alerts(None, CFG) == []
