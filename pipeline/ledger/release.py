"""The release protocol: how a DP release is drawn at most once, charged to the ledger and
witnessed, next to the ledger it protects.

1. Nothing is released from a ledger that was reset, truncated or edited: its chain must verify,
   with the heads kept beside every released partition (`PrivacyLedger.verify`), and every
   release a witness kept apart says was made must still be in it as made (`check_witnesses`:
   the run records always, an append-only Postgres table when configured).
2. A release already in the ledger is returned as stored, never drawn again (fresh noise could
   be averaged against what was published); otherwise the charge is checked against every
   window its data touches before anything is drawn, then drawn, charged and stored in one
   transaction (`PrivacyLedger.release_once`).
3. The witness records it, the run's `LedgerRecord` says what it cost and what its window holds,
   and the released table is written where Feast reads it, with the ledger head beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING

from pipeline.core.errors import LedgerIntegrityError
from pipeline.core.fs import atomic_write_bytes
from pipeline.core.records import LedgerRecord
from pipeline.ledger.store import (
    Charge,
    PrivacyLedger,
    Release,
    WindowBudget,
    WindowSpend,
    read_heads,
    write_head,
)
from pipeline.ledger.witness import ReleaseWitness

if TYPE_CHECKING:
    from pipeline.core.context import RunContext


def release_days(period: str, day: date) -> list[date] | None:
    """The days of data a release on `day` covers: the day itself, or for a weekly set, on a
    Sunday, Monday to Sunday; None when no release is due."""
    if period == "day":
        return [day]
    if day.weekday() != 6:
        return None
    return [day - timedelta(days=6 - i) for i in range(7)]


def next_release(period: str, day: date) -> date:
    """When a release is next due (the coming Sunday, for a weekly set)."""
    return day if period == "day" else day + timedelta(days=6 - day.weekday())


def release_once(ctx: RunContext, day: date, days: list[date],
                 draw: Callable[[Charge], Release]) -> str:
    """The protocol above for the release of `day` over `days`; `draw(charge)` makes the
    release when it is not stored yet. Returns where the released table is."""
    fcfg = ctx.cfg.features
    ledger = ctx.ledger()
    ledger.verify(ctx.cfg.purpose, read_heads(ctx.area("features", "read")))
    witness = ReleaseWitness.from_env(ctx.cfg.budget.witness_dsn_env)
    check_witnesses(ctx, ledger, witness)
    budget = WindowBudget.from_config(ctx.cfg.budget)
    charge = Charge(purpose=ctx.cfg.purpose, feature_set=fcfg.feature_set,
                    release_date=str(day), period_start=str(days[0]),
                    planned=fcfg.release_budget, delta=fcfg.delta)
    stored, reused = ledger.release_once(charge, budget, lambda: draw(charge))
    if witness is not None:
        witness.record(stored.purpose, stored.feature_set, stored.release_date,
                       stored.payload_sha256, epsilon=stored.epsilon, rho=stored.rho,
                       delta=stored.delta)
    window = ledger.window_spend(ctx.cfg.purpose, day, budget)
    ctx.records(day).save(ledger_record(ctx, stored, reused, ledger, budget, window))
    path = ctx.file("features", "part.parquet", day, "write")
    atomic_write_bytes(path, stored.payload)
    if stored.mac is not None:
        write_head(path, stored)
    return str(path)


def ledger_record(ctx: RunContext, stored: Release, reused: bool, ledger: PrivacyLedger,
                  budget: WindowBudget, window: WindowSpend) -> LedgerRecord:
    """What the run records of a release: its cost, and its window's spend and budget."""
    stated = window.total.restated(budget.conversion_delta)  # a zCDP spend as (ε, δ)-DP
    return LedgerRecord(
        release_due=True, period=ctx.cfg.features.period, purpose=stored.purpose,
        feature_set=stored.feature_set, date=stored.release_date,
        covers=(stored.period_start, stored.period_end), epsilon=stored.epsilon,
        rho=stored.rho, delta=stored.delta, mechanism=stored.mechanism,
        library=stored.library, recorded_at=stored.created_at,
        payload_sha256=stored.payload_sha256, reused_stored_release=reused,
        ledger=ledger.where, accounting=ctx.cfg.budget.accounting, unit=budget.unit,
        cost=budget.accountant.cost(stored).value, window_days=budget.days,
        window_budget=budget.limit, window_spent=window.spent,
        window_delta_budget=budget.delta, window_delta_spent=window.delta,
        window_as_epsilon=stated.epsilon if stated else None,
        window_as_epsilon_delta=stated.delta if stated else None)


def check_witnesses(ctx: RunContext, ledger: PrivacyLedger, witness: ReleaseWitness | None
                    ) -> None:
    """Every release a witness kept apart from the ledger says was made (its date and payload
    digest) must still be in the ledger as made. The run records are one witness: a ledger
    rewound to an older copy, or a row deleted with its head file and partition, would
    otherwise let the day be released again with fresh noise. The optional append-only
    witness is the other: the check a restored ledger *and* restored run records cannot
    pass."""
    fset = ctx.cfg.features.feature_set
    claims: list[tuple[str, str, str]] = []  # (who says so, release date, payload digest)
    for d in ctx.record_dates():
        seen = ctx.records(d).load(LedgerRecord)
        if seen is not None and seen.release_due and seen.feature_set == fset \
                and seen.payload_sha256:
            claims.append((f"the run records (date={d}) say", seen.date, seen.payload_sha256))
    if witness is not None:
        claims += [(f"the release witness ({witness.where}) saw", w.release_date,
                    w.payload_sha256) for w in witness.known(ctx.cfg.purpose, fset)]
    for who, day, digest in claims:
        stored = ledger.get(ctx.cfg.purpose, fset, day)
        if stored is None or stored.payload_sha256 != digest:
            raise LedgerIntegrityError(
                f"ledger {ledger.where}, purpose {ctx.cfg.purpose!r}: {who} the release of "
                f"{day} was made (payload {digest[:12]}…) but the ledger "
                + ("no longer holds it" if stored is None else "holds another")
                + ". The ledger was reset, truncated or edited; nothing is released from it "
                  "(a fresh draw could be averaged against what was published). Restore it "
                  "from backup.")
