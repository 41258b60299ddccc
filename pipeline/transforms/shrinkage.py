"""Empirical-Bayes shrinkage of a release's rates, means and shares toward their parent cohorts,
all from the same release (post-processing: no budget).

Sparse cohorts borrow strength from their parent; well-measured ones keep their own value (Efron
and Morris; the several-levels idea of the Census TopDown and of small-area estimation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl


def shrink(df: pl.DataFrame, value: str, weight: pl.Expr,
            variance: Callable[[pl.Expr], pl.Expr], dims: list[str]) -> pl.DataFrame:
    """Empirical Bayes toward the cohort's parents (Efron and Morris; the several-levels idea of
    the Census TopDown and of small-area estimation), all from this release.

    The parent estimate q is an additive model: overall level plus one effect per value of each
    of `dims` (region, age band, device type), fitted by weighted least squares over the
    cohorts, weights 1 / v, where v is the cohort value's variance from the noise alone. Main
    effects pool every cohort that shares a region, an age band or a device type, so they are
    far less noisy than one cohort. τ², the spread of cohorts around q beyond their noise, is
    estimated from the residuals; each cohort keeps the share τ² / (τ² + v) of its distance from
    q. The target is the cohort's exact value (what the release estimates), and the standard
    error is the posterior's plus what q's own fit adds."""
    d = df.with_columns(_w=weight.clip(0, None).fill_null(0))
    p = d[value].to_numpy().astype(float)
    ok = np.isfinite(p) & (d["_w"].to_numpy() > 0)
    levels = [d[c].to_numpy() for c in dims]
    x = np.column_stack([np.ones(len(p))] + [
        (col == v).astype(float) for col in levels for v in np.unique(col)[1:]])
    q = np.full(len(p), np.nanmean(p[ok]) if ok.any() else np.nan)
    v = np.ones(len(p))
    qvar = np.zeros(len(p))
    for _ in range(2):  # v depends on q (shares), q on v (weights): two rounds settle it
        v = np.maximum(d.select(variance(pl.lit(pl.Series(np.nan_to_num(q))).clip(0, None)))
                       .to_series().to_numpy(), 1e-12)
        if ok.sum() > x.shape[1]:
            w = np.where(ok, 1 / v, 0.0)
            xtwx = x.T @ (x * w[:, None])
            inv = np.linalg.pinv(xtwx)
            beta = inv @ (x.T @ (w * np.nan_to_num(p)))
            q = x @ beta
            qvar = np.einsum("ij,jk,ik->i", x, inv, x)
    # A fitted q absorbs part of each cohort's deviation (its leverage h = qvar / v), so a
    # residual's expected square is (τ² + v)(1 - h), not τ² + v: correct for it, or τ² comes
    # out too small and the estimate is pulled too far toward q.
    slack = np.clip(1 - qvar / v, 1e-6, 1)[ok]
    resid = (p - q)[ok]
    tau2 = max(float(np.sum(resid**2 - v[ok] * slack) / np.sum(slack)) if ok.any() else 0.0,
               0.0)
    keep = np.where(ok, tau2 / (tau2 + v), 0.0)
    shrunk = q + keep * np.nan_to_num(p - q)
    se = np.sqrt(keep * v + (1 - keep) ** 2 * qvar)
    return d.drop("_w").with_columns(pl.Series(f"{value}_shrunk", shrunk),
                                     pl.Series(f"{value}_se", se))


