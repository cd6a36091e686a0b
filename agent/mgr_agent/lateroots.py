"""The daemon's sandbox and panels installed after the daemon started.

``mgr-agent.service`` runs with ``ProtectSystem=strict`` and makes the panel trees
writable with ``ReadWritePaths=-/usr/local/mgr5 …``.  A tree missing when the service
started is skipped, and when the panel is installed later its tree stays read-only in the
service's mount namespace.  ``LateRoots`` notices such a tree (it exists now, and its
mount is read-only for us) while the daemon is idle and asks systemd to restart the
service once, which gives the new daemon a namespace with the tree writable.  Whatever
still fails gets the hint of ``HINT``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mgr_agent.layout import Layout
from mgr_agent.proc import Runner

log = logging.getLogger("mgr_agent.daemon")

# the panel trees of units/mgr-agent.service's ReadWritePaths= (Plesk: /opt/psa on Debian)
PANEL_ROOTS = ("usr/local/mgr5", "usr/local/psa", "opt/psa")
HINT = ("mgr-agent.service's sandbox makes only the panel trees that existed when it started "
        "writable: after installing a panel, the daemon restarts itself when idle (run the "
        "command again in a few seconds) or run `systemctl restart mgr-agent`; a path outside "
        "the panel trees needs `systemctl edit mgr-agent` with [Service] ReadWritePaths=PATH")


def read_only(path: Path) -> bool:
    """``path`` lies on a mount that is read-only for this process."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def own_unit(cgroup_file: Path = Path("/proc/self/cgroup")) -> str:
    """The service this process runs in (``mgr-agent.service`` when it cannot tell)."""
    try:
        for line in cgroup_file.read_text().splitlines():
            last = line.rsplit("/", 1)[-1]
            if last.endswith(".service"):
                return last
    except OSError:
        pass
    return "mgr-agent.service"


class LateRoots:
    """Panel trees that were missing when the daemon started."""

    def __init__(self, layout: Layout, *, under_systemd: bool | None = None,
                 unit: str | None = None) -> None:
        self.unit = unit  # the service to restart; None: the one this process runs in
        if under_systemd is None:
            under_systemd = bool(os.environ.get("INVOCATION_ID")) and layout.root == Path("/")
        self.enabled = under_systemd
        self.missing = [layout.under(rel) for rel in PANEL_ROOTS if not layout.under(rel).exists()]
        self.asked = False

    def stuck(self) -> list[Path]:
        """Trees that appeared since the start and are read-only to us."""
        appeared = [p for p in self.missing if p.is_dir()]
        stuck = [p for p in appeared if read_only(p)]
        self.missing = [p for p in self.missing if p not in appeared or p in stuck]
        return stuck

    def poll(self, runner: Runner | None = None) -> bool:
        """Ask systemd to restart this service (once) when a late panel tree is stuck
        read-only; True when the restart was asked for."""
        if not self.enabled or self.asked or not self.missing:
            return False
        stuck = self.stuck()
        if not stuck:
            return False
        self.asked = True
        unit = self.unit or own_unit()
        where = ", ".join(map(str, stuck))
        log.warning(f"{where} appeared after mgr-agent started and is read-only in the service's "
                    f"sandbox; restarting {unit} to make it writable")
        done = (runner or Runner()).run(["systemctl", "restart", "--no-block", unit],
                                        cwd=Path("/"), timeout=30)
        if done.returncode != 0:
            log.error(f"systemctl restart {unit} exited {done.returncode}: {done.output.strip()}; "
                      f"run `systemctl restart {unit}` to make {where} writable")
            return False
        return True
