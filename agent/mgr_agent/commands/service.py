"""The agent as a service: the daemon itself, and its Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

from mgr_agent.commands import render
from mgr_agent.commands.spec import Arg, Args, Command, Context


def _metrics(ctx: Context, args: Args) -> int:
    """The text format on ``ctx.out``, or written atomically to ``--textfile``."""
    from mgr_agent import metrics  # noqa: PLC0415

    textfile = args.path("textfile")
    if textfile is not None:
        metrics.write_textfile(ctx.layout, textfile.absolute())
    else:
        ctx.out.flush()
        ctx.out.buffer.write(metrics.render(ctx.layout))
    return 0


METRICS = Command(
    "metrics", "print Prometheus metrics of this server (installed plugins, transactions, "
               "rollbacks), or write them for node_exporter's textfile collector",
    args=(Arg("textfile", "write atomically to PATH (e.g. "
                          "/var/lib/prometheus/node-exporter/mgr_agent.prom)", ("--textfile",),
              type=Path, metavar="PATH"),),
    stream=_metrics, render=render.failure_only)


def _daemon(ctx: Context, args: Args) -> int:
    from mgr_agent import daemon  # noqa: PLC0415

    return daemon.main(ctx.layout.root, socket_path=args.path("socket"),
                       group=args.text("group") or daemon.GROUP, verbose=ctx.verbose)


DAEMON = Command(
    "daemon", "run the daemon (systemd service): recovery at start, then the local API",
    args=(Arg("socket", "bind here when not socket-activated (default "
                        "ROOT/run/mgr-agent/agent.sock)", ("--socket",), type=Path, metavar="PATH"),
          Arg("group", "group (name or gid) whose members may use the API (default mgr-agent)",
              ("--group",), default="mgr-agent")),
    stream=_daemon, render=render.failure_only, options="root")
