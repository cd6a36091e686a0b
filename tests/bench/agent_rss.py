"""``python -m tests.bench.agent_rss ARGS``: ``python -m mgr_agent ARGS``, and the peak RSS
of the agent process alone.

Runs mgr-agent's CLI ``main`` in this process (the same code ``python -m mgr_agent`` runs;
this module adds one small import), and when it returns or raises, writes
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB) to the file named by
``$BENCH_AGENT_RSS``.  ``RUSAGE_SELF`` is this process with all its threads, and not its
children: the hooks the agent runs (PHP, shell), which ``wait4``'s ``ru_maxrss`` of the
whole command would include when one of them is larger, are left out.  The variable is
removed from the environment before the agent starts, so the hooks do not inherit it.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

ENV = "BENCH_AGENT_RSS"


def main(argv: list[str] | None = None) -> int:
    dest = os.environ.pop(ENV, None)
    from mgr_agent.cli import main as agent_main  # noqa: PLC0415 - after the variable is gone

    try:
        return agent_main(sys.argv[1:] if argv is None else argv)
    finally:
        if dest:
            Path(dest).write_text(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\n")


if __name__ == "__main__":
    raise SystemExit(main())
