"""The commands that change a root: they take the lock and run in the daemon when it
answers (``install``, ``uninstall``, ``rollback``, ``recover``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

from mgr_agent.commands import render
from mgr_agent.commands.shared import (
    DRY_RUN,
    NAME,
    PANEL_DETECTED,
    PANEL_INSTALLED,
    RUNTIME,
    WAIT,
)
from mgr_agent.commands.spec import BOOL, STR, Arg, Args, Command, Context, Paint, sha256_hex

if TYPE_CHECKING:
    from mgr_agent.result import Result


def _install(ctx: Context, args: Args) -> Result:
    engine = ctx.engine(args)
    panel, sha256 = args.text("panel"), args.text("sha256")
    url = args.text("url")
    if url is not None:
        return engine.install_url(url, panel=panel, sha256=sha256, dry_run=args.flag("dry_run"),
                                  allow_downgrade=args.flag("allow_downgrade"),
                                  reinstall=args.flag("reinstall"), strict=args.flag("strict"))
    return engine.install(Path(args.need("path")), panel=panel, sha256=sha256,
                          dry_run=args.flag("dry_run"), allow_downgrade=args.flag("allow_downgrade"),
                          reinstall=args.flag("reinstall"), strict=args.flag("strict"))


INSTALL = Command(
    "install", "install or upgrade a plugin from a zip, tar or directory, or an https:// URL "
               "(with --sha256)",
    args=(WAIT, *RUNTIME,
          Arg("path", "a file, a directory or an https:// URL", api=STR, source=True),
          Arg("url", api=STR, cli=False),
          PANEL_DETECTED,
          Arg("sha256", "refuse the archive unless its sha256 matches (required for a URL)",
              ("--sha256",), api=STR, type=sha256_hex, metavar="HEX"),
          DRY_RUN,
          Arg("allow_downgrade", "allow installing an older version", ("--allow-downgrade",),
              api=BOOL, action="store_true"),
          Arg("reinstall", "rewrite every file even if unchanged", ("--reinstall",), api=BOOL,
              action="store_true"),
          Arg("strict", "refuse on check warnings too (docs/check.md)", ("--strict",), api=BOOL,
              action="store_true")),
    run=_install, render=render.change, route="daemon", mutates=True, one_of=("path", "url"))


def _uninstall(ctx: Context, args: Args) -> Result:
    return ctx.engine(args).uninstall(args.need("name"), panel=args.text("panel"),
                                      purge=args.flag("purge"), dry_run=args.flag("dry_run"),
                                      force=args.flag("force"))


UNINSTALL = Command(
    "uninstall", "remove an installed plugin",
    args=(WAIT, *RUNTIME, NAME, PANEL_INSTALLED,
          Arg("purge", "also remove data (Plesk var/modules/ID)", ("--purge",), api=BOOL,
              action="store_true"),
          DRY_RUN,
          Arg("force", "go on when the pre-uninstall hook fails or hangs (its output becomes a "
                       "warning); safety rules and the lock still apply", ("--force",), api=BOOL,
              action="store_true")),
    run=_uninstall, render=render.change, route="daemon", mutates=True)


def _rollback(ctx: Context, args: Args) -> Result:
    return ctx.engine(args).rollback(args.need("name"), panel=args.text("panel"))


ROLLBACK = Command(
    "rollback", "go back to the version kept from before the last upgrade",
    args=(WAIT, *RUNTIME, NAME, PANEL_INSTALLED),
    run=_rollback, render=render.change, route="daemon", mutates=True)


class RecoveredDetail(TypedDict, total=False):
    op: str
    name: str | None
    found: str


class RecoveredTx(RecoveredDetail):
    tx: str
    outcome: str


class RecoverData(TypedDict):
    transactions: list[RecoveredTx]


def _render_recover(result: Result, paint: Paint) -> str:
    if result.action != "recovered":
        return render.change(result, paint)
    txs = cast(RecoverData, result.data)["transactions"]
    line = "nothing to recover" if not txs else "\n".join(
        f"transaction {t['tx']} ({t.get('op', '?')} {t.get('name') or ''}): {t['outcome']}"
        + (f"; found {t['found']}" if t.get("found") else "") for t in txs)
    return render.tail(result, paint, [line])


RECOVER = Command(
    "recover", "finish or undo an interrupted transaction",
    args=(WAIT,), run=lambda ctx, args: ctx.engine(args).recover(), render=_render_recover,
    route="daemon", mutates=True, json_data=True, shape=RecoverData)
