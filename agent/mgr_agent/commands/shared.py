"""Arguments several commands declare alike."""

from __future__ import annotations

from mgr_agent.commands.spec import BOOL, NUM, STR, Arg, seconds

PANELS = ("ispmanager", "plesk")

NAME = Arg("name", "the installed plugin or extension (see list)", api=STR, required=True)
PANEL_DETECTED = Arg("panel", "panel (default: detected from content)", ("--panel",), api=STR,
                     choices=PANELS)
PANEL_INSTALLED = Arg("panel", "the panel NAME is installed for (needed only when it is installed "
                               "for both)", ("--panel",), api=STR, choices=PANELS)
DRY_RUN = Arg("dry_run", "report the plan, change nothing", ("--dry-run",), api=BOOL,
              action="store_true")

# every change: how long to wait for the lock (``--wait`` is a global option of the parser)
WAIT = Arg("wait", api=NUM, cli=False)
# the panel restart after a change, and the health window that watches it
RESTART = Arg("restart", "do not restart the panel core or watch its health afterwards",
              ("--no-restart",), api=BOOL, invert=True)
HEALTH_WINDOW = Arg("health_window", "how long to watch the panel after the restart (default 10)",
                    ("--health-window",), api=NUM, type=seconds, metavar="SECONDS")
RUNTIME = (RESTART, HEALTH_WINDOW)
