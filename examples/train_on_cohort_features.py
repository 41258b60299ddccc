"""Train a model on the DP cohort features from Feast's offline store, then read them online.

Run after the demo: .venv/bin/python examples/train_on_cohort_features.py [--config ...]

The task, as an ML team would set it up: predict whether a user's top interest of the day is a
category (here "news") from their cohort's features. Labels come from the team's own data (here
the published profiles: one row per pseudonymous user and day); features come from Feast, point
in time: a profile of day D is joined with the latest release strictly before it, the release
of day D-1. The release of day D is computed from day D's events (this user's among them) and
is dated D 23:59:59, so joining it would train on features that already saw the label: a leak
serving never has. The entity timestamp is therefore the start of the profile's day. Profiles
with no earlier release (the first day) keep their row with null features and are left out of
training, as counted; so are profiles whose top interest was given up for k (`any`).
The shrunk share is the estimate to use; its standard error says how far to trust it.
"""

from __future__ import annotations

import argparse

import pandas as pd
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline.config import load_config
from pipeline.outputs.feast import open_store, training_features

CATEGORY = "news"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="config/pipeline.yaml")
    cfg = load_config(p.parse_args().config)
    store, fv = open_store(cfg), cfg.features.feature_set

    # Training: labels from the published table, features point in time from the offline store.
    parts = sorted((cfg.paths.root / "published" / cfg.purpose).glob("*/*.parquet"))  # or s3://
    published = pl.concat([pl.read_parquet(p.read_bytes()) for p in parts])
    events = published.filter(~pl.col("top_category").is_in(["any", "none"])).select(
        cohort_id=pl.concat_str("region", "age_band", "device_type", separator="|"),
        # the start of the profile's day: joins the release of the day before, never its own
        event_timestamp=pl.col("event_date").cast(pl.Datetime("us", "UTC")),
        label=pl.col("top_category") == CATEGORY)
    features = [f"{fv}:share_{CATEGORY}_shrunk", f"{fv}:share_{CATEGORY}_se",
                f"{fv}:active_users"]
    # Every profile comes back, in order, null where no release precedes it.
    joined = training_features(cfg, events.to_pandas(), features, store=store)
    training = joined.dropna()  # no earlier release (the first day), or outside the grid
    print(f"{len(joined):,} profiles; {len(joined) - len(training):,} without an earlier "
          "release of their cohort (first day, or cohort outside the grid): not trained on")
    if training.empty:
        raise SystemExit("no profile has a release before it: publish at least two days")
    x = training[[f.split(":")[1] for f in features]].to_numpy()
    model = LogisticRegression().fit(x, training["label"])
    auc = roc_auc_score(training["label"], model.predict_proba(x)[:, 1])
    print(f"trained on {len(training):,} profiles; in-sample AUC {auc:.3f} "
          f"(share of {CATEGORY} overall: {training['label'].mean():.3f})")

    # Serving: the latest values from the online store, for the cohorts being scored.
    cohorts = sorted(set(training["cohort_id"]))[:3]
    online = store.get_online_features(
        features=features, entity_rows=[{"cohort_id": c} for c in cohorts]).to_dict()
    frame = pd.DataFrame(online)
    frame["p_top_interest_is_" + CATEGORY] = model.predict_proba(
        frame[[f.split(":")[1] for f in features]].to_numpy())[:, 1]
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
