"""A small stand-in for ispmanager's ``core`` and ``mgrctl``, and for Plesk's
``extension`` utility, for tests and the demo.

``install_standin(layout)`` writes ``MGR/bin/core`` and ``MGR/sbin/mgrctl``;
``install_plesk_standin(psa)`` writes ``PSA/bin/extension``.  What the stand-ins model
of the real panels, and what they do not: docs/standin.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mgr_agent
from mgr_agent.fsutil import atomic_write
from mgr_agent.layout import Layout

# The scripts are Python run directly by their ``#!`` line, so that the kernel names the
# process after the script (``/proc/PID/comm`` = ``core``) and its argv holds the script's
# absolute path under MGR; that is how the agent tells this core from any other ``core``.
SCRIPT = '''#!{python}
# {panel} stand-in {what} written by mgr-agent (see docs/standin.md); not the real panel.
import os
import sys

HERE = os.path.abspath(__file__)
if sys.argv[0] != HERE:
    # started by a relative path: run again by the absolute one, so that argv names MGR
    os.execv(HERE, [HERE, *sys.argv[1:]])
sys.path.insert(0, {agent!r})
from mgr_agent.sandbox.standin.{module} import main

sys.exit(main(sys.argv[1:], mgr=os.path.dirname(os.path.dirname(HERE))))
'''
SH_SCRIPT = '''#!/bin/sh
# {panel} stand-in {what} written by mgr-agent (see docs/standin.md); not the real panel.
HERE=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
MGR=$(dirname "$(dirname "$HERE")")
PYTHONPATH={agent_sh} exec {python_sh} -m mgr_agent.sandbox.standin.{module} --mgr "$MGR/" "$@"
'''


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def script(what: str, module: str, python: str = sys.executable, panel: str = "ispmanager") -> bytes:
    """The text of ``bin/core``, ``sbin/mgrctl`` or Plesk's ``bin/extension``."""
    agent = str(Path(mgr_agent.__file__).absolute().parent.parent)
    if python.startswith("/") and not any(c.isspace() for c in python) and len(python) < 200:
        return SCRIPT.format(python=python, what=what, agent=agent, module=module,
                             panel=panel).encode()
    # A path a #! line cannot hold: a shell wrapper.  The process is then named by the
    # core itself (prctl PR_SET_NAME), and its argv holds "MGR/" (a path under MGR, for
    # matchers that look for one) through --mgr.
    return SH_SCRIPT.format(what=what, agent_sh=_quote(agent), python_sh=_quote(python),
                            module=module, panel=panel).encode()


def install_standin(layout: Layout, *, python: str = sys.executable) -> list[Path]:
    """Write executable ``MGR/bin/core`` and ``MGR/sbin/mgrctl``; returns their paths."""
    written = []
    for rel, what, module in (("bin/core", "core", "core"), ("sbin/mgrctl", "mgrctl", "mgrctl")):
        path = layout.mgr / rel
        atomic_write(path, script(what, module, python), 0o755)
        written.append(path)
    for rel in ("etc/xml", "addon", "var/run"):
        (layout.mgr / rel).mkdir(parents=True, exist_ok=True)
    return written


def install_plesk_standin(psa: Path, *, python: str = sys.executable) -> Path:
    """Write executable ``PSA/bin/extension`` (Plesk's extension utility, its registry
    part) and ``PSA/var``; returns the script's path."""
    path = psa / "bin/extension"
    atomic_write(path, script("extension", "plesk_extension", python, panel="Plesk"), 0o755)
    (psa / "var").mkdir(parents=True, exist_ok=True)
    return path
