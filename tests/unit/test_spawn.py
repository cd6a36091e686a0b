"""``Runner.spawn`` starts a detached process (the reclaimer) that a long-lived caller,
the daemon, must not keep as a zombie once it ends."""

from __future__ import annotations

import os
from pathlib import Path

from mgr_agent.proc import Runner
from tests.waits import wait_for


def _state(pid: int) -> str:
    """The process's state letter in /proc (``Z``: a zombie), "" once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def test_a_spawned_process_is_reaped_when_it_ends(tmp_path: Path) -> None:
    done = tmp_path / "done"
    pid = Runner().spawn(["/bin/sh", "-c", f"echo $$ > {done}"], cwd=tmp_path)
    wait_for(lambda: _state(pid) == "", what=f"process {pid} reaped (state {_state(pid)!r})")
    assert done.read_text().strip() == str(pid)


def test_a_spawned_process_has_its_own_session_and_no_inherited_descriptors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    keep = os.open(os.devnull, os.O_RDONLY)  # inheritable in this process
    os.set_inheritable(keep, True)
    try:
        pid = Runner().spawn(["/bin/sh", "-c", f"ls /proc/$$/fd > {out}.tmp; "
                              f"cut -d' ' -f6 /proc/$$/stat >> {out}.tmp; mv {out}.tmp {out}"], cwd=tmp_path)
        wait_for(lambda: _state(pid) == "", what=f"process {pid} reaped")
    finally:
        os.close(keep)
    lines = out.read_text().split()
    assert str(keep) not in lines[:-1], lines
    assert lines[-1] == str(pid)  # the leader of a session of its own
