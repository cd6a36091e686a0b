"""A panel tree that appears after the daemon started, read-only in its mount namespace
(a real read-only bind mount in a private namespace, as ProtectSystem=strict leaves it):
noticed, one restart asked for (and a failure to ask logged with what to do), and the
preflight error carries the hint.  The restart itself is proven under a real systemd in
tests/system/test_systemd.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mgr_agent.panels.ispmanager import outside

CHILD = r'''
import json, logging, os, subprocess, sys
from pathlib import Path
from mgr_agent import lateroots, preflight
from mgr_agent.errors import PreflightFailed
from mgr_agent.layout import Layout

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
layout = Layout.at(sys.argv[1])
late = lateroots.LateRoots(layout, under_systemd=True, unit="mgr-agent-test-no-such-unit.service")
out = {"missing": sorted(layout.rel(p) for p in late.missing)}
layout.mgr.mkdir(parents=True)
for argv in (["mount", "--bind", str(layout.mgr), str(layout.mgr)],
             ["mount", "-o", "remount,bind,ro", str(layout.mgr), str(layout.mgr)]):
    subprocess.run(argv, check=True)
(layout.root / "opt/psa").mkdir(parents=True)  # appeared, but writable: nothing to do
out["stuck"] = [layout.rel(p) for p in late.stuck()]
out["still_watched"] = [layout.rel(p) for p in late.missing]
out["asked"] = late.poll()
out["asked_again"] = late.poll()
os.environ["INVOCATION_ID"] = "0123"
try:
    preflight._check_dir(layout.mgr)
except PreflightFailed as exc:
    out["error"] = exc.to_dict()
print(json.dumps(out))
'''


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private mount namespace")
def test_a_late_read_only_panel_tree_is_noticed_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/psa").mkdir(parents=True)   # there from the start
    agent = str(Path(outside.__file__).resolve().parent.parent)
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", CHILD,
                           str(root)], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": agent})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["missing"] == ["opt/psa", "usr/local/mgr5"]
    assert out["stuck"] == out["still_watched"] == ["usr/local/mgr5"]
    # no such unit (and no systemd here): the failure says what to do, and is not retried
    assert (out["asked"], out["asked_again"]) == (False, False)
    assert "appeared after mgr-agent started and is read-only" in done.stderr
    assert "run `systemctl restart mgr-agent-test-no-such-unit.service`" in done.stderr
    assert "read-only filesystem" in out["error"]["message"]
    assert "systemctl restart mgr-agent" in out["error"]["hint"]
    assert "ReadWritePaths=" in out["error"]["hint"]


def test_the_core_is_started_through_systemd_only_where_it_runs_the_machine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(outside.MODE_ENV, "direct")
    assert not outside.systemd_runs(Path("/"))
    monkeypatch.setenv(outside.MODE_ENV, "auto")
    assert not outside.systemd_runs(Path("/tmp/some-root")), "a --root tree never goes through systemd"
    argv = outside.transient(["/usr/local/mgr5/sbin/mgrctl", "-m", "ispmgr"], unit="u1",
                             description="d", timeout=30)
    assert argv[:2] == ["systemd-run", "--unit=u1"] and "--collect" in argv
    assert "--scope" not in argv and "--service-type=forking" in argv
    assert argv[argv.index("--") + 1:] == ["/usr/local/mgr5/sbin/mgrctl", "-m", "ispmgr"]
    assert outside.unit_name("ispmgr-core") != outside.unit_name("ispmgr-core")
