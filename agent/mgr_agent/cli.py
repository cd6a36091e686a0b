"""``mgr-agent``: argument parsing, rendering and exit codes; no business logic."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mgr_agent import __version__, signals
from mgr_agent.aps import command as aps_command
from mgr_agent.errors import AgentError, Interrupted, NotAuthorised, UsageError
from mgr_agent.layout import Layout
from mgr_agent.result import Result

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mgr_agent.engine import Engine
    from mgr_agent.panels.base import LogRecord

log = logging.getLogger("mgr_agent")

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


def _sha256(text: str) -> str:
    """``--sha256``: exactly 64 hexadecimal digits."""
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256: expected 64 hexadecimal digits")
    return text


def _positive(text: str) -> int:
    """A count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count (1 or more)")
    return value


def _seconds(text: str) -> float:
    """A duration: seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 or more seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    # Each command is offered only the options that apply to it; the program accepts
    # them all before the command (``mgr-agent --no-daemon --json list``).
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--root", default=argparse.SUPPRESS, metavar="DIR",
                      help="root prefix: an existing directory (default /)")
    base.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                      help="debug logging on stderr, with tracebacks")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout")
    locking = argparse.ArgumentParser(add_help=False)
    locking.add_argument("--wait", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                         help="how long to wait for the lock (default 300, from agent.toml)")
    in_process = argparse.ArgumentParser(add_help=False)
    in_process.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS,
                            help="run in this process even when the daemon answers (also: "
                                 "MGR_AGENT_NO_DAEMON=1)")
    common = [base, output, locking, in_process]

    parser = argparse.ArgumentParser(
        prog="mgr-agent", parents=common,
        description="Install, upgrade, roll back and remove ispmanager 6 plugins and Plesk "
                    "extensions, transactionally.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mgr-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        """A command that reads (no lock, never through the daemon)."""
        return sub.add_parser(name, parents=[base, output], help=help_, description=help_)

    def rcmd(name: str, help_: str) -> argparse.ArgumentParser:
        """A command that reads the state: in-process for root, through the daemon for others
        (the state is root:mgr-agent 0750)."""
        return sub.add_parser(name, parents=[base, output, in_process], help=help_, description=help_)

    def dcmd(name: str, help_: str) -> argparse.ArgumentParser:
        """A command that changes something: takes the lock, runs in the daemon if it answers."""
        return sub.add_parser(name, parents=common, help=help_, description=help_)

    panel_opt = {"choices": ["ispmanager", "plesk"], "help": "panel (default: detected from content)"}
    installed_panel = {"choices": ["ispmanager", "plesk"],
                       "help": "the panel NAME is installed for (needed only when it is installed "
                               "for both)"}
    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--no-restart", action="store_true",
                         help="do not restart the panel core or watch its health afterwards")
    runtime.add_argument("--health-window", type=_seconds, metavar="SECONDS", default=None,
                         help="how long to watch the panel after the restart (default 10)")

    def mcmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[*common, runtime], help=help_, description=help_)

    p = mcmd("install", "install or upgrade a plugin from a zip, tar or directory, or an "
                        "https:// URL (with --sha256)")
    p.add_argument("path", help="a file, a directory or an https:// URL")
    p.add_argument("--panel", **panel_opt)  # type: ignore[arg-type]
    p.add_argument("--sha256", metavar="HEX", type=_sha256,
                   help="refuse the archive unless its sha256 matches (required for a URL)")
    p.add_argument("--dry-run", action="store_true", help="report the plan, change nothing")
    p.add_argument("--allow-downgrade", action="store_true", help="allow installing an older version")
    p.add_argument("--reinstall", action="store_true", help="rewrite every file even if unchanged")
    p.add_argument("--strict", action="store_true", help="refuse on check warnings too (docs/check.md)")

    p = mcmd("uninstall", "remove an installed plugin")
    p.add_argument("name", help="the installed plugin or extension (see list)")
    p.add_argument("--panel", **installed_panel)  # type: ignore[arg-type]
    p.add_argument("--purge", action="store_true", help="also remove data (Plesk var/modules/ID)")
    p.add_argument("--dry-run", action="store_true", help="report the plan, change nothing")
    p.add_argument("--force", action="store_true",
                   help="go on when the pre-uninstall hook fails or hangs (its output becomes a "
                        "warning); safety rules and the lock still apply")

    p = mcmd("rollback", "go back to the version kept from before the last upgrade")
    p.add_argument("name", help="the installed plugin or extension (see list)")
    p.add_argument("--panel", **installed_panel)  # type: ignore[arg-type]

    rcmd("list", "list installed plugins")
    p = rcmd("info", "show an installed plugin and its files")
    p.add_argument("name", help="the installed plugin or extension (see list)")
    p.add_argument("--panel", **installed_panel)  # type: ignore[arg-type]
    p = rcmd("verify", "check installed files against their manifest (modified, missing, mode)")
    p.add_argument("name", nargs="?", help="one plugin (default: every installed plugin)")
    p.add_argument("--panel", **installed_panel)  # type: ignore[arg-type]
    p = rcmd("history", "show past transactions")
    p.add_argument("name", nargs="?", help="only this plugin's transactions")
    p.add_argument("-n", "--limit", type=_positive, default=50, metavar="N",
                   help="the last N transactions (default 50)")
    p = cmd("check", "validate a package without installing it")
    p.add_argument("path", type=Path, help="a zip, a tar or a directory")
    p.add_argument("--panel", **panel_opt)  # type: ignore[arg-type]
    p.add_argument("--sha256", metavar="HEX", type=_sha256,
                   help="refuse the archive unless its sha256 matches")
    p.add_argument("--strict", action="store_true", help="warnings count as errors (exit 3)")
    p = cmd("new", "create a plugin skeleton that passes check --strict (runs locally)")
    p.add_argument("name", help="Plesk extension id (my-tool) or ispmanager plugin name (mytool)")
    p.add_argument("--panel", choices=["ispmanager", "plesk"], help="the panel it is for (required)")
    p.add_argument("--dir", type=Path, metavar="DIR", help="where to create it (default ./NAME)")
    p = cmd("pack", "build a reproducible zip from a source tree, after check (runs locally)")
    p.add_argument("dir", type=Path, metavar="DIR", help="the source tree (a repository works too)")
    p.add_argument("-d", "--dest", type=Path, metavar="DEST", help="where to write the zip (default .)")
    p.add_argument("--panel", **panel_opt)  # type: ignore[arg-type]
    p.add_argument("--strict", action="store_true", help="refuse on check warnings too")
    dcmd("recover", "finish or undo an interrupted transaction")
    p = cmd("logs", "show and follow the panel log (var/ispmgr.log)")
    p.add_argument("-n", "--lines", dest="n", type=_positive, default=None, metavar="N",
                   help="the last N records (default 10; no limit with --since)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    p.add_argument("--plugin", metavar="NAME", help="only records naming the plugin's handlers/funcs")
    p.add_argument("--level", metavar="LEVEL", help="only records at this level or above (e.g. ERR)")
    p.add_argument("--since", metavar="TIME", help="e.g. 15m, 2h, 10:00, 2026-11-21 10:00")
    p = cmd("call", "run the handlers bound to FUNC like the panel does and check their answers")
    p.add_argument("func", help="the function, e.g. demo.settings")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a request parameter (PARAM_KEY for the handler); repeat for more")
    p.add_argument("--user", default="root", help="the panel user making the request (default root)")
    p.add_argument("--lang", choices=["ru", "en"], default="en",
                   help="the interface language of the request (default en)")
    p.add_argument("--input", type=Path, metavar="FILE", help="the <doc> the first handler reads")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="how long each handler may run (default 60)")
    dcmd("restart-core", "restart the ispmanager core of this root (never another program's core)")
    p = dcmd("debug", "set a log level in ispmanager's etc/debug.conf and restart the core")
    p.add_argument("module", nargs="?", help="e.g. core_module (means ispmgr.core_module)")
    p.add_argument("level", nargs="?", type=int, help="0-9; 9 logs handler requests and answers")
    p.add_argument("--off", action="store_true", help="put back the lines that were there before")
    aps_command.add_parser(sub, argparse.ArgumentParser(add_help=False, parents=common), runtime)
    p = cmd("metrics", "print Prometheus metrics of this server (installed plugins, transactions, "
                       "rollbacks), or write them for node_exporter's textfile collector")
    p.add_argument("--textfile", type=Path, metavar="PATH",
                   help="write atomically to PATH (e.g. /var/lib/prometheus/node-exporter/mgr_agent.prom)")
    about = "run the daemon (systemd service): recovery at start, then the local API"
    p = sub.add_parser("daemon", parents=[base], help=about, description=about)
    p.add_argument("--socket", type=Path, metavar="PATH",
                   help="bind here when not socket-activated (default ROOT/run/mgr-agent/agent.sock)")
    p.add_argument("--group", default="mgr-agent",
                   help="group (name or gid) whose members may use the API (default mgr-agent)")
    return parser


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


def _render(result: Result, term: _Terminal) -> str:
    if result.action.startswith("aps-"):
        return aps_command.render(result, term.paint)
    lines: list[str] = []
    who = f"{result.name} ({result.panel})" if result.name else ""
    if result.action in ("listed",):
        rows = result.data or []
        if not rows:
            return "no plugins installed"
        width = max(len(r["name"]) for r in rows)
        return "\n".join(f"{r['name']:<{width}}  {r['panel']:<10}  {r['version']:<16}  {r['files']} files"
                         for r in rows)
    if result.action == "history":
        return "\n".join(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(h['started']))}  {h['tx']}  "
            f"{h['op']:<9}  {h['name'] or '-':<20}  {h['from_version'] or '-'} -> "
            f"{h['to_version'] or '-'}  {h['status']}" for h in result.data or []) or "no history"
    if result.action == "info":
        d = result.data
        lines.append(f"{who} {result.version}")
        lines.append(f"  installed {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['installed_at']))}"
                     f" by transaction {d['tx']}")
        kept = [f"{k['version']}-{k['release']}" if k["release"] else k["version"] for k in d["kept"]]
        lines.append(f"  {len(d['files'])} files; kept for rollback: " + (", ".join(kept) or "none"))
        lines += [f"  {f['mode']} {f['path']}" + (" (data)" if f["kind"] == "data" else "")
                  + "".join(f" ({flag})" for flag in f.get("flags", [])) for f in d["files"]]
        lines += [f"  replaces panel file {p} (original kept)" for p in d["diversions"]]
        return "\n".join(lines)
    if result.action == "verified":
        d = result.data
        lines += [f"{','.join(f['flags']):<9} {f['name']}  {f['path']}" for f in d["files"]]
        if not d["files"]:
            lines.append(term.paint("ok", "32") + f": {d['checked']} file(s) of {d['packages']} "
                         "plugin(s) are as installed")
    elif result.action == "checked":
        lines += [term.paint("error", "31;1") + f["text"] for f in _error_findings(result)]
        if result.error is None:
            lines.append(term.paint("ok", "32") + f": {who} {result.version}, {result.data['files']} "
                         f"files, hooks: {', '.join(result.data['hooks']) or 'none'}")
    elif result.action == "recovered":
        txs = result.data["transactions"]
        lines.append("nothing to recover" if not txs else "\n".join(
            f"transaction {t['tx']} ({t.get('op', '?')} {t.get('name') or ''}): {t['outcome']}"
            + (f"; found {t['found']}" if t.get("found") else "") for t in txs))
    elif result.action in ("restarted", "debug"):
        lines.append(result.action if result.changed else "nothing to change")
    elif result.error is None:
        verb = {"installed": "installed", "upgraded": "upgraded", "unchanged": "unchanged:",
                "removed": "removed", "rolled_back": "rolled back", "planned": "would change"}
        text = f"{verb.get(result.action, result.action)} {who}"
        if result.action in ("upgraded", "rolled_back") or (
                result.action == "planned" and result.previous_version):
            text += f" {result.previous_version} -> {result.version or 'nothing'}"
        elif result.version:
            text += f" {result.version}"
        lines.append(term.paint(text, "32"))
        if result.plan:
            s = result.plan["summary"]
            lines.append(f"  files: {s['add']} added, {s['replace']} replaced, {s['remove']} removed, "
                         f"{s['unchanged']} unchanged, {s['kept']} data kept")
    for hook in result.hooks:
        out = hook["output"].rstrip().strip("\n")  # keeps each line's own indentation
        lines.append(f"  hook {hook['hook']}: exit {hook['exit_code']}")
        lines += [f"    {line}".rstrip() for line in out.splitlines()]
    for note in result.notes:
        lines.append(f"  {note}")
    for warning in result.warnings:
        lines.append(term.paint("warning: ", "33") + warning)
    if result.error is not None:
        head = "rolled back" if result.action == "rolled_back" else "error"
        lines.append(term.paint(f"{head}: ", "31;1") + result.error.message)
        if result.error.hint:
            lines.append(f"  hint: {result.error.hint}")
    return "\n".join(lines)


def _error_findings(result: Result) -> list[dict[str, str]]:
    """A check's error findings as ``{"text": "[code] file:line: message (fix: …)"}``."""
    from mgr_agent.findings import Finding  # noqa: PLC0415

    found = (result.data or {}).get("findings") or []
    return [{"text": Finding(**f).text().removeprefix("error")} for f in found
            if f["severity"] == "error"]


def _dispatch(args: argparse.Namespace, engine: Engine) -> Result:
    c = args.command
    if c == "install":
        return _install(args, engine)
    if c == "uninstall":
        return engine.uninstall(args.name, panel=args.panel, purge=args.purge, dry_run=args.dry_run,
                                force=args.force)
    if c == "rollback":
        return engine.rollback(args.name, panel=args.panel)
    if c == "list":
        return engine.list()
    if c == "info":
        return engine.info(args.name, panel=args.panel)
    if c == "history":
        return engine.history(args.name, args.limit)
    if c == "verify":
        return engine.verify(args.name, panel=args.panel)
    if c == "restart-core":
        return engine.restart_core()
    if c == "debug":
        if not args.off and (args.module is None or args.level is None):
            raise UsageError("debug: give MODULE LEVEL, or --off")
        return engine.debug(args.module, args.level, off=args.off)
    if c == "new":
        from mgr_agent import scaffold  # noqa: PLC0415

        return scaffold.create(args.name, args.panel, args.dir)
    if c == "pack":
        from mgr_agent import pack  # noqa: PLC0415

        return pack.pack(args.dir, args.dest, engine, panel=args.panel, strict=args.strict)
    if c == "check":
        return engine.check(args.path, panel=args.panel, sha256=args.sha256, strict=args.strict)
    if c == "aps":
        return aps_command.dispatch(args, engine)
    return engine.recover()


# ---------------------------------------------------------------- the daemon and downloads
_DAEMON_COMMANDS = ("install", "uninstall", "rollback", "recover", "restart-core", "debug")
# read through the daemon by anyone but root: the state is root:mgr-agent 0750
_DAEMON_READS = ("list", "info", "history", "verify")


def _daemon(args: argparse.Namespace) -> int:
    from mgr_agent import daemon  # noqa: PLC0415

    return daemon.main(getattr(args, "root", "/"), socket_path=args.socket, group=args.group,
                       verbose=getattr(args, "verbose", 0))


def _package_arg(args: argparse.Namespace) -> str:
    """An install source: a URL as given, a path made absolute (same messages either way)."""
    from mgr_agent.download import is_url  # noqa: PLC0415

    return str(args.path) if is_url(str(args.path)) else str(Path(args.path).absolute())


def _install(args: argparse.Namespace, engine: Engine) -> Result:
    """In-process install, from a path or (downloaded first) from an https URL."""
    from mgr_agent import download  # noqa: PLC0415

    source = _package_arg(args)
    opts = {"panel": args.panel, "sha256": args.sha256, "dry_run": args.dry_run,
            "allow_downgrade": args.allow_downgrade, "reinstall": args.reinstall, "strict": args.strict}
    if not download.is_url(source):
        return engine.install(Path(source), **opts)
    policy = download.Policy(max_bytes=engine.config.limits.max_total_bytes)
    fetched = download.fetch(source, args.sha256, engine.layout, policy=policy, progress=engine.progress)
    try:
        return engine.install(fetched, **opts)
    finally:
        download.discard(fetched)


def _daemon_request(args: argparse.Namespace) -> tuple[dict[str, object], int | None]:
    """The API arguments of a mutating command, and the package file to pass along."""
    from mgr_agent.download import is_url  # noqa: PLC0415

    c = args.command

    def get(key: str) -> Any:
        return getattr(args, key, None)

    if c in _DAEMON_READS:
        reads = {"name": get("name"), "panel": get("panel"), "limit": get("limit")}
        return {k: v for k, v in reads.items() if v is not None}, None
    req: dict[str, object] = {"wait": get("wait")}
    if c in ("install", "uninstall", "rollback", "debug"):
        req.update(restart=not get("no_restart"), health_window=get("health_window"))
    fd = None
    if c == "install":
        source = _package_arg(args)
        req.update({"url" if is_url(source) else "path": source}, sha256=get("sha256"),
                   panel=get("panel"), dry_run=get("dry_run"), allow_downgrade=get("allow_downgrade"),
                   reinstall=get("reinstall"), strict=get("strict") or None)
        if not is_url(source):
            with contextlib.suppress(OSError):
                fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    elif c in ("uninstall", "rollback"):
        req.update(name=args.name, panel=get("panel"))
        if c == "uninstall":
            req.update(purge=get("purge"), dry_run=get("dry_run"), force=get("force"))
    elif c == "debug":
        req.update(module=get("module"), level=get("level"), off=get("off"))
    return {k: v for k, v in req.items() if v is not None}, fd


def _via_daemon(args: argparse.Namespace, term: _Terminal) -> Result | None:
    """Run a mutating command in the daemon when its socket answers; None: do it here."""
    if getattr(args, "no_daemon", False) or os.environ.get("MGR_AGENT_NO_DAEMON") == "1":
        return None
    from mgr_agent import api  # noqa: PLC0415

    layout = Layout.at(getattr(args, "root", "/"))
    request, fd = _daemon_request(args)
    try:
        return api.Client(layout.socket_path).call(args.command, request, root=layout.root, fd=fd,
                                                   progress=term.progress)
    except api.Unavailable:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _journal(result: Result, command: str, engine: Engine) -> None:
    if command in _DAEMON_COMMANDS:
        from mgr_agent import journald, metrics  # noqa: PLC0415

        journald.note_cli_result(result, command)
        if result.tx is not None or result.action == "recovered":
            metrics.after_transaction(engine.layout, engine.config)


def _metrics(args: argparse.Namespace) -> int:
    """``metrics``: the text format on stdout, or written to --textfile."""
    from mgr_agent import metrics  # noqa: PLC0415

    layout = Layout.at(getattr(args, "root", "/"))
    try:
        if args.textfile is not None:
            metrics.write_textfile(layout, args.textfile.absolute())
        else:
            sys.stdout.buffer.write(metrics.render(layout))
    except AgentError as exc:
        result = Result(action="failed", error=exc)
        if getattr(args, "json", False):
            print(json.dumps(result.to_json()))
        else:
            print(_render(result, _Terminal(sys.stderr, enabled=False)), file=sys.stderr)
        return result.exit_code
    return 0


def _streaming(args: argparse.Namespace, as_json: bool) -> int:
    """``logs`` and ``call`` print as they go instead of returning one result."""
    from mgr_agent.engine import Engine  # noqa: PLC0415 - keeps the other commands' start fast
    from mgr_agent.panels.base import LogQuery  # noqa: PLC0415

    layout = Layout.at(getattr(args, "root", "/"))
    try:
        if args.command == "call":
            params = {}
            for item in args.param:
                key, sep, value = item.partition("=")
                if not sep:
                    raise UsageError(f"--param {item!r}: expected KEY=VALUE")
                params[key] = value
            answer = Engine(layout).call(args.func, params, user=args.user, lang=args.lang,
                                         input_path=args.input, timeout=args.timeout)
            print(json.dumps(answer.to_json()) if as_json else answer.text())
            return answer.exit_code
        query = LogQuery(n=args.n, follow=args.follow, level=args.level, since=args.since)
        return _print_records(Engine(layout).logs(query, args.plugin), as_json, args.follow)
    except AgentError as exc:
        result = Result(action="failed", name=getattr(args, "plugin", None), error=exc)
        if as_json:
            print(json.dumps(result.to_json()))
        else:
            print(_render(result, _Terminal(sys.stderr, enabled=False)), file=sys.stderr)
        return result.exit_code


def _print_records(records: Iterator[LogRecord], as_json: bool, follow: bool) -> int:
    """Log records one a line, as text (coloured on a terminal) or JSON; flushed one by one
    when following. Ctrl-C ends a follow quietly; a closed pipe (``| head``) too."""
    colour = not as_json and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    try:
        for rec in records:
            sys.stdout.write((json.dumps(rec.to_json(), ensure_ascii=False) if as_json
                              else rec.text(colour)) + "\n")
            if follow:
                sys.stdout.flush()
        sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        return _closed_pipe()
    return 0


def _unexpected(exc: Exception, command: str) -> AgentError:
    """An exception that is not an AgentError: a non-root user denied the state (it is
    root:mgr-agent 0750) is told so; anything else is an internal error."""
    if isinstance(exc, PermissionError) and os.geteuid() != 0:
        log.debug("permission denied", exc_info=True)
        return NotAuthorised(
            f"{exc.filename or command}: permission denied: mgr-agent {command} needs root or "
            "the mgr-agent group",
            hint="run it as root, or as a member of the mgr-agent group while the daemon runs "
                 "(without --no-daemon)")
    log.debug("internal error", exc_info=True)
    return AgentError(f"internal error in {command}: {exc.__class__.__name__}: {exc}",
                      hint="run again with -v and report the traceback")


def _root_problem(args: argparse.Namespace) -> UsageError | None:
    """``--root`` must name an existing directory: nothing is created in the wrong place."""
    root = getattr(args, "root", None)
    if root is None or os.path.isdir(root):
        return None
    what = "not a directory" if os.path.lexists(root) else "no such directory"
    return UsageError(f"--root {root}: {what}",
                      hint="give the root prefix of an existing tree (the default is /)", path=root)


def _closed_pipe() -> int:
    """The reader went away (``| head``): stop quietly, as other Unix tools do."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        problem = _root_problem(args)
        if problem is not None and args.command == "daemon":
            print(f"error: {problem.message}", file=sys.stderr)
            return problem.exit_code
        if args.command == "daemon":
            return _daemon(args)
        code = _run(args) if problem is None else _emit(Result(action="failed", error=problem), args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()


def _run(args: argparse.Namespace) -> int:
    as_json: bool = getattr(args, "json", False)
    verbose = getattr(args, "verbose", 0)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    term = _Terminal(sys.stderr, enabled=not as_json)
    signals.install_handlers()
    from mgr_agent.engine import Engine  # noqa: PLC0415 - deferred: keeps --help fast

    command = args.command
    if command in ("logs", "call"):
        return _streaming(args, as_json)
    if command == "metrics":
        return _metrics(args)
    try:
        through = command in _DAEMON_COMMANDS or (command in _DAEMON_READS and os.geteuid() != 0)
        result = _via_daemon(args, term) if through else None
        if result is None:
            engine = Engine(Layout.at(getattr(args, "root", "/")), progress=term.progress,
                            lock_wait=getattr(args, "wait", None),
                            restart=not getattr(args, "no_restart", False),
                            health_window=getattr(args, "health_window", None))
            result = _dispatch(args, engine)
            _journal(result, command, engine)
    except AgentError as exc:
        log.debug("error", exc_info=True)
        name, panel = exc.subject or (getattr(args, "name", None), getattr(args, "panel", None))
        result = Result(action="failed", name=name, panel=panel, error=exc)
    except KeyboardInterrupt:
        result = Result(action="failed", error=Interrupted("interrupted by SIGINT"))
    except Exception as exc:
        result = Result(action="failed", name=getattr(args, "name", None), error=_unexpected(exc, command))
    return _emit(result, args, term)


def _emit(result: Result, args: argparse.Namespace, term: _Terminal | None = None) -> int:
    """Print ``result`` as JSON or text; its exit code."""
    as_json: bool = getattr(args, "json", False)
    command = args.command
    term = term or _Terminal(sys.stderr, enabled=not as_json)
    if as_json:
        doc = result.to_json()
        if command in ("list", "history", "info", "check", "recover", "verify") and result.error is None:
            doc.setdefault("data", result.data)
        json.dump(doc, sys.stdout, indent=None, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        text = _render(result, term)
        if text:
            print(text, file=sys.stdout if result.error is None or result.action == "verified"
                  else sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
