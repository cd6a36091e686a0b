"""``python -m tests.bench.agent_rss ARGS``: ``python -m mgr_agent ARGS``, and the peak RSS
of the agent process alone.

Runs mgr-agent's CLI ``main`` in this process (the same code ``python -m mgr_agent`` runs;
this module adds one small import), and when it returns or raises, writes
the process's peak resident set (``VmHWM`` of ``/proc/self/status``, KiB) to the file
named by ``$BENCH_AGENT_RSS``.  Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries
the peak RSS of the image a process replaced with ``execve`` into it, so a command
started by a bench process of 100 MB reports at least 100 MB whatever it uses itself;
``VmHWM`` belongs to the memory map the agent runs in, made new at ``execve``: this
process with all its threads, and not its children (the hooks the agent runs, PHP and
shell, which ``wait4``'s ``ru_maxrss`` of the whole command includes, along with the
bench's own size at the fork).  The variable is
removed from the environment before the agent starts, so the hooks do not inherit it.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

ENV = "BENCH_AGENT_RSS"


def peak_kib() -> int:
    """This process's peak RSS in KiB: ``VmHWM``, or ``ru_maxrss`` where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    dest = os.environ.pop(ENV, None)
    from mgr_agent.cli import main as agent_main  # noqa: PLC0415 - after the variable is gone

    try:
        return agent_main(sys.argv[1:] if argv is None else argv)
    finally:
        if dest:
            Path(dest).write_text(f"{peak_kib()}\n")


if __name__ == "__main__":
    raise SystemExit(main())
