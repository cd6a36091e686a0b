"""The panel's runtime: restart its core, its debug levels, its log, a handler call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent.commands import render
from mgr_agent.commands.shared import RUNTIME, WAIT
from mgr_agent.commands.spec import (
    BOOL,
    INT,
    STR,
    Arg,
    Args,
    Command,
    Context,
    Paint,
    positive,
    seconds,
)
from mgr_agent.errors import UsageError

if TYPE_CHECKING:
    from mgr_agent.result import Result


def _render_runtime(result: Result, paint: Paint) -> str:
    if result.action not in ("restarted", "debug"):
        return render.change(result, paint)
    return render.tail(result, paint, [result.action if result.changed else "nothing to change"])


RESTART_CORE = Command(
    "restart-core", "restart the ispmanager core of this root (never another program's core)",
    args=(WAIT,), run=lambda ctx, args: ctx.engine(args).restart_core(), render=_render_runtime,
    route="daemon", mutates=True)


def _debug(ctx: Context, args: Args) -> Result:
    module, level, off = args.text("module"), args.count("level"), args.flag("off")
    if not off and (module is None or level is None):
        raise UsageError("debug: give MODULE LEVEL, or --off")
    return ctx.engine(args).debug(module, level, off=off)


DEBUG = Command(
    "debug", "set a log level in ispmanager's etc/debug.conf and restart the core",
    args=(WAIT, *(Arg(a.name, api=a.api, cli=False, invert=a.invert) for a in RUNTIME),
          Arg("module", "e.g. core_module (means ispmgr.core_module)", api=STR, nargs="?"),
          Arg("level", "0-9; 9 logs handler requests and answers", api=INT, type=int, nargs="?"),
          Arg("off", "put back the lines that were there before", ("--off",), api=BOOL,
              action="store_true")),
    run=_debug, render=_render_runtime, route="daemon", mutates=True)


def _logs(ctx: Context, args: Args) -> int:
    """The panel log's records, each handed to ``ctx.show`` as it comes (the CLI prints it,
    the daemon sends it as a ``record`` event); Ctrl-C ends a follow quietly."""
    from mgr_agent import panels  # noqa: PLC0415

    query = panels.LogQuery(n=args.count("n"), follow=args.flag("follow"),
                            level=args.text("level"), since=args.text("since"))
    plugin = args.text("plugin")
    if plugin:  # the names the log uses for it come from the installed state
        records = ctx.engine().logs(query, plugin, stop=ctx.stop)
    else:  # the log alone, without the engine or the panels: read at start-up cost
        if ctx.layout.config_file.exists():  # refused as the engine would refuse it
            from mgr_agent import config  # noqa: PLC0415

            config.load(ctx.layout)
        records = panels.read_log(ctx.layout, query, stop=ctx.stop)
    try:
        for record in records:
            ctx.show(record)
    except KeyboardInterrupt:
        pass
    return 0


LOGS = Command(
    "logs", "show and follow the panel log (var/ispmgr.log)",
    args=(Arg("n", "the last N records (default 10; no limit with --since)", ("-n", "--lines"),
              api=INT, type=positive, metavar="N"),
          Arg("follow", "keep printing new records", ("-f", "--follow"), api=BOOL,
              action="store_true"),
          Arg("plugin", "only records naming the plugin's handlers/funcs", ("--plugin",), api=STR,
              metavar="NAME"),
          Arg("level", "only records at this level or above (e.g. ERR)", ("--level",), api=STR,
              metavar="LEVEL"),
          Arg("since", "e.g. 15m, 2h, 10:00, 2026-11-21 10:00", ("--since",), api=STR,
              metavar="TIME")),
    stream=_logs, render=render.failure_only, served=True, light=True)


def _call(ctx: Context, args: Args) -> int:
    """The handlers' final answer (pretty XML) or the verdict, as text or one JSON document;
    the exit code of the verdict (13: the answer broke the panel protocol)."""
    params = {}
    for item in args.texts("param"):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param {item!r}: expected KEY=VALUE")
        params[key] = value
    timeout = args.number("timeout")
    answer = ctx.engine().call(args.need("func"), params, user=args.text("user") or "root",
                               lang=args.text("lang") or "en", input_path=args.path("input"),
                               timeout=60.0 if timeout is None else timeout)
    if ctx.as_json:
        import json  # noqa: PLC0415

        print(json.dumps(answer.to_json()), file=ctx.out)
    else:
        print(answer.text(), file=ctx.out)
    return answer.exit_code


CALL = Command(
    "call", "run the handlers bound to FUNC like the panel does and check their answers",
    args=(Arg("func", "the function, e.g. demo.settings"),
          Arg("param", "a request parameter (PARAM_KEY for the handler); repeat for more",
              ("--param",), action="append", metavar="KEY=VALUE"),
          Arg("user", "the panel user making the request (default root)", ("--user",),
              default="root"),
          Arg("lang", "the interface language of the request (default en)", ("--lang",),
              choices=("ru", "en"), default="en"),
          Arg("input", "the <doc> the first handler reads", ("--input",), type=Path,
              metavar="FILE"),
          Arg("timeout", "how long each handler may run (default 60)", ("--timeout",),
              type=seconds, default=60.0, metavar="SECONDS")),
    stream=_call, render=render.failure_only)
