"""The ``mgr.agent.agent`` role applied for real to a systemd container (Debian bookworm
booted with systemd-nspawn on a throw-away overlay of the shared debootstrap cache),
reached by Ansible through a small test-only ``nsenter`` connection plugin:

- the role builds a wheel of this checkout on the controller, copies it with a wheelhouse
  and runs deploy/install.sh: the socket and the service are up, and a second run changes
  nothing;
- ``mgr.agent.plugin_info`` and ``mgr.agent.plugin`` then answer through the daemon's
  socket, and the daemon keeps the metrics textfile the role configured;
- ``agent_state: absent`` runs deploy/uninstall.sh: the agent is gone, its state and the
  installed plugin stay; a second run changes nothing.

When the machine cannot boot a container (not root, no systemd-nspawn, no root filesystem;
tests/system/container.py), every test here is skipped with the reason; when it can and the
boot fails, they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests.helpers import REPO
from tests.system.container import DEPS, WHEELHOUSE, Container, booted, sh, why_not

pytestmark = pytest.mark.root

BIN = Path(sys.executable).parent
PLUGINS = Path(__file__).parent / "ansible_plugins"
TEXTFILE = "/var/lib/node-exporter/mgr_agent.prom"
RECAP = re.compile(r"^box\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def wheelhouse(work: Path) -> Path:
    """The agent's dependencies (the system tests' cached wheels, or built here when there
    are none yet) plus prometheus-client."""
    house = work / "wheels"
    house.mkdir()
    cached = [w for w in WHEELHOUSE.glob("*.whl") if not w.name.startswith("mgr_agent-")]
    for wheel in cached:
        shutil.copy(wheel, house)
    wanted = ["prometheus-client"] + ([] if any(w.name.startswith("lxml-") for w in cached) else DEPS)
    done = sh([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house), *wanted], check=False,
              timeout=900)
    if done.returncode != 0:
        pytest.skip(f"cannot build the wheelhouse: {done.stderr[-300:]}")
    return house


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    with booted(f"mgrtest9-{os.getpid()}") as container:
        container.wheel = str(wheelhouse(container.log.parent))    # on the controller: the role copies it
        yield container


def ansible(box: Container, tool: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    work = Path(box.wheel).parent
    inventory = work / "inventory.ini"
    inventory.write_text(f"[panels]\nbox ansible_connection=nsenter nsenter_pid={box.init} "
                         "ansible_python_interpreter=/usr/bin/python3 ansible_become=false\n")
    (work / "home").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MGR_AGENT_"))}
    env.update(HOME=str(work / "home"), ANSIBLE_COLLECTIONS_PATH=str(REPO / "deploy"),
               ANSIBLE_CONNECTION_PLUGINS=str(PLUGINS / "connection"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PIPELINING="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    started = time.monotonic()
    done = subprocess.run([str(BIN / tool), "-i", str(inventory), *args], capture_output=True, text=True,
                          env=env, timeout=900, check=False)
    return done, time.monotonic() - started


def play(box: Container, *extra: str) -> tuple[int, int, str]:
    """Run deploy/examples/install-agent.yml; (changed, failed, output)."""
    done, took = ansible(box, "ansible-playbook", str(REPO / "deploy/examples/install-agent.yml"),
                         "-e", f"agent_wheelhouse={box.wheel}", "-e", f"agent_metrics_textfile={TEXTFILE}",
                         *extra)
    out = done.stdout + done.stderr
    recap = RECAP.search(out)
    assert recap, out
    print(f"install-agent.yml {' '.join(extra)}: {took:.1f} s")
    return int(recap[2]), int(recap[4]), out


def module(box: Container, name: str, args: str) -> dict[str, object]:
    done, _ = ansible(box, "ansible", "box", "-m", name, "-a", args)
    m = re.search(r"^box \| (?:SUCCESS|CHANGED|FAILED!) => (\{.*)", done.stdout, re.M | re.S)
    assert m, done.stdout + done.stderr
    return json.loads(m[1])  # type: ignore[no-any-return]


def test_role_installs_the_agent_idempotently(box: Container) -> None:
    changed, failed, out = play(box)
    assert failed == 0 and changed > 0, out
    assert box.run("systemctl is-active mgr-agent.socket mgr-agent.service").stdout.split() == \
        ["active", "active"]
    assert box.run("systemctl is-enabled mgr-agent.socket mgr-agent.service").stdout.split() == \
        ["enabled", "enabled"]
    assert box.run("getent group mgr-agent | wc -l").stdout.strip() == "1"
    assert f'textfile = "{TEXTFILE}"' in box.run("cat /etc/mgr-agent/agent.toml").stdout
    changed, failed, out = play(box)
    assert (changed, failed) == (0, 0), out


def test_modules_answer_through_the_socket(box: Container) -> None:
    box.run("mkdir -p /usr/local/mgr5/etc /srv")
    write_zip(ispmanager_files("demo", "1.0"), Path(f"/proc/{box.init}/root/srv/demo-1.0.zip"))
    info = module(box, "mgr.agent.plugin_info", "")
    assert (info["agent_via"], info["plugins"]) == ("daemon", [])
    installed = module(box, "mgr.agent.plugin", "src=/srv/demo-1.0.zip remote_src=true name=demo")
    assert (installed["agent_via"], installed["action"], installed["changed"]) == \
        ("daemon", "installed", True)
    info = module(box, "mgr.agent.plugin_info", "name=demo")
    plugins = info["plugins"]
    assert isinstance(plugins, list) and plugins[0]["version"] == "1.0"
    assert plugins[0]["last_transaction"]["tx"] == installed["tx"]
    text = box.run(f"cat {TEXTFILE}").stdout      # written by the daemon, in its sandbox
    assert 'mgr_agent_plugin_info{name="demo",panel="ispmanager",version="1.0"} 1.0' in text
    assert 'mgr_agent_transactions_total{op="install",result="committed"} 1.0' in text


def test_role_removes_the_agent_and_keeps_state_and_plugins(box: Container) -> None:
    changed, failed, out = play(box, "-e", "agent_state=absent")
    assert failed == 0 and changed > 0, out
    assert box.run("test -e /opt/mgr-agent || test -e /etc/systemd/system/mgr-agent.service",
                   check=False).returncode != 0
    assert box.run("systemctl is-active mgr-agent.service", check=False).stdout.strip() != "active"
    assert box.run("test -f /var/lib/mgr-agent/state.db && test -f /usr/local/mgr5/addon/demo.py",
                   check=False).returncode == 0
    changed, failed, out = play(box, "-e", "agent_state=absent")
    assert (changed, failed) == (0, 0), out
