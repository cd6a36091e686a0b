"""The commands that read: the installed plugins, their files and history (through the
daemon for anyone but root: the state is root:mgr-agent 0750), a package check, ``ping``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

from mgr_agent import __version__
from mgr_agent.commands import render
from mgr_agent.commands.shared import NAME, PANEL_DETECTED, PANEL_INSTALLED
from mgr_agent.commands.spec import BOOL, INT, STR, Arg, Args, Command, Context, Paint, positive, sha256_hex

if TYPE_CHECKING:
    from collections.abc import Callable

    from mgr_agent.findings import FindingDict
    from mgr_agent.result import Result
    from mgr_agent.state import State

HISTORY_LIMIT = 50   # `history` shows this many transactions unless -n says otherwise


# ------------------------------------------------------------------ reading the state
def _read_only(ctx: Context) -> State | None:
    """The state for ``list`` and ``history`` without the engine's imports: opened
    read-only (an empty one on a root without state).  None when the engine must open it:
    a journal is left (it recovers the transaction first), or the database is due a
    migration or cannot be read as it is.  agent.toml is read, and refused, as the
    engine would."""
    from mgr_agent.state import State, open_read_only  # noqa: PLC0415

    layout = ctx.layout
    if layout.journals_left():
        return None
    if layout.config_file.exists():
        from mgr_agent import config  # noqa: PLC0415

        config.load(layout)
    if not layout.db_file.exists():
        return State(None)
    return open_read_only(layout.db_file)


def _reading(ctx: Context, read: Callable[[State], Result],
             through_engine: Callable[[], Result]) -> Result:
    state = _read_only(ctx)
    if state is None:
        return through_engine()
    try:
        state.check()
        with state.guard():
            return read(state)
    finally:
        state.close()


# ------------------------------------------------------------------ list
class ListRow(TypedDict):
    name: str
    panel: str
    version: str
    installed_at: float
    files: int


def _render_list(result: Result, paint: Paint) -> str:
    if result.action != "listed":
        return render.change(result, paint)
    rows = cast(list[ListRow], result.data or [])
    if not rows:
        return "no plugins installed"
    width = max(len(r["name"]) for r in rows)
    return "\n".join(f"{r['name']:<{width}}  {r['panel']:<10}  {r['version']:<16}  {r['files']} files"
                     for r in rows)


def _list(ctx: Context, _args: Args) -> Result:
    from mgr_agent.result import Result  # noqa: PLC0415

    return _reading(ctx, lambda state: Result(action="listed", data=state.listing()),
                    lambda: ctx.engine().list())


LIST = Command("list", "list installed plugins", run=_list,
               render=_render_list, route="daemon-unless-root", json_data=True,
               shape=ListRow, many=True, light=True)


# ------------------------------------------------------------------ info
class InfoFile(TypedDict):
    path: str
    sha256: str
    size: int
    mode: str
    kind: str
    flags: list[str]


class KeptVersion(TypedDict):
    version: str
    release: str | None
    kept_at: float


class InfoData(TypedDict):
    version: str
    release: str | None
    content_hash: str
    installed_at: float
    tx: str
    meta: dict[str, object]
    files: list[InfoFile]
    diversions: list[str]
    kept: list[KeptVersion]


def _render_info(result: Result, paint: Paint) -> str:
    if result.action != "info":
        return render.change(result, paint)
    d = cast(InfoData, result.data)
    lines = [f"{render.who(result)} {result.version}",
             f"  installed {render.when(d['installed_at'])} by transaction {d['tx']}"]
    kept = [f"{k['version']}-{k['release']}" if k["release"] else k["version"] for k in d["kept"]]
    lines.append(f"  {len(d['files'])} files; kept for rollback: " + (", ".join(kept) or "none"))
    lines += [f"  {f['mode']} {f['path']}" + (" (data)" if f["kind"] == "data" else "")
              + "".join(f" ({flag})" for flag in f.get("flags", [])) for f in d["files"]]
    lines += [f"  replaces panel file {p} (original kept)" for p in d["diversions"]]
    return "\n".join(lines)


INFO = Command("info", "show an installed plugin and its files",
               args=(NAME, PANEL_INSTALLED),
               run=lambda ctx, args: ctx.engine().info(args.need("name"), panel=args.text("panel")),
               render=_render_info, route="daemon-unless-root", json_data=True,
               shape=InfoData)


# ------------------------------------------------------------------ verify
class Differing(TypedDict):
    name: str
    panel: str
    path: str
    flags: list[str]


class VerifyData(TypedDict):
    checked: int
    packages: int
    files: list[Differing]


def _render_verify(result: Result, paint: Paint) -> str:
    if result.action != "verified":
        return render.change(result, paint)
    d = cast(VerifyData, result.data)
    lines = [f"{','.join(f['flags']):<9} {f['name']}  {f['path']}" for f in d["files"]]
    if not d["files"]:
        lines.append(paint("ok", "32") + f": {d['checked']} file(s) of {d['packages']} "
                     "plugin(s) are as installed")
    return render.tail(result, paint, lines)


VERIFY = Command(
    "verify", "check installed files against their manifest (modified, missing, mode)",
    args=(Arg("name", "one plugin (default: every installed plugin)", api=STR, nargs="?"),
          PANEL_INSTALLED),
    run=lambda ctx, args: ctx.engine().verify(args.text("name"), panel=args.text("panel")),
    render=_render_verify, route="daemon-unless-root", json_data=True, shape=VerifyData)


# ------------------------------------------------------------------ history
class HistoryDetail(TypedDict, total=False):
    """What a history row's detail may add, as the transaction's outcome left it.  (Not
    ``NotRequired``: under ``from __future__ import annotations`` Python 3.11 does not see
    it at run time, and the shape test reads ``__optional_keys__``.)"""

    actor: str
    hooks: list[dict[str, object]]
    warnings: list[str]
    plan: dict[str, int]
    error: dict[str, object]
    phase: str
    torn: bool
    recovered_by: str


class HistoryRow(HistoryDetail):
    """One transaction."""

    tx: str
    op: str
    panel: str | None
    name: str | None
    from_version: str | None
    to_version: str | None
    started: float
    ended: float | None
    status: str
    action: str | None


def _render_history(result: Result, paint: Paint) -> str:
    if result.action != "history":
        return render.change(result, paint)
    rows = cast(list[HistoryRow], result.data or [])
    return "\n".join(
        f"{render.when(h['started'])}  {h['tx']}  {h['op']:<9}  {h['name'] or '-':<20}  "
        f"{h['from_version'] or '-'} -> {h['to_version'] or '-'}  {h['status']}"
        for h in rows) or "no history"


def _history(ctx: Context, args: Args) -> Result:
    from mgr_agent.result import Result  # noqa: PLC0415

    count = args.count("limit")
    name, limit = args.text("name"), HISTORY_LIMIT if count is None else count
    return _reading(ctx, lambda state: Result(action="history", name=name,
                                              data=state.history(name, limit)),
                    lambda: ctx.engine().history(name, limit))


HISTORY = Command(
    "history", "show past transactions",
    args=(Arg("name", "only this plugin's transactions", api=STR, nargs="?"),
          Arg("limit", f"the last N transactions (default {HISTORY_LIMIT})", ("-n", "--limit"),
              api=INT, type=positive, default=HISTORY_LIMIT, metavar="N")),
    run=_history, render=_render_history, route="daemon-unless-root", json_data=True,
    shape=HistoryRow, many=True, light=True)


# ------------------------------------------------------------------ check
class CheckData(TypedDict, total=False):
    files: int
    hooks: list[str]
    skipped: object
    content_hash: str
    archive_sha256: str | None
    meta: dict[str, object]
    findings: list[FindingDict]
    notes: list[str]


def _render_check(result: Result, paint: Paint) -> str:
    if result.action != "checked":
        return render.change(result, paint)
    from mgr_agent.findings import Finding  # noqa: PLC0415

    d = cast(CheckData, result.data or {})
    lines = [paint("error", "31;1") + Finding(**f).text().removeprefix("error")
             for f in d.get("findings") or [] if f["severity"] == "error"]
    if result.error is None:
        lines.append(paint("ok", "32") + f": {render.who(result)} {result.version}, {d['files']} "
                     f"files, hooks: {', '.join(d['hooks']) or 'none'}")
    return render.tail(result, paint, lines)


def _check(ctx: Context, args: Args) -> Result:
    return ctx.engine().check(Path(args.need("path")), panel=args.text("panel"),
                              sha256=args.text("sha256"), strict=args.flag("strict"))


CHECK = Command(
    "check", "validate a package without installing it",
    args=(Arg("path", "a zip, a tar or a directory", api=STR, type=Path, required=True),
          PANEL_DETECTED,
          Arg("sha256", "refuse the archive unless its sha256 matches", ("--sha256",), api=STR,
              type=sha256_hex, metavar="HEX"),
          Arg("strict", "warnings count as errors (exit 3)", ("--strict",), api=BOOL,
              action="store_true")),
    run=_check, render=_render_check, served=True, json_data=True, shape=CheckData)


# ------------------------------------------------------------------ ping (the API only)
class PingData(TypedDict):
    version: str
    pid: int
    root: str
    degraded: str


def _ping(ctx: Context, _args: Args) -> Result:
    from mgr_agent.result import Result  # noqa: PLC0415

    data: PingData = {"version": __version__, "pid": os.getpid(), "root": str(ctx.layout.root),
                      "degraded": ctx.degraded}
    return Result(action="pong", data=data)


PING = Command("ping", "is the daemon there, and which version and root does it serve",
               run=_ping, render=render.failure_only, route="api-only", shape=PingData)
