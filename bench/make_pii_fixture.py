"""Write the labeled sentences `bench/pii_accuracy` scores against (run once, kept in git).

presidio-evaluator 0.3.2 needs pandas >= 3 and Feast needs pandas < 3, so this runs in its own
environment, not the project's:

    uv venv /tmp/evenv && VIRTUAL_ENV=/tmp/evenv uv pip install presidio-evaluator==0.3.2
    /tmp/evenv/bin/python bench/make_pii_fixture.py

`PresidioSentenceFaker` works offline (it falls back to its bundled lists when a download fails).
Output: one JSON object per line, {"text": ..., "spans": [[type, start, end], ...]}.
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = 3000
SEED = 42
OUT = Path(__file__).parent / "data" / "presidio_sentences.jsonl"


def main() -> None:
    from presidio_evaluator.data_generator import PresidioSentenceFaker

    faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, random_seed=SEED)
    with OUT.open("w") as fh:
        for sample in faker.generate_new_fake_sentences(SENTENCES):
            spans = sorted([s.entity_type, s.start_position, s.end_position]
                           for s in sample.spans)
            fh.write(json.dumps({"text": sample.full_text, "spans": spans}) + "\n")
    print(f"wrote {SENTENCES} sentences to {OUT}")


if __name__ == "__main__":
    main()
