"""The OpenDP functions the DP release and the feature planner use, in one namespace.

Imported from their own modules, not `opendp.prelude`, which also imports scikit-learn when it
is installed (~5 s per Airflow task). Kept apart from both users so neither imports the other.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from types import SimpleNamespace


@cache
def opendp_api() -> SimpleNamespace:
    from opendp.accuracy import (
        discrete_gaussian_scale_to_accuracy,
        discrete_laplacian_scale_to_accuracy,
    )
    from opendp.context import domain_of, unit_of
    from opendp.domains import with_margin
    from opendp.extras.polars import Bound, Margin
    from opendp.measurements import make_private_lazyframe
    from opendp.measures import approximate, max_divergence, zero_concentrated_divergence
    from opendp.mod import enable_features

    enable_features("contrib")
    return SimpleNamespace(
        laplace_accuracy=discrete_laplacian_scale_to_accuracy,
        gaussian_accuracy=discrete_gaussian_scale_to_accuracy, domain_of=domain_of,
        unit_of=unit_of, with_margin=with_margin, Bound=Bound, Margin=Margin,
        make_private_lazyframe=make_private_lazyframe, approximate=approximate,
        max_divergence=max_divergence, zero_concentrated_divergence=zero_concentrated_divergence,
        version=version("opendp"))
