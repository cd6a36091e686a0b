"""The command table: one declaration per command (``COMMANDS``), and everything derived
from it — the argparse parser, the values an in-process run gets, the daemon request the
CLI sends, the daemon API's argument check and dispatch, the text renderer.

Adding a command: declare it in one of this package's modules (its arguments, route and
renderer; see ``spec.Command``), name that module in ``WHERE`` below, and write its
operation.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent.commands.spec import Args, Command, Context, Paint, is_url

if TYPE_CHECKING:
    import argparse

    from mgr_agent.result import Result

WHERE: dict[str, str] = {
    "install": "changes", "uninstall": "changes", "rollback": "changes",
    "list": "reads", "info": "reads", "verify": "reads", "history": "reads", "check": "reads",
    "new": "authoring", "pack": "authoring",
    "recover": "changes",
    "logs": "runtime", "call": "runtime", "restart-core": "runtime", "debug": "runtime",
    "aps": "aps", "metrics": "service", "daemon": "service",
    "ping": "reads",
}
"""Every command, in the table's order, and the module of this package that declares it
(as the upper-case name: ``restart-core`` is ``runtime.RESTART_CORE``).  A command line
loads the module of the command it runs, not the whole table."""

API_ONLY = ("ping",)
"""The commands without a CLI form (``route="api-only"``), so that the parser can name
every other command without loading its declaration."""

CLI_NAMES = tuple(n for n in WHERE if n not in API_ONLY)

COMMANDS: dict[str, Command]
"""Every declaration by name, in ``WHERE``'s order; made at its first use (the daemon,
the API, the program's own ``--help``)."""


def command(name: str) -> Command:
    """The declaration of ``name`` (KeyError: no such command), loading only its module."""
    module = importlib.import_module(f"{__name__}.{WHERE[name]}")
    declared: Command = getattr(module, name.upper().replace("-", "_"))
    return declared


def _table() -> dict[str, Command]:
    table: dict[str, Command] | None = globals().get("COMMANDS")
    if table is None:
        table = globals()["COMMANDS"] = {n: command(n) for n in WHERE}
    return table


def __getattr__(name: str) -> object:
    if name == "COMMANDS":
        return _table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cli_commands(table: dict[str, Command] | None = None) -> list[Command]:
    return [c for c in (table or _table()).values() if c.route != "api-only"]


def api_commands(table: dict[str, Command] | None = None) -> list[Command]:
    return [c for c in (table or _table()).values() if c.in_api]


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
