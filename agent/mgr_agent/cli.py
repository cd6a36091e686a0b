"""``mgr-agent``: argument parsing, rendering and exit codes; no business logic.

Every command is declared once in ``mgr_agent.commands``; this module parses the command
line with the parser made from that table, runs the command here or in the daemon, and
prints its result."""

from __future__ import annotations

import contextlib
import os
import sys

from mgr_agent import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for ``--version``
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import TextIO

    from mgr_agent.commands.spec import Command, Context, Record
    from mgr_agent.errors import UsageError
    from mgr_agent.result import Result

# The command table is imported by main(), after the one answer that needs none of it
# (``--version``): every import here is paid by every start.


def _parser(configure: list[str] | None = None, named: list[str] | None = None
            ) -> argparse.ArgumentParser:
    """The parser; with ``named``, only those commands' declarations are loaded."""
    from mgr_agent import commands  # noqa: PLC0415
    from mgr_agent.commands import parser as parser_mod  # noqa: PLC0415

    if named is None:
        return parser_mod.build(commands.cli_commands(), configure=configure)
    return parser_mod.build([commands.command(n) for n in named], configure=configure,
                            names=commands.CLI_NAMES)


def _named(words: list[str], names: tuple[str, ...]) -> list[str] | None:
    """The commands a command line names (any word that is a command's name), or None
    when the parser needs them all: no command is named, or a help option (``-h``,
    ``-vh``, ``--he``…) comes before the first one, which prints every command's help."""
    named = [w for w in words if w in names]
    if not named:
        return None
    for word in words[:words.index(named[0])]:
        if word.startswith("--h") or (word.startswith("-") and not word.startswith("--")
                                      and "h" in word):
            return None
    return list(dict.fromkeys(named))


class _Terminal:
    """Human output: progress on stderr, colour when it is a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.colour = enabled and stream.isatty() and "NO_COLOR" not in os.environ

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def progress(self, message: str) -> None:
        if self.enabled:
            try:
                print(self.paint("··· ", "2") + message, file=self.stream, flush=True)
            except BrokenPipeError:  # progress is optional; the operation goes on
                self.enabled = False


def _root_problem(args: argparse.Namespace) -> UsageError | None:
    """``--root`` must name an existing directory: nothing is created in the wrong place."""
    root = getattr(args, "root", None)
    if root is None or os.path.isdir(root):
        return None
    from mgr_agent.errors import UsageError  # noqa: PLC0415

    what = "not a directory" if os.path.lexists(root) else "no such directory"
    return UsageError(f"--root {root}: {what}",
                      hint="give the root prefix of an existing tree (the default is /)", path=root)


def _closed_pipe() -> int:
    """The reader went away (``| head``): stop quietly, as other Unix tools do."""
    import signal  # noqa: PLC0415

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
    return 128 + signal.SIGPIPE


_EXIT = {"fast": False}  # set by main for every command but the daemon


def console() -> None:
    """The ``mgr-agent`` program: :func:`main`, then out without the interpreter's teardown.

    A command's work ends before :func:`main` returns: its files and state are durable, the
    threads it started are joined (a hash still running after a refusal is of no use), its
    output is flushed here.  What the teardown would add is freeing every object one by one
    (a 5,000-file plan, a package's inflated entries: 10-25 ms).  The daemon exits the
    ordinary way."""
    code = main()
    if not _EXIT["fast"]:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: main said so already
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words == ["--version"]:  # what argparse would print, without building the parser
        print(f"mgr-agent {__version__}")
        return 0
    from mgr_agent import commands  # noqa: PLC0415

    named = _named(words, commands.CLI_NAMES)
    args = _parser(configure=[w for w in words if w in commands.CLI_NAMES],
                   named=named).parse_args(words)
    command = commands.command(args.command)
    _EXIT["fast"] = command.options != "root"
    try:
        problem = _root_problem(args)
        if problem is not None and command.options == "root":  # the daemon: no result document
            print(f"error: {problem.message}", file=sys.stderr)
            return problem.exit_code
        if problem is not None:
            from mgr_agent.result import Result  # noqa: PLC0415

            code = _emit(command, Result(action="failed", error=problem), args)
        else:
            code = _run(command, args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()


def _context(args: argparse.Namespace, term: _Terminal) -> Context:
    from mgr_agent.commands.spec import Context  # noqa: PLC0415
    from mgr_agent.layout import Layout  # noqa: PLC0415

    return Context(Layout.at(getattr(args, "root", "/")), progress=term.progress,
                   lock_wait=getattr(args, "wait", None), out=sys.stdout,
                   as_json=getattr(args, "json", False), verbose=getattr(args, "verbose", 0) or 0)


def _logging(verbose: bool) -> None:
    """Log records on stderr: warnings and errors, and with ``-v`` debug and tracebacks."""
    import logging  # noqa: PLC0415

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(message)s", stream=sys.stderr)


def _run(command: Command, args: argparse.Namespace) -> int:
    from mgr_agent import commands, signals  # noqa: PLC0415
    from mgr_agent.commands.spec import Args  # noqa: PLC0415

    as_json: bool = getattr(args, "json", False)
    verbose = bool(getattr(args, "verbose", 0))
    term = _Terminal(sys.stderr, enabled=not as_json)
    ctx = _context(args, term)
    if command.options != "root":  # the daemon sets up its own logging and signals
        if command.light and not verbose:  # nothing logs before the engine, if it comes
            ctx.before_engine = lambda: _logging(verbose)
        else:
            _logging(verbose)
        signals.install_handlers()
    values, sent = commands.values_of(command, args)
    given = Args(values)
    if command.stream is not None:
        ctx.show = _printer(as_json, sys.stdout)
        try:
            return command.stream(ctx, given)
        except BrokenPipeError:
            raise  # the reader went away: main() ends quietly
        except (Exception, KeyboardInterrupt) as exc:
            return _emit(command, commands.failed(command, given, exc), args,
                         _Terminal(sys.stderr, enabled=False))
    through = command.route == "daemon" or (command.route == "daemon-unless-root"
                                            and os.geteuid() != 0)
    try:
        result = _via_daemon(command, args, values, sent, term) if through else None
    except (Exception, KeyboardInterrupt) as exc:
        result = commands.failed(command, given, exc)
    if result is None:
        result = commands.execute(command, ctx, given)
        if command.mutates:
            _journal(result, command.name, ctx)
    return _emit(command, result, args, term)


def _printer(as_json: bool, out: TextIO) -> Callable[[Record], None]:
    """Records one a line, as JSON or text (coloured on a terminal), each flushed at once
    (``logs -f`` shows a record when it comes)."""
    colour = not as_json and out.isatty() and "NO_COLOR" not in os.environ
    if as_json:
        import json  # noqa: PLC0415

    def show(record: Record) -> None:
        out.write((json.dumps(record.to_json(), ensure_ascii=False) if as_json
                   else record.text(colour)) + "\n")
        out.flush()

    return show


def _via_daemon(command: Command, args: argparse.Namespace, values: dict[str, object],
                sent: str | None, term: _Terminal) -> Result | None:
    """Run the command in the daemon when its socket answers; None: do it here."""
    if getattr(args, "no_daemon", False) or os.environ.get("MGR_AGENT_NO_DAEMON") == "1":
        return None
    from mgr_agent.layout import Layout  # noqa: PLC0415

    layout = Layout.at(getattr(args, "root", "/"))
    if not os.path.exists(layout.socket_path):  # no daemon: not even the socket module
        return None
    from mgr_agent import client, commands  # noqa: PLC0415

    fd = commands.open_sent(sent)
    try:
        return client.Client(layout.socket_path).call(command.name, commands.request_of(command, values),
                                                      root=layout.root, fd=fd, progress=term.progress)
    except client.Unavailable:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _journal(result: Result, command: str, ctx: Context) -> None:
    """An in-process change goes to the journal and the metrics textfile, as in the daemon."""
    from mgr_agent import journald, metrics  # noqa: PLC0415

    journald.note_cli_result(result, command)
    if result.tx is not None or result.action == "recovered":
        engine = ctx.engine()
        metrics.after_transaction(engine.layout, engine.config)


def _emit(command: Command, result: Result, args: argparse.Namespace,
          term: _Terminal | None = None) -> int:
    """Print ``result`` as JSON or text; its exit code."""
    as_json: bool = getattr(args, "json", False)
    term = term or _Terminal(sys.stderr, enabled=not as_json)
    if as_json:
        import json  # noqa: PLC0415

        doc = result.to_json()
        if command.json_data and result.error is None:
            doc.setdefault("data", result.data)
        # dumps, not dump: one call of the C encoder instead of a write per token
        sys.stdout.write(json.dumps(doc, indent=None, sort_keys=False, default=str) + "\n")
    else:
        from mgr_agent import commands  # noqa: PLC0415

        text = commands.render_text(command, result, term.paint)
        if text:
            print(text, file=sys.stdout if result.error is None or result.action == "verified"
                  else sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
