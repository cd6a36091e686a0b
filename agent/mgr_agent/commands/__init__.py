"""The command table: one declaration per command (``COMMANDS``), and everything derived
from it — the argparse parser, the values an in-process run gets, the daemon request the
CLI sends, the daemon API's argument check and dispatch, the text renderer.

Adding a command: declare it in one of this package's modules (its arguments, route and
renderer; see ``spec.Command``), list it in ``COMMANDS`` below, and write its operation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent.commands import aps, authoring, changes, reads, runtime, service
from mgr_agent.commands.spec import Args, Command, Context, Paint, is_url

if TYPE_CHECKING:
    import argparse

    from mgr_agent.result import Result

COMMANDS: dict[str, Command] = {c.name: c for c in (
    changes.INSTALL, changes.UNINSTALL, changes.ROLLBACK,
    reads.LIST, reads.INFO, reads.VERIFY, reads.HISTORY, reads.CHECK,
    authoring.NEW, authoring.PACK,
    changes.RECOVER,
    runtime.LOGS, runtime.CALL, runtime.RESTART_CORE, runtime.DEBUG,
    aps.APS, service.METRICS, service.DAEMON,
    reads.PING,
)}


def cli_commands(table: dict[str, Command] | None = None) -> list[Command]:
    return [c for c in (table or COMMANDS).values() if c.route != "api-only"]


def api_commands(table: dict[str, Command] | None = None) -> list[Command]:
    return [c for c in (table or COMMANDS).values() if c.in_api]


# ------------------------------------------------------------------ the CLI's side
def values_of(command: Command, namespace: argparse.Namespace) -> tuple[dict[str, object], str | None]:
    """The values of a parsed command line, by API name (what an in-process run gets),
    and the package file to send the daemon along with the request, if any."""
    values = {k: v for k, v in vars(namespace).items() if not k.startswith("no_")}
    sent: str | None = None
    for arg in command.args:
        if arg.invert:
            values[arg.name] = not getattr(namespace, f"no_{arg.name}", False)
        else:
            values.setdefault(arg.name, None)
        if arg.source and values.get(arg.name) is not None:
            text = str(values[arg.name])
            if is_url(text):
                values[arg.name], values["url"] = None, text
            else:
                values[arg.name] = sent = str(Path(text).absolute())
    return values, sent


def request_of(command: Command, values: dict[str, object]) -> dict[str, object]:
    """The daemon request's arguments: what differs from the operation's defaults."""
    return {a.name: values[a.name] for a in command.args
            if a.api is not None and values.get(a.name) is not None
            and values[a.name] != a.api_default}


def open_sent(path: str | None) -> int | None:
    """The package file the daemon may read instead of a path it cannot see (a private /tmp)."""
    if path is None:
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


# ------------------------------------------------------------------ the daemon's side
def args_of_request(command: Command, given: dict[str, object]) -> Args:
    """A checked request's arguments, with the declared defaults for those left out."""
    values = {a.name: a.api_default for a in command.args if a.api is not None}
    values.update({k: v for k, v in given.items() if v is not None})
    return Args(values)


# ------------------------------------------------------------------ both
def execute(command: Command, ctx: Context, args: Args, *, in_daemon: bool = False) -> Result:
    """Run a command's operation; any exception becomes its failed result (``result.failure``)."""
    from mgr_agent.result import Result  # noqa: PLC0415

    try:
        if command.run is not None:
            return command.run(ctx, args)
        if command.stream is None:
            raise AssertionError(f"{command.name} declares neither run nor stream")
        command.stream(ctx, args)   # the records went to ctx.out as they came
        return Result(action=command.name)
    except (Exception, KeyboardInterrupt) as exc:
        return failed(command, args, exc, in_daemon=in_daemon)


def failed(command: Command, args: Args, exc: BaseException, *, in_daemon: bool = False) -> Result:
    """``exc`` as the command's failed result, naming the plugin it was about."""
    from mgr_agent.result import failure  # noqa: PLC0415

    return failure(exc, command.name, name=args.text("name") or args.text("plugin"),
                   panel=args.text("panel"), in_daemon=in_daemon)


def render_text(command: Command, result: Result, paint: Paint) -> str:
    """The text people read for ``result``."""
    from mgr_agent.commands import render  # noqa: PLC0415

    return (command.render or render.change)(result, paint)
