"""Subject access: one command finds everything held of one person, on a sharded day and in an
object store, and nothing of anyone else; an erased person gets the erasure receipt only."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.core.context import RunContext
from pipeline.run import run_all, run_stage
from pipeline.subjects.access import ZONES_HELD, subject_access
from pipeline.transforms.erasure import REQUESTS, pseudonyms_of
from pipeline.transforms.features import cohort_keys
from pipeline.transforms.profile import epoch_pseudonyms
from tests.conftest import generated_day

DAY = "2026-11-01"
pytestmark = pytest.mark.slow


def _events(data: Path) -> list[dict]:
    raw = data / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    out = []
    for line in raw.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _subject(data: Path) -> tuple[str, list[str]]:
    """The consenting account with the most events, and every other account."""
    consent = [json.loads(line) for line in
               (data / "raw" / "consent" / "consent.jsonl").read_text().splitlines()]
    granted = {c["account_id"] for c in consent
               if c["purpose"] == "personalization" and c["status"] == "granted"}
    counts: dict[str, int] = {}
    for e in _events(data):
        if isinstance(e.get("account_id"), str):
            counts[e["account_id"]] = counts.get(e["account_id"], 0) + 1
    person = max((a for a in counts if a in granted), key=lambda a: (counts[a], a))
    return person, sorted(set(counts) - {person})


def _published_person(ctx: RunContext, data: Path) -> tuple[str, list[str]]:
    """An account whose profile was published (k-anonymity kept it), and every other."""
    accounts = sorted({e["account_id"] for e in _events(data)
                       if isinstance(e.get("account_id"), str)})
    staging = {pseudonyms_of([a], ctx.keys.keys, ctx.cfg.purpose)[0]: a for a in accounts}
    epoch = {epoch_pseudonyms([p], ctx.keys.keys, ctx.cfg.purpose, [DAY])[0]: a
             for p, a in staging.items()}
    day = date.fromisoformat(DAY)
    published = {epoch[p] for p in ctx.storage.read(ctx.zone("published"), day)[
        "user_pseudonym"] if p in epoch}
    keys = cohort_keys(ctx.cfg.features, ctx.cfg.generalize.age_bands)
    in_grid = ctx.storage.read(ctx.zone("generalized"), day).join(
        keys, on=["region", "age_band", "device_type"], how="semi")  # counted in a cohort
    person = sorted(published & {staging[p] for p in in_grid["user_pseudonym"]})[0]
    return person, [a for a in accounts if a != person]


def _plant_misfit(data: Path, account: str) -> None:
    """One line of the person's that does not fit the schema: quarantined."""
    raw = data / "raw" / "events" / f"date={DAY}" / "events.jsonl"
    event = next(e for e in _events(data) if e.get("account_id") == account)
    with raw.open("a") as fh:
        fh.write(json.dumps({**event, "event_id": "misfit-1", "event_type": "teleport"}) + "\n")


def _archive_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def _others_traces(cfg: PipelineConfig, others: list[str], data: Path) -> list[str]:
    """What would show another person in the archive: their ids, e-mails, names, phones,
    and their pseudonyms (staging and the day's epoch) under the key."""
    ctx = RunContext(cfg)
    events = [e for e in _events(data) if e.get("account_id") in set(others)]
    staging = pseudonyms_of(others, ctx.keys.keys, cfg.purpose)
    epoch = epoch_pseudonyms(staging, ctx.keys.keys, cfg.purpose, [DAY])
    values = {*others, *staging, *epoch}
    for e in events:
        values.update(str(e[f]) for f in ("email", "phone", "device_id") if e.get(f))
    return sorted(values)


def test_when_a_person_asks_on_a_sharded_day_then_every_record_of_theirs_and_no_one_elses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=500, seed=21,
                                 scale={"events_per_shard": 2000})
    ctx, published = run_all(DAY, config)
    assert published
    person, others = _published_person(ctx, data)
    _plant_misfit(data, person)
    ctx, published = run_all(DAY, config)  # the day again, with the misfit
    assert published
    assert len(ctx.storage.parts(ctx.zone("ingested"), date.fromisoformat(DAY))) > 1  # sharded

    result = subject_access([load_config(config)], account_id=person, out=tmp_path / "sa")
    [found] = result.purposes
    mine = [e for e in _events(data) if e.get("account_id") == person]
    assert result.raw_lines == len(mine) and result.consent_records >= 1
    for zone in ZONES_HELD:
        assert found.rows.get(zone), zone  # every staging zone, pending and published
    assert found.rows["quarantine"] == 1  # the planted misfit, by location
    ingested = ctx.storage.read(ctx.zone("ingested"), date.fromisoformat(DAY))
    assert found.rows["ingested"] == ingested.filter(
        ingested["account_id"] == person).height
    assert found.releases and found.releases[0].cohorts  # the DP release took them
    assert found.groups is not None and found.groups["users_in_group"].min() >= 5  # k
    text = _archive_text(result.folder)
    assert person in text  # their own data, given to them
    leaked = [v for v in _others_traces(load_config(config), others, data) if v in text]
    assert leaked == []
    # logged by pseudonym, never by account id
    log = (ctx.local / "subject_access" / "requests.jsonl").read_text()
    assert person not in log and found.pseudonyms[ctx.key.key_id][:16] in log
    # asked by e-mail: the same account
    email = next(e["email"] for e in mine if e.get("email"))
    by_email = subject_access([load_config(config)], email=email.upper(), out=tmp_path / "sa2")
    assert by_email.raw_lines == result.raw_lines


def test_when_an_erased_person_asks_then_only_the_erasure_receipt_is_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, data = generated_day(tmp_path, monkeypatch, users=300, seed=22)
    person, _ = _subject(data)
    _, published = run_all(DAY, config)
    assert published
    (data / REQUESTS).parent.mkdir(parents=True, exist_ok=True)
    (data / REQUESTS).write_text(json.dumps({"account_id": person,
                                             "requested_at": "2026-11-02T09:00:00Z"}) + "\n")
    run_stage("erase", DAY, config)
    result = subject_access([load_config(config)], account_id=person, out=tmp_path / "sa")
    assert not result.holds_anything
    assert result.erasure_requested == ["2026-11-02T09:00:00Z"]
    assert all(n == 0 for t, n in result.tables.items() if not t.endswith("pseudonyms"))
    page = result.page.read_text()
    assert "erase your data on 2026-11-02T09:00:00Z" in page and person not in page


def test_when_the_data_root_is_an_object_store_then_access_reads_it_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: str) -> None:
    from pipeline.core.fs import data_path
    from pipeline.demo.generate import generate
    from tests.conftest import TEST_KEY_TEXT, write_config

    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    options = {"client_kwargs": {"endpoint_url": s3}}
    config = write_config(tmp_path, paths__data_root="s3://lake/data",
                          paths__local_root=str(tmp_path / "local"),
                          paths__storage_options=options, scale={"events_per_shard": 1000})
    root = data_path("s3://lake/data", options)
    generate(root, start=date.fromisoformat(DAY), days=1, users=300, seed=4)
    ctx, published = run_all(DAY, config)
    assert published
    local = tmp_path / "copy"  # the raw events, to find a published person
    (local / "raw" / "events" / f"date={DAY}").mkdir(parents=True)
    (local / "raw" / "events" / f"date={DAY}" / "events.jsonl").write_bytes(
        (root / "raw" / "events" / f"date={DAY}" / "events.jsonl").read_bytes())
    person, _ = _published_person(ctx, local)
    result = subject_access([load_config(config)], account_id=person, out=tmp_path / "sa")
    [found] = result.purposes
    assert result.raw_lines > 0 and all(found.rows.get(z) for z in ZONES_HELD)
    assert not found.unreadable and (tmp_path / "sa.zip").is_file()


def test_when_a_thousand_random_people_ask_then_no_archive_holds_anyone_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's target: zero records of other users in 1,000 random access archives of a
    small day (people drawn at random with replacement: consenting or not, published or not,
    and ids nobody has)."""
    import random
    import shutil

    config, data = generated_day(tmp_path, monkeypatch, users=200, seed=23)
    ctx, published = run_all(DAY, config)
    assert published
    cfg = load_config(config)
    accounts = sorted({e["account_id"] for e in _events(data)
                       if isinstance(e.get("account_id"), str)})
    traces = {a: set(_others_traces(cfg, [a], data)) for a in accounts}
    rng = random.Random(26)
    asked = [rng.choice(accounts) if rng.random() < 0.95 else f"acct-unknown-{i}"
             for i in range(1000)]
    leaks, held = [], 0
    for i, person in enumerate(asked):
        folder = tmp_path / "sa" / f"{i}"
        result = subject_access([cfg], account_id=person, out=folder)
        held += result.holds_anything
        text = _archive_text(folder)
        mine = traces.get(person, set())
        assert not result.holds_anything or person in text  # the check can see an id
        leaks += [(i, other) for other, values in traces.items() if other != person
                  and any(v in text for v in values - mine)]
        shutil.rmtree(folder)
        folder.with_suffix(".zip").unlink()
    assert leaks == []
    assert held >= 900  # nearly every request was of someone the day holds
