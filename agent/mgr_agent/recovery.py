"""Recovery: finish or undo the transactions a crash left behind (DESIGN §5).

Every journal under ``var/lib/mgr-agent/journal/`` is an interrupted transaction: one
whose commit row is in the state database is finished (backups dropped), any other is
undone from the phase its journal reached, its panel registration put back as it was.
Recovery is idempotent; it runs before every mutating command and, when nobody holds
the lock, before every read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mgr_agent.context import EngineContext
from mgr_agent.errors import AgentError, RecoveryError
from mgr_agent.fsutil import fsync_dir
from mgr_agent.plan import Plan
from mgr_agent.state import State
from mgr_agent.steps import restart_quietly
from mgr_agent.store import collect_garbage
from mgr_agent.transaction import Transaction
from mgr_agent.wal import replay


def recover(ctx: EngineContext, state: State) -> list[dict[str, Any]]:
    """Finish committed or undo uncommitted transactions; what was done, one entry each."""
    done: list[dict[str, Any]] = []
    directory = ctx.layout.journal_dir
    for path in sorted(directory.glob("*.log")) if directory.is_dir() else []:
        done.append(_recover_one(ctx, state, path))
    collect_garbage(ctx.layout, state)
    return done


def _recover_one(ctx: EngineContext, state: State, path: Path) -> dict[str, Any]:
    rep = replay(path)
    if rep.begin is None:
        path.unlink()
        return {"tx": rep.tx, "outcome": "discarded", "found": rep.torn or "empty journal"}
    plan = Plan.from_record(rep.begin["plan"])
    transaction = Transaction(ctx.layout, rep.tx, plan, durability=ctx.config.durability)
    panel = ctx.panel(rep.begin["panel"])
    name = rep.begin.get("name")
    try:
        committed = state.is_committed(rep.tx)
        if committed:
            transaction.finish()
        else:
            transaction.undo(rep.phase)
            if rep.registered:
                panel.register(ctx.runner, str(name), bool(state.find(str(name), panel.name)))
    except (OSError, AgentError) as exc:
        raise RecoveryError(
            f"cannot recover transaction {rep.tx} ({rep.begin['op']} {name}): {exc}",
            hint="fix the cause (a read-only mount, a full disk, permissions) and run "
                 "`mgr-agent recover` again; the journal is kept", path=str(path)) from exc
    if committed:
        outcome = "completed"
    else:
        if rep.phase in ("switching", "switched"):
            restart_quietly(ctx, panel, [])
        state.record(rep.tx, rep.begin["op"], "rolled_back_by_recovery", "rolled_back",
                     panel.name, name, rep.begin.get("from_version"),
                     rep.begin.get("to_version"), rep.begin.get("started", time.time()),
                     {"phase": rep.phase, "torn": rep.torn,
                      "actor": rep.begin.get("actor", ""), "recovered_by": ctx.actor})
        outcome = "rolled back"
    path.unlink()
    fsync_dir(path.parent)
    entry = {"tx": rep.tx, "op": rep.begin["op"], "name": name, "phase": rep.phase,
             "outcome": outcome}
    if rep.torn:
        entry["found"] = rep.torn
    ctx.progress(f"recovered interrupted {rep.begin['op']} of {name}: {outcome}")
    return entry
