"""What privacy costs each group, from a real DP release: a region with few users has larger
relative errors than a large one, and the worst group is reported against the whole release.
(The share flagged unreliable is on the shrunk estimates, which borrow strength from the
parent cohorts, so it does not order regions by size as reliably.)"""

from __future__ import annotations

import numpy as np

from bench.monitor import day_events, users
from pipeline.config import PipelineConfig
from pipeline.monitor.disparity import release_disparity
from pipeline.transforms.features import Release, release_features


def test_when_a_region_is_small_then_its_features_cost_more_and_it_is_the_worst_group(
        cfg: PipelineConfig) -> None:
    rng = np.random.default_rng(4)
    events = day_events(users(30_000, rng, cfg.generalize.age_bands), rng)
    rel, _ = release_features(events, cfg.features, age_bands=cfg.generalize.age_bands,
                              user_col="user_pseudonym", release_date="2026-11-01")
    d = release_disparity(rel.table, Release.of(cfg.features).values())
    assert d is not None
    overall = d.groups[0]
    assert (overall.dimension, overall.group) == ("all", "all")
    assert overall.cohorts == rel.table.height
    by = {(g.dimension, g.group): g for g in d.groups}
    # Oregon (Portland: 4 of 111 city weights) against New York (14): fewer users, worse values
    small, large = by[("region", "Oregon")], by[("region", "New York")]
    assert small.users < large.users / 2
    assert (small.median_relative_error or 0) > 1.5 * (large.median_relative_error or 0)
    assert d.worst_unreliable_ratio is not None and d.worst_unreliable_ratio >= 1
    assert d.worst_error_ratio is not None and d.worst_error_ratio > 1
    assert d.worst_unreliable_group.split("=")[0] in ("region", "age_band", "device_type")
