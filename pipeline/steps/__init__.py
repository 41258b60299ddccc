"""What each row of `pipeline.stages.STAGES` calls, by its `target` name: thin adapters from a
run's context to the transforms, the ledger's release protocol and the outputs.

Task stages do their own reading and writing and return the path they wrote; table stages take
the shards of the partition the engine reads (a day in one piece is one shard), do what needs
all of them (a plan), and return what to do to each shard (`ShardWork`). Every stage takes the
run's day as a `date`, parsed once at the boundary (`pipeline.core.context.parse_day`), and a
context held to its row of the stage table: every zone, path and record comes from it.

- `intake`: check_input, erase, retention, ingest, guardrails (a day in, and the stored data
  kept lawful);
- `tables`: consent, detect_pii, pseudonymize, generalize, minimize (shard by shard);
- `publishing`: validate, features, publish, report (the gate and what consumers read);
- `monitoring`: reidentify (the join attack before the gate), monitor (drift of what was
  published, and the soft guardrails' alerts).
"""

from pipeline.steps.intake import (
    check_input,
    erase,
    guardrails,
    ingest,
    input_marker,
    raw_events,
    retention,
)
from pipeline.steps.monitoring import monitor, reidentify
from pipeline.steps.publishing import features, publish, report, validate
from pipeline.steps.tables import consent, detect_pii, generalize, minimize, pseudonymize

__all__ = ["check_input", "consent", "detect_pii", "erase", "features", "generalize",
           "guardrails", "ingest", "input_marker", "minimize", "monitor", "pseudonymize", "publish",
           "raw_events", "reidentify", "report", "retention", "validate"]
