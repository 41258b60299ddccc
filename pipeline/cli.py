"""`privacy-pipeline`: generate data, make a development key, run stages, read features.

Exit codes (also in README "Exit codes"): 0 done (a run: published); 1 another pipeline error
(storage, ledger integrity, a crash); 2 usage (a bad argument, a date not over yet); 3 the run
ended but did not publish (a stage failed, validation blocked it); 4 an input guardrail was
breached (nothing charged or published); 5 config, schema or key problem; 6 not found (a
cohort outside the grid or without a released value); 7 denied (the access matrix gives the
caller no role allowing the command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import date as Date
from datetime import timedelta
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.context import parse_day
from pipeline.core.errors import (
    AccessDeniedError,
    ConfigError,
    GuardrailError,
    KeyUnavailableError,
    NotFoundError,
    PipelineError,
    safe_error,
)
from pipeline.core.fs import data_path
from pipeline.core.layout import partition_name
from pipeline.stages import STAGES

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig
    from pipeline.core.context import RunContext

DEFAULT_CONFIG = "config/pipeline.yaml"
DEMO_DATE = "2026-11-01"


class Exit(IntEnum):
    """What the command's exit status says; scripts and schedulers branch on it."""

    OK = 0
    ERROR = 1  # another pipeline error: storage, ledger integrity, a crash (see the log)
    USAGE = 2  # a bad argument (argparse's own code)
    NOT_PUBLISHED = 3  # the run ended, but a stage failed or the gate blocked publishing
    GUARDRAIL = 4  # the day's input breached a guardrail: nothing charged or published
    CONFIG = 5  # config, schema or key: fix the setup, a rerun will fail the same way
    NOT_FOUND = 6  # an unknown cohort, or one with no released value
    DENIED = 7  # the access matrix gives the caller no role allowing the command


def exit_code(exc: PipelineError) -> Exit:
    if isinstance(exc, AccessDeniedError):
        return Exit.DENIED
    if isinstance(exc, GuardrailError):
        return Exit.GUARDRAIL
    if isinstance(exc, ConfigError | KeyUnavailableError):
        return Exit.CONFIG
    if isinstance(exc, NotFoundError):
        return Exit.NOT_FOUND
    return Exit.ERROR


def _day(text: str) -> Date:
    """argparse `type=` for dates: a bad one is a usage error, not a traceback."""
    try:
        return parse_day(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    """argparse `type=` for counts that must be at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not at least 1")
    return n


def _drift(text: str) -> Any:
    """argparse `type=` for `generate --drift CITY:CATEGORY:SHARE@DATE`."""
    from pipeline.demo.generate import Drift

    try:
        what, day = text.rsplit("@", 1)
        city, category, share = what.split(":")
        return Drift(city, category, float(share), parse_day(day))
    except (ValueError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected CITY:CATEGORY:SHARE@DATE ({exc})") from None


def _run_day(text: str) -> Date:
    """A date to run: over already (a typo like 2099 is a usage error, refused before any
    config is read or anything deleted)."""
    day = _day(text)
    if day > Date.today():
        raise argparse.ArgumentTypeError(f"{day} has not happened yet (today is "
                                         f"{Date.today()})")
    return day


def _setup_logging(log_file: Path | None = None) -> None:
    from pipeline.console import setup_logging

    setup_logging(log_file, verbose=VERBOSE)


VERBOSE = False  # set from --verbose by `main`


def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.console import progress_shown
    from pipeline.demo.generate import generate

    root = data_path(args.out) if args.out else load_config(args.config).paths.root
    signal = {} if args.cohort_signal is None else {"cohort_signal": args.cohort_signal}
    with progress_shown():
        out = generate(root, start=args.start, days=args.days, users=args.users,
                       seed=args.seed, drift=args.drift, **signal)
    print(f"generated {out.events:,} raw event lines ({out.malformed:,} malformed on purpose) "
          f"of {args.users:,} users over {len(out.event_files)} day(s) under "
          f"{root / 'raw'} (events/date=D/, consent/consent.jsonl)")
    return 0


def cmd_init_key(args: argparse.Namespace) -> int:
    from pipeline.access.policy import load_policy, require
    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.core.keys import create_key_file

    cfg = load_config(args.config)
    path = Path(args.out) if args.out else cfg.keys.file
    if path is None:
        raise PipelineError("no key file path: pass --out or set keys.file in the config")
    if path.exists():
        print(f"key file {path} exists; keeping it")
        return 0
    ctx = RunContext(cfg)
    # no key yet to seal a refusal with: checked against the matrix, logged once made
    require(load_policy(cfg.paths.access_policy), ctx.actor, cfg.purpose, "issue_key")
    key = create_key_file(path, key_id=args.key_id)
    if args.out is None or Path(args.out) == cfg.keys.file:
        ctx.audit("issue_key", detail={"key_id": key.key_id, "fingerprint": key.fingerprint(),
                                       "kind": "local development key file"})
    print(f"created a LOCAL DEVELOPMENT key {key.key_id!r} at {path} (mode 0600). "
          "In production, provide the key from a secret store instead.")
    return 0


def _authorized(config: str | Path, action: str) -> RunContext:
    """The caller may do `action` for the config's purpose (`config/access.yaml`), or the
    command stops with exit code 7 (the refusal logged in the audit log)."""
    from pipeline.config import load_config
    from pipeline.core.context import RunContext

    ctx = RunContext(load_config(config))
    ctx.authorize(action)
    return ctx


def cmd_issue_key(args: argparse.Namespace) -> int:
    """The config's purpose's own key ring, from the master ring the operator's environment
    holds (keys.* providers): what the purpose's secret store gets, so its tasks never load
    the master. Written to --out (mode 0600, never over a file) or printed."""
    import os

    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.core.keys import PurposeKey, load_key_ring

    cfg = load_config(args.config)
    # the operator's context: the master, whatever the purpose's tasks are held to
    cfg = cfg.model_copy(update={"keys": cfg.keys.model_copy(update={"purpose_key_only": False})})
    ctx = RunContext(cfg)
    ctx.authorize("issue_key")
    ring = load_key_ring(cfg.keys)
    if any(isinstance(k, PurposeKey) for k in ring.keys):
        raise KeyUnavailableError("issue-key needs the master key ring in its environment; a "
                                  "purpose key cannot issue keys")
    issued = [k.issue(cfg.purpose) for k in ring.keys]
    text = "\n".join(k.text() for k in issued) + "\n"
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    ctx.audit("issue_key", detail={"issued_to": cfg.purpose, "key_ids": ring.key_ids,
                                   "fingerprints": [k.own_fingerprint() for k in issued]})
    print(f"issued the key of purpose {cfg.purpose!r} for key id(s) "
          f"{', '.join(ring.key_ids)} (fingerprint {issued[0].own_fingerprint()})"
          + (f" to {args.out} (mode 0600)" if args.out else "") + ". Give it to the purpose's "
          "secret store (its Airflow connection, variable or key file) and set "
          "keys.purpose_key_only: true in its config.", file=sys.stderr)
    return Exit.OK


def _summary(ctx: RunContext, day: Date) -> None:
    """The report's first screen, as the report shows it, then where the outputs are."""
    from pipeline.core.records import Manifest
    from pipeline.outputs.report import blocked_by, summary_rows
    from pipeline.run import output_paths

    paths = output_paths(ctx, day)
    manifest = Manifest.model_validate_json(paths["manifest"].read_text())
    print(f"\n== {day} ({ctx.cfg.purpose}): "
          f"{'published' if manifest.published else 'NOT published'}")
    for line in blocked_by(manifest):
        print(f"  {line}")
    for question, answer in summary_rows(manifest):
        print(f"{question}: {answer}")
    print()
    for name, path in paths.items():
        print(f"{name:>13}: {path}")


def _one_line(ctx: RunContext, day: Date, seconds: float) -> str:
    """A run in one line: its day, whether it published, its rows and time."""
    from pipeline.core.records import Manifest
    from pipeline.run import output_paths

    m = Manifest.model_validate_json(output_paths(ctx, day)["manifest"].read_text())
    return (f"{day}  {'published' if m.published else 'NOT published':<13}  "
            f"{m.funnel.rows_in:,} rows in, {m.funnel.rows_out:,} published, "
            f"{len(m.outcomes)} stages in {seconds:.1f} s")


def _run_one(args: argparse.Namespace) -> tuple[RunContext, bool, float]:
    """One date, every stage, with a progress bar on a terminal and the log in a file."""
    from pipeline.config import load_config
    from pipeline.console import progress_shown
    from pipeline.run import run_all

    cfg = load_config(args.config)
    _setup_logging(run_log(cfg, args.date))
    _authorized(args.config, "run")
    started = time.perf_counter()
    with progress_shown():
        ctx, published = run_all(args.date, args.config,
                                 accept_low_volume=args.accept_low_volume)
    return ctx, published, time.perf_counter() - started


def run_log(cfg: PipelineConfig, day: Date) -> Path:
    """Where a CLI run of `day` keeps its full log (library logs included)."""
    return cfg.paths.local / "logs" / partition_name(day) / "run.log"


def cmd_run(args: argparse.Namespace) -> int:
    ctx, published, seconds = _run_one(args)
    _summary(ctx, args.date)
    print(f"{'log':>13}: {run_log(ctx.cfg, args.date)}\nfinished in {seconds:.1f} s")
    return Exit.OK if published else _run_exit(ctx, args.date)


def cmd_summary(args: argparse.Namespace) -> int:
    """A finished run's summary (its report's first screen), the latest by default."""
    from pipeline.config import load_config
    from pipeline.core.context import RunContext
    from pipeline.core.layout import Layout

    cfg = load_config(args.config)
    ctx = RunContext(cfg)  # its records only: no key is loaded
    day = args.date
    if day is None:
        area = Layout(cfg.paths.root, cfg.paths.local).area(cfg.zone("reports"))
        days = sorted(p.parent.name[5:] for p in area.glob("date=*/manifest.json"))
        if not days:
            raise NotFoundError(f"no run of purpose {cfg.purpose!r} has finished yet "
                                f"(no manifest under {area})")
        day = Date.fromisoformat(days[-1])
    _summary(ctx, day)
    print(f"{'audit index':>13}: {ctx.partition_dir('reports', day).parent / 'index.html'}")
    print(f"{'log':>13}: {run_log(cfg, day)}")
    if args.online is not None:
        regions = cfg.features.regions  # default: a cohort of the grid, as the demo shows
        _online_example(args.config, args.online
                        or f"{regions[min(1, len(regions) - 1)]}|25-34|mobile")
    return Exit.OK


def _run_exit(ctx: RunContext, day: Date) -> Exit:
    """A run that did not publish: guardrail (4), config or key (5), else not published (3)."""
    failed = {o.error for o in ctx.records(day).outcomes().values()
              if o.run_id == ctx.run_id and o.status == "failed"}
    if "GuardrailError" in failed:
        return Exit.GUARDRAIL
    if failed & {"ConfigError", "KeyUnavailableError"}:
        return Exit.CONFIG
    return Exit.NOT_PUBLISHED


def cmd_stage(args: argparse.Namespace) -> int:
    from pipeline.run import run_stage

    _setup_logging()
    _authorized(args.config, "run")
    print(run_stage(args.stage, args.date, args.config,
                    accept_low_volume=args.accept_low_volume))
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    from pipeline.run import rekey

    _setup_logging()
    _authorized(args.config, "rekey")
    print(rekey(args.date, args.config).model_dump_json(indent=2))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.outputs.feast import online_features, unknown_cohorts

    cfg = load_config(args.config)
    if unknown := unknown_cohorts(cfg, args.cohort):
        raise NotFoundError(f"not a cohort of {cfg.features.feature_set}: "
                            f"{', '.join(map(repr, unknown))}; a cohort id is "
                            "region|age_band|device_type from the grid in config `features`")
    values = online_features(cfg, args.cohort)
    print(json.dumps(values, indent=2, default=str))
    empty = [c for i, c in enumerate(args.cohort)
             if all(v[i] is None for k, v in values.items() if k != "cohort_id")]
    if empty:
        print(f"privacy-pipeline: no released value online for {', '.join(empty)} (not yet "
              "published, suppressed by private selection, or expired after "
              f"{cfg.feature_store.ttl_days} days)", file=sys.stderr)
        return Exit.NOT_FOUND
    return Exit.OK


def cmd_ledger(args: argparse.Namespace) -> int:
    """Every release the ledger holds for the purpose, and a window's spend against its
    budget."""
    from pipeline.config import load_config
    from pipeline.core.keys import load_key_ring
    from pipeline.ledger.store import PrivacyLedger, WindowBudget, read_heads
    from pipeline.outputs.feast import features_dir

    cfg = load_config(args.config)
    ring = load_key_ring(cfg.keys)
    if args.export_mac_keys:
        from pipeline.ledger.store import mac_key_lines

        _authorized(args.config, "export_mac_keys").audit(
            "export_mac_keys", detail={"key_ids": ring.key_ids})
        print(f"# Ledger MAC keys (secret: they can seal rows under these key ids, nothing "
              f"else). Keep them in ${cfg.budget.retired_mac_keys_env} before removing a "
              "retired master key from the ring.", file=sys.stderr)
        print("\n".join(mac_key_lines(ring)))
        return 0
    ledger = PrivacyLedger.from_config(cfg.budget, cfg.paths.local, ring)
    budget = WindowBudget.from_config(cfg.budget)
    history = ledger.history(cfg.purpose)
    sealed = ledger.verify(cfg.purpose, read_heads(features_dir(cfg)))
    print(f"ledger {ledger.where}, purpose {cfg.purpose!r}: {len(history)} release(s), "
          f"{sealed} in a verified chain")
    print(f"{'date':<12}{'feature set':<20}{'epsilon':>9}{'rho':>9}{'delta':>10}")
    for day, feature_set, eps, rho, delta in history:
        print(f"{day:<12}{feature_set:<20}{'-' if eps is None else f'{eps:g}':>9}{rho:>9g}"
              f"{delta:>10g}")
    end = args.date or (Date.fromisoformat(history[-1][0]) if history else Date.today())
    w = ledger.window_spend(cfg.purpose, end, budget)
    as_eps = budget.as_epsilon(w.spent)
    print(f"{cfg.budget.accounting} accounting, window {w.start}..{w.end}: {budget.unit} "
          f"{w.spent:g} of {budget.limit:g}, delta {w.delta:g} of {budget.delta:g}"
          + (f"; that is ({as_eps:.3g}, {budget.conversion_delta:g})-DP"
             if as_eps is not None else ""))
    return 0


def cmd_plan_features(args: argparse.Namespace) -> int:
    """Expected error of each feature for the configured grid, and what would fix a miss."""
    from pipeline.config import load_config
    from pipeline.transforms.feature_plan import max_release_budget, plan

    cfg = load_config(args.config)
    f = cfg.features
    cells = len(f.regions) * len(cfg.generalize.age_bands) * len(f.device_types)
    if args.users is not None:
        total, source = args.users, f"{args.users:,} users per {f.period} (--users)"
    elif f.planned_users is not None:
        total = f.planned_users
        source = f"{total:,} users per {f.period} (features.planned_users)"
    else:
        total, source = _users_of_last_good_release(cfg)
    users = total / cells
    ceiling = max_release_budget(f, cfg.budget)
    print(f"{f.feature_set}: {cells} cohorts ({len(f.regions)} regions x "
          f"{len(cfg.generalize.age_bands)} age bands x {len(f.device_types)} device types), "
          f"{f.release_budget.describe()} per {f.period} (at most {ceiling.value:.3g}: the "
          "per-release cap "
          f"and the {cfg.budget.window_days}-day window); {users:.1f} users per cohort from "
          f"{source}; "
          f"target: relative error <= {args.target:g}")
    print(f"{'feature':<24}{'error95':>10}{'relative':>10}  to meet the target")
    for row in plan(f, users=users, age_bands=len(cfg.generalize.age_bands),
                    target=args.target, weekly_factor=args.weekly_factor, max_budget=ceiling):
        print(f"{row.label:<24}{row.error95:>10.4g}{row.relative:>10.2f}  "
              f"{row.fix or 'met'}")
    return 0


def _users_of_last_good_release(cfg: PipelineConfig) -> tuple[float, str]:
    """Users of the latest release whose days passed the input guardrails unaided (a day that
    lost its input, or a small day accepted on purpose, says nothing about a normal one):
    the sum of its noisy `active_users` (a DP output: reading it costs nothing)."""
    import polars as pl

    from pipeline.core.context import RunContext
    from pipeline.core.records import GuardrailRecord
    from pipeline.outputs.feast import features_dir

    ctx = RunContext(cfg)  # only its records: no key is loaded
    for part in sorted(features_dir(cfg).glob("date=*/part.parquet"), reverse=True):
        day = Date.fromisoformat(part.parent.name[5:])
        guard = ctx.records(day).load(GuardrailRecord)
        if guard is not None and guard.passed and not guard.accepted:
            users = pl.read_parquet(part.read_bytes())["active_users"].clip(0, None).sum()
            return float(users), f"the release of {day} (passed the input guardrails)"
    raise NotFoundError("no release whose day passed the input guardrails to size the "
                        f"cohorts from: pass --users N or set features.planned_users (users "
                        f"per {cfg.features.period})")


def cmd_demo(args: argparse.Namespace) -> int:
    """Two days, so a training set can join each event to the release before it (the first
    day's events have none). One line per step, then the last day's summary."""
    first = args.date
    args.out, args.start, args.seed, args.key_id = None, first, 7, "dev-local-1"
    args.cohort_signal, args.drift = None, None
    cmd_generate(args)
    cmd_init_key(args)
    args.accept_low_volume = False
    code: int = Exit.OK
    for i in range(args.days):
        args.date = first + timedelta(days=i)
        ctx, published, seconds = _run_one(args)
        print(_one_line(ctx, args.date, seconds), flush=True)
        code = max(code, Exit.OK if published else _run_exit(ctx, args.date))
    if not args.no_summary:
        args.date, args.online = None, ""
        cmd_summary(args)
    return code


def _online_example(config: str, cohort: str) -> None:
    """One cohort's features, read back from Feast's online store, in one line."""
    from pipeline.config import load_config
    from pipeline.outputs.feast import online_features

    cfg = load_config(config)
    values = online_features(cfg, [cohort])
    shown = ", ".join(f"{k.removesuffix('_shrunk')} {v[0]:.3g}" if isinstance(v[0], float)
                      else f"{k} {v[0]}" for k, v in list(values.items())[1:6])
    print(f"{'online':>13}: {cohort}: {shown}, … (`privacy-pipeline features '{cohort}'`)")


def cmd_scrub_text(args: argparse.Namespace) -> int:
    """JSON lines in ({"text": ...}), JSON lines out ({"text": scrubbed, "spans": [...]}),
    through exactly the detect_pii stage's free-text path, config and purpose key."""
    from pipeline.config import load_config
    from pipeline.transforms.pii.scrub import TextScrubber

    cfg = load_config(args.config)
    ctx = _authorized(args.config, "scrub_text")
    lines = (Path(args.input).read_text() if args.input else sys.stdin.read()).splitlines()
    rows = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    texts = []
    for n, line in rows:
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):  # bad input to the command: a usage error
            print(f"privacy-pipeline: error: {args.input or 'stdin'} line {n}: not a JSON "
                  "object with a string `text`", file=sys.stderr)
            return Exit.USAGE
        if len(text) > cfg.ingest.max_field_chars:  # as ingest quarantines it: field_too_long
            print(f"privacy-pipeline: error: {args.input or 'stdin'} line {n}: `text` is "
                  f"{len(text):,} characters, over ingest.max_field_chars "
                  f"({cfg.ingest.max_field_chars:,})", file=sys.stderr)
            return Exit.USAGE
        texts.append(text)
    unique = list(dict.fromkeys(texts))
    with TextScrubber(cfg.pii, ctx.key.token_key(cfg.purpose)) as scrubber:
        done = dict(zip(unique, scrubber.scrub_with_spans(unique), strict=True))
    for text in texts:
        scrubbed, spans = done[text]
        print(json.dumps({"text": scrubbed, "spans": [
            {"entity_type": s.entity_type, "start": s.start, "end": s.end} for s in spans]},
            ensure_ascii=False))
    return 0


def cmd_subject_access(args: argparse.Namespace) -> int:
    """Everything held of one person, as an archive they can take and a page they can read
    (GDPR Art. 15 and 20)."""
    from pipeline.config import load_config
    from pipeline.subjects.access import subject_access

    configs = [load_config(args.config), *(load_config(p) for p in args.also)]
    for path in [args.config, *args.also]:  # every purpose whose data is read
        _authorized(path, "subject_access")
    result = subject_access(configs, account_id=args.account_id, email=args.email,
                            out=Path(args.out) if args.out else None)
    if not result.holds_anything:
        print("nothing held of this person" + (
            f" (an erasure request of {', '.join(result.erasure_requested)} is on file)"
            if result.erasure_requested else ""))
    print(f"archive: {result.folder} ({len(result.tables)} tables, "
          f"{sum(result.tables.values()):,} rows)\nzip: {result.zip}\npage: {result.page}")
    return Exit.OK


def cmd_audit_log(args: argparse.Namespace) -> int:
    """The purpose's audit log of sensitive actions, verified (its chain and kept head)."""
    ctx = _authorized(args.config, "read_audit_log")
    log = ctx.audit_log()
    entries = log.verify(ctx.cfg.purpose)
    if args.json:
        for e in entries:
            print(json.dumps({"n": e.n, "at": e.at, "actor": e.actor, "role": e.role,
                              "action": e.action, "outcome": e.outcome, "subject": e.subject,
                              "detail": dict(e.detail)}, default=str))
        return Exit.OK
    print(f"{log.where}, purpose {ctx.cfg.purpose!r}: {len(entries)} entries, "
          "chain verified")
    for e in entries[-args.last:] if args.last else entries:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(e.detail.items()) if v is not None)
        print(f"{e.n:>5} {e.at} {e.actor} ({e.role}) {e.action} {e.outcome}"
              + (f" subject={e.subject}" if e.subject else "") + (f": {detail}" if detail
                                                                  else ""))
    return Exit.OK


def cmd_notice(args: argparse.Namespace) -> int:
    """The purpose's privacy notice, generated from its contracts (Markdown on standard
    output; with --out, notice.md and notice.html there). Runs record each new version, with
    its diff, in the audit bundle."""
    from pipeline.config import load_config
    from pipeline.core.layout import Layout
    from pipeline.outputs.notice import notice_sections, notice_versions, to_html, to_markdown

    cfg = load_config(args.config)
    sections = notice_sections(cfg)
    versions = notice_versions(Layout(cfg.paths.root, cfg.paths.local).area(
        cfg.zone("reports")))
    text = to_markdown(cfg.purpose, sections)
    latest = versions[-1] if versions else None
    same = latest is not None and latest.sha256 == hashlib.sha256(text.encode()).hexdigest()
    header = (f"Version {latest.version}, in force from {latest.effective}." if same and latest
              else "Not yet in force: the next run records it as a new version.")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "notice.md").write_text(to_markdown(cfg.purpose, sections, header))
        (out / "notice.html").write_text(to_html(cfg.purpose, sections, header))
        print(f"wrote {out / 'notice.md'} and {out / 'notice.html'} ({header})")
    else:
        print(to_markdown(cfg.purpose, sections, header))
    return Exit.OK


LOW_VOLUME_HELP = ("publish a day known to be small on purpose: its low-volume guardrail "
                   "breaches (rows, users, volume against recent days) are recorded as "
                   "accepted; a quarantine share over the limit is never accepted")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="privacy-pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="pipeline YAML (%(default)s)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also print the INFO log (libraries included) on standard error; "
                        "it is always in the run's log file")
    p.add_argument("--version", action=_Version, nargs=0,
                   help="print the version (with the git commit in a checkout) and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do; `privacy-pipeline COMMAND --help` for its options")

    g = sub.add_parser("generate", help="write seeded synthetic raw events and consent")
    g.add_argument("--start", type=_day, default=DEMO_DATE,
                   help="first day, YYYY-MM-DD (%(default)s)")
    g.add_argument("--days", type=_positive, default=1, help="days of events (%(default)s)")
    g.add_argument("--users", type=_positive, default=1000,
                   help="users, each with a profile, consent and events (%(default)s)")
    g.add_argument("--seed", type=int, default=7,
                   help="random seed: the same seed writes the same files (%(default)s)")
    g.add_argument("--out", help="data root (default: paths.data_root of the config)")
    g.add_argument("--cohort-signal", type=float,
                   help="how strongly users' category mix follows their cohort; 0 = none "
                        "(default: about as strongly as MovieLens' age band x gender)")
    g.add_argument("--drift", type=_drift, metavar="CITY:CATEGORY:SHARE@DATE",
                   help="inject a known shift: from DATE on, CATEGORY's share of the events "
                        "of users in CITY rises by SHARE (e.g. 'Chicago:sports:0.1@2026-11-03')")
    g.set_defaults(func=cmd_generate)

    k = sub.add_parser("init-key", help="create a local development key file (mode 0600)")
    k.add_argument("--key-id", default="dev-local-1",
                   help="the key's id, recorded with everything it keys (%(default)s)")
    k.add_argument("--out", help="key file (default: keys.file of the config)")
    k.set_defaults(func=cmd_init_key)

    r = sub.add_parser("run", help="run every stage for one date")
    r.add_argument("--date", type=_run_day, required=True,
                   help="the day to process, YYYY-MM-DD (over already)")
    r.add_argument("--accept-low-volume", action="store_true", help=LOW_VOLUME_HELP)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("stage", help="run one stage for one date (what a DAG task does)")
    s.add_argument("stage", choices=list(STAGES), help="the stage (README, stage table)")
    s.add_argument("--date", type=_run_day, required=True,
                   help="the day to process, YYYY-MM-DD (over already)")
    s.add_argument("--accept-low-volume", action="store_true", help=LOW_VOLUME_HELP)
    s.set_defaults(func=cmd_stage)

    rk = sub.add_parser("rekey", help="after a key rotation: move one date onto the active key")
    rk.add_argument("--date", type=_run_day, required=True,
                    help="the day to move onto the active key, YYYY-MM-DD")
    rk.set_defaults(func=cmd_rekey)

    f = sub.add_parser("features", help="read cohort features from the online store")
    f.add_argument("cohort", nargs="+", help="cohort id: region|age_band|device_type")
    f.set_defaults(func=cmd_features)

    lg = sub.add_parser("ledger", help="privacy ledger: releases and a window's spend")
    lg.add_argument("--date", type=_day,
                    help="last day of the window (default: the latest release)")
    lg.add_argument("--export-mac-keys", action="store_true",
                    help="print the ring's ledger MAC keys, to keep before a retired master "
                         "key is removed (README \"Keys and rotation\")")
    lg.set_defaults(func=cmd_ledger)

    pf = sub.add_parser("plan-features", help="expected error of each DP feature, and the "
                        "smallest change that meets a target")
    pf.add_argument("--users", type=_positive,
                    help="users per period (default: the latest release)")
    pf.add_argument("--target", type=float, default=0.5,
                    help="largest acceptable relative 95%% error (%(default)s)")
    pf.add_argument("--weekly-factor", type=float, default=3.0,
                    help="distinct users of a week over those of a day (%(default)s)")
    pf.set_defaults(func=cmd_plan_features)

    st = sub.add_parser("scrub-text", help="scrub free text as the pipeline does: JSON lines "
                        '{"text": ...} in, {"text", "spans"} out (spans index the input)')
    st.add_argument("input", nargs="?", help="JSON-lines file (default: standard input)")
    st.set_defaults(func=cmd_scrub_text)

    sa = sub.add_parser("subject-access", help="everything held of one person: an archive "
                        "(CSV + JSON per table, a README) and a page they can read")
    who = sa.add_mutually_exclusive_group(required=True)
    who.add_argument("--account-id", help="the person's account id")
    who.add_argument("--email", help="an e-mail address their events carry (its accounts)")
    sa.add_argument("--also", action="append", default=[], metavar="CONFIG",
                    help="another purpose's config to look in as well (repeatable)")
    sa.add_argument("--out", help="folder to write (default: <local root>/subject_access/"
                    "subject-<pseudonym>-<time>)")
    sa.set_defaults(func=cmd_subject_access)

    nt = sub.add_parser("notice", help="the purpose's privacy notice, generated from its "
                        "purpose file, schema and config (Markdown; --out adds HTML)")
    nt.add_argument("--out", help="folder to write notice.md and notice.html to")
    nt.set_defaults(func=cmd_notice)

    ik = sub.add_parser("issue-key", help="issue the config's purpose its own key, from the "
                        "master (so its tasks never load the master)")
    ik.add_argument("--out", help="write the purpose's key ring here (mode 0600); default: "
                    "standard output")
    ik.set_defaults(func=cmd_issue_key)
    al = sub.add_parser("audit-log", help="the audit log of sensitive actions (who released, "
                        "erased, rekeyed, read a subject's data, changed a contract), verified")
    al.add_argument("--last", type=_positive, default=None, help="only the last N entries")
    al.add_argument("--json", action="store_true", help="one JSON object per entry")
    al.set_defaults(func=cmd_audit_log)
    sm = sub.add_parser("summary", help="a finished run's summary and where its outputs are")
    sm.add_argument("--date", type=_day, default=None,
                    help="the run's day, YYYY-MM-DD (default: the latest)")
    sm.add_argument("--online", nargs="?", const="", default=None, metavar="COHORT",
                    help="also read a cohort's features back from the online store "
                         "(region|age_band|device_type; default: one of the grid)")
    sm.set_defaults(func=cmd_summary)
    d = sub.add_parser("demo", help="generate two days, make a dev key, run everything")
    d.add_argument("--date", type=_day, default=DEMO_DATE, help="first day (%(default)s)")
    d.add_argument("--days", type=_positive, default=2,
                   help="days generated and run (%(default)s)")
    d.add_argument("--users", type=_positive, default=4000,
                   help="users generated (%(default)s)")
    d.add_argument("--no-summary", action="store_true",
                   help="end after the runs' one-line results (`summary` prints it later)")
    d.set_defaults(func=cmd_demo)
    return p


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from pipeline.access.changes import code_version

        print(f"privacy-pipeline {code_version()}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    global VERBOSE
    args = build_parser().parse_args(argv)
    VERBOSE = args.verbose
    try:
        return int(args.func(args))
    except Exception as exc:  # noqa: BLE001 - told safely, never as a traceback
        safe = safe_error(exc)
        print(f"privacy-pipeline: error: {safe}", file=sys.stderr)
        return exit_code(safe)


if __name__ == "__main__":
    raise SystemExit(main())
