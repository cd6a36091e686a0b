"""Plesk's Debian layout under a real systemd: ``/opt/psa`` is PRODUCT_ROOT_D
(``/etc/psa/psa.conf`` says so) and ``/usr/local/psa`` a symlink to it.  The service,
sandboxed by its unit (ProtectSystem=strict, ReadWritePaths), installs a Plesk extension
into ``/opt/psa`` through the symlink, registers it with Plesk's ``extension`` utility
(the stand-in) and removes it again.

Its own container (machine name ``mgrtest11-PID``, tests/system/container.py) on an overlay
of the shared debootstrap root, which is only read; the agent's wheel is built into a
private directory.  Skipped with the reason when the machine cannot boot one; a failed boot
fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.system.container import (
    WHEELHOUSE,
    Container,
    booted,
    build_wheel,
    ensure_dependency_wheels,
    why_not,
)

pytestmark = pytest.mark.root

PSA_CONF = "# Plesk configuration file\nPRODUCT_ROOT_D\t\t\t/opt/psa\nHTTPD_VHOSTS_D\t\t\t/var/www/vhosts\n"
PY = "/opt/mgr-agent/bin/python"


def _debian_plesk(merged: Path) -> None:
    """The layout Plesk's Debian packages leave: /opt/psa, the link, psa.conf, a version."""
    (merged / "opt/psa/admin").mkdir(parents=True, exist_ok=True)
    (merged / "opt/psa/version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (merged / "usr/local").mkdir(parents=True, exist_ok=True)
    link = merged / "usr/local/psa"
    if not link.is_symlink():
        link.symlink_to("/opt/psa")
    (merged / "etc/psa").mkdir(parents=True, exist_ok=True)
    (merged / "etc/psa/psa.conf").write_text(PSA_CONF)


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    ensure_dependency_wheels()
    with tempfile.TemporaryDirectory(prefix="mgr-agent-wheel11-", dir="/var/tmp") as wheels:
        wheel = build_wheel(Path(wheels))       # private: the shared wheelhouse is only read
        with booted(f"mgrtest11-{os.getpid()}", prepare=_debian_plesk,
                    binds=[(REPO, "/mnt/src"), (WHEELHOUSE, "/mnt/wheels"), (Path(wheels), "/mnt/wheel")]) \
                as container:
            container.wheel = f"/mnt/wheel/{wheel.name}"
            done = container.run(f"sh /mnt/src/deploy/install.sh --src {container.wheel} "
                                 "--find-links /mnt/wheels --no-index", timeout=300)
            assert "mgr-agent.service is active" in done.stdout, done.stdout + done.stderr
            yield container


def _zip(box: Container, version: str) -> str:
    """A Plesk extension without PHP hooks (the container has no PHP), in /srv."""
    path = f"/srv/demo-ext-{version}.zip"
    box.run(f"{PY} -c 'from pathlib import Path; from mgr_agent.sandbox.samples import *; "
            f"t = plesk_files(\"demo-ext\", \"{version}\"); "
            "t = {k: v for k, v in t.items() if not k.startswith(\"plib/scripts/\")}; "
            f"write_zip(t, Path(\"{path}\"))' && chmod 644 {path}")
    return path


def test_service_installs_into_opt_psa_through_the_symlink_and_registers(box: Container) -> None:
    box.run(f"{PY} -c 'from pathlib import Path; "
            "from mgr_agent.sandbox.standin import install_plesk_standin; "
            "install_plesk_standin(Path(\"/opt/psa\"))'")
    assert box.run("systemctl show -p ProtectSystem --value mgr-agent.service").stdout.strip() == "strict"
    one = _zip(box, "1.0")
    done = box.run(f"mgr-agent install {one} --json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["action"] == "installed"
    assert "Plesk: registered demo-ext" in doc.get("notes", [])
    assert box.run("test -f /opt/psa/admin/plib/modules/demo-ext/meta.xml && "
                   "test -L /usr/local/psa && echo ok").stdout.strip() == "ok"
    files = [f["path"] for f in json.loads(box.run("mgr-agent info demo-ext --json").stdout)["data"]["files"]]
    assert files and all(p.startswith("opt/psa/") for p in files), files
    registry = json.loads(box.run("cat /opt/psa/var/standin-extensions.json").stdout)
    assert registry["demo-ext"]["version"] == "1.0"
    # it was the service that wrote (through the socket), not this shell
    log = box.run("journalctl -u mgr-agent --no-pager -o cat | grep -c demo-ext", check=False).stdout
    assert int(log.strip() or 0) >= 1

    gone = box.run("mgr-agent uninstall demo-ext --json", check=False)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert box.run("test -e /opt/psa/admin/plib/modules/demo-ext || echo gone").stdout.strip() == "gone"
    assert box.run("test -e /opt/psa/var/standin-extensions.json || echo none").stdout.strip() == "none"


def test_opt_psa_without_the_link_is_writable_for_the_service(box: Container) -> None:
    """systemd resolves ``-/usr/local/psa`` through the link; with psa.conf alone (no link)
    only the unit's ``-/opt/psa`` makes Plesk's tree writable under ProtectSystem=strict."""
    box.run("rm /usr/local/psa && systemctl stop mgr-agent.service")
    two = _zip(box, "2.0")
    done = box.run(f"mgr-agent install {two} --json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["action"] == "installed"
    assert box.run("grep -c '<version>2.0</version>' "
                   "/opt/psa/admin/plib/modules/demo-ext/meta.xml").stdout.strip() == "1"
    assert box.run("test -e /usr/local/psa || echo absent").stdout.strip() == "absent"
