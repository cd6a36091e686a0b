"""The argparse parser, made from the command table."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Collection, Sequence
from typing import NoReturn

from mgr_agent import __version__
from mgr_agent.commands.shared import RUNTIME
from mgr_agent.commands.spec import Command, Parents, seconds

EXIT_CODES = """exit codes:
  0  success (also: unchanged, planned)      7  a hook failed before anything changed
  1  internal error                          8  failed after the switch (hook, file, panel
  2  usage or configuration error               health); rolled back
  3  invalid or unsafe package               9  lock busy (see --wait)
                                             10 preflight or staging failed; nothing changed
  4  not installed / not found               11 recovery failed or state corrupt
  5  file conflict with another package      12 checksum mismatch
  6  refused: downgrade, panel version, os   13 a handler's answer broke the panel protocol
                                             14 not root or mgr-agent (daemon or state)
                                             15 download failed (install URL)
                                             16 verify: installed files differ
                                             130 interrupted (SIGINT/SIGTERM/SIGHUP)"""


def _columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing shutil (and with it bz2 and
    lzma) in every start: argparse makes a formatter for each argument it adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class RawDescriptionFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def _part() -> argparse.ArgumentParser:
    """A group of options other parsers take as a parent."""
    return argparse.ArgumentParser(add_help=False, formatter_class=Formatter)


class _Unloaded(argparse.ArgumentParser):
    """Stands for the commands a command line does not name (``build``'s ``names``)."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> NoReturn:
        raise AssertionError("a command the command line names was not loaded")


def build(commands: Collection[Command], *, configure: Collection[str] | None = None,
          names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``mgr-agent`` parser.  A command with sub-commands of its own (``aps``) builds
    them only when named in ``configure`` (None: all), which keeps the start light.

    ``names``: every command's name in the table's order, when ``commands`` holds only
    those a command line names (the others are then known by name alone: enough to parse
    it and to refuse an unknown command, not to print the program's own ``--help``)."""
    # Each command is offered only the options that apply to it; the program accepts
    # them all before the command (``mgr-agent --no-daemon --json list``).
    base = _part()
    base.add_argument("--root", default=argparse.SUPPRESS, metavar="DIR",
                      help="root prefix: an existing directory (default /)")
    base.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                      help="debug logging on stderr, with tracebacks")
    output = _part()
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout")
    locking = _part()
    locking.add_argument("--wait", type=seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                         help="how long to wait for the lock (default 300, from agent.toml)")
    in_process = _part()
    in_process.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS,
                            help="run in this process even when the daemon answers (also: "
                                 "MGR_AGENT_NO_DAEMON=1)")
    common = [base, output, locking, in_process]
    shared: list[Parents] = []   # made for the first command that configures its own

    def parents_for_configure() -> Parents:
        if not shared:
            runtime = _part()
            for arg in RUNTIME:
                arg.add_to(runtime)
            shared.append(Parents(common=argparse.ArgumentParser(
                add_help=False, parents=common, formatter_class=Formatter), runtime=runtime))
        return shared[0]

    parser = argparse.ArgumentParser(
        prog="mgr-agent", parents=common,
        description="Install, upgrade, roll back and remove ispmanager 6 plugins and Plesk "
                    "extensions, transactionally.",
        epilog=EXIT_CODES, formatter_class=RawDescriptionFormatter)
    parser.add_argument("--version", action="version", version=f"mgr-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    loaded = {c.name: c for c in commands}
    unloaded: _Unloaded | None = None
    for name in loaded if names is None else names:
        command = loaded.get(name)
        if command is None:
            unloaded = unloaded or _Unloaded(prog=name, add_help=False)
            sub.choices[name] = unloaded
            continue
        if command.route == "api-only":
            continue
        if command.options == "root":
            parents = [base]
        elif command.options == "all" or command.route == "daemon":
            parents = common
        elif command.route == "daemon-unless-root":
            parents = [base, output, in_process]
        else:
            parents = [base, output]
        p = sub.add_parser(command.name, parents=parents, help=command.help,
                           description=command.description or command.help,
                           formatter_class=Formatter)
        for arg in command.args:
            if arg.cli:
                arg.add_to(p)
        if command.configure is not None and (configure is None or command.name in configure):
            command.configure(p, parents_for_configure())
    return parser
