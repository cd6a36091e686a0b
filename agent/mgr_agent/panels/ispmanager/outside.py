"""Starting a panel's long-lived processes outside the agent's own service.

Under systemd, anything the daemon starts as its child lives in ``mgr-agent.service``'s
cgroup and sandbox: a read-only ``/``, ``NoNewPrivileges``, and death whenever the agent
restarts.  A panel core must never live there, so its start command is handed to the
service manager: the panel's own unit when it has one (``[panel] core_unit``), else a
transient unit made with ``systemd-run --collect`` (never ``--scope``, which would stay
in our cgroup).  Without systemd (a container without it, a ``--root`` tree in tests)
the command runs directly, as an admin's shell would.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mgr_agent.proc import SAFE_PATH

UNIT_PREFIX = "mgr-agent-panel"
# auto: systemd-run when systemd runs the machine and we manage "/"; direct: never
MODE_ENV = "MGR_AGENT_CORE_START"


def systemd_runs(root: Path) -> bool:
    """True when a panel process started for ``root`` should go through systemd."""
    mode = os.environ.get(MODE_ENV, "auto")
    if mode == "direct":
        return False
    booted = Path("/run/systemd/system").is_dir() and os.geteuid() == 0
    tool = shutil.which("systemd-run", path=SAFE_PATH) is not None
    if mode == "systemd-run":
        return tool
    return booted and tool and root == Path("/")


def unit_name(what: str) -> str:
    """A fresh unit name (one per start: a unit still winding down never clashes)."""
    return f"{UNIT_PREFIX}-{what}-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def transient(argv: list[str], *, unit: str, description: str, timeout: float) -> list[str]:
    """``argv`` run as a transient service that outlives us.

    ``Type=forking``: the start is done when ``argv`` exits (mgrctl returns once the core
    is ready), and whatever it left running is the unit's; the unit goes away with its
    last process (``--collect`` also after a failure)."""
    return ["systemd-run", f"--unit={unit}", "--collect", "--quiet", "--service-type=forking",
            f"--description={description}", f"--property=TimeoutStartSec={max(1, round(timeout))}",
            "--", *argv]


def start_unit(unit: str) -> list[str]:
    """The panel's own unit, started (a no-op when it already runs)."""
    return ["systemctl", "start", "--", unit]
