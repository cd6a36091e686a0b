"""mgr-agent under a real systemd: a Debian bookworm root booted with systemd-nspawn
(tests/system/container.py), the agent installed with deploy/install.sh from a wheelhouse,
then: a plain root (python3-venv and python3-systemd missing: install.sh gets them with
apt), a panel installed after the agent started, socket activation, readiness, install
through the socket by a group member and refusal of a non-member (also with --no-daemon),
who asked in history and the journal, the watchdog restarting a hung daemon, recovery of a
transaction interrupted by ``systemctl kill -s KILL``, a large package hashed by the
agent's helper process under the unit's sandbox, the panel core living outside
mgr-agent.service (and surviving its restart, stop and a re-deploy), a failed deploy
leaving the previous installation working, and deploy/uninstall.sh.

When the machine cannot boot a container (not root, no systemd-nspawn, no root filesystem),
the container tests are skipped with the reason; when it can and the boot fails, they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.system.container import WHEELHOUSE, Container, booted, ensure_wheelhouse, journal, sh, why_not
from tests.waits import LineReader, wait_for

AGENT = "/opt/mgr-agent/bin/mgr-agent"


def _test_settings(merged: Path) -> None:
    """No panel yet (test_a_panel_installed_after_the_agent makes one); short health checks,
    a short watchdog."""
    (merged / "etc/mgr-agent").mkdir(parents=True, exist_ok=True)
    (merged / "etc/mgr-agent/agent.toml").write_text("[panel]\nhealth_window = 1\n")
    dropin = merged / "etc/systemd/system/mgr-agent.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "50-test.conf").write_text("[Service]\nWatchdogSec=3\nRestartSec=1\n")


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    wheel = ensure_wheelhouse()
    with booted(f"mgrtest12-{os.getpid()}", prepare=_test_settings,
                binds=[(REPO, "/mnt/src"), (WHEELHOUSE, "/mnt/wheels")]) as box:
        box.wheel = f"/mnt/wheels/{wheel.name}"
        yield box


# ------------------------------------------------------------------ the units, offline
def test_units_verify_without_any_output(tmp_path: Path) -> None:
    """``systemd-analyze verify`` prints nothing at all, stderr included (a mistyped key
    is only a warning, exit 0); checked in a scratch root holding the units, the
    ExecStart binary and the distribution's units."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in ("mgr-agent.service", "mgr-agent.socket"):
        shutil.copy(REPO / "units" / unit, units / unit)
    exe = root / AGENT.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/sh", root / "bin/sh")
    for system in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if system.is_dir():
            shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    verify = ["systemd-analyze", "verify", f"--root={root}", "mgr-agent.service", "mgr-agent.socket"]
    done = sh(verify, check=False, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # the check itself notices a mistyped setting
    text = (units / "mgr-agent.service").read_text().replace("NoNewPrivileges=", "NoNewPrivilege=")
    (units / "mgr-agent.service").write_text(text)
    assert sh(verify, check=False, timeout=60).stderr != ""
    (units / "mgr-agent.service").write_text((REPO / "units/mgr-agent.service").read_text())
    security = sh(["systemd-analyze", "security", "--offline=true", f"--root={root}", "mgr-agent.service"],
                  check=False, timeout=60)
    found = re.search(r"Overall exposure level for mgr-agent.service: ([0-9.]+)", security.stdout)
    assert found, security.stdout + security.stderr
    assert float(found.group(1)) <= 4.5, f"exposure {found.group(1)} (docs/daemon.md records 3.9)"


# ------------------------------------------------------------------ in the container, in order
def deploy_command(box: Container, *extra: str) -> str:
    return " ".join(["sh /mnt/src/deploy/install.sh", f"--src {box.wheel}", "--find-links /mnt/wheels",
                     "--no-index", *extra])


def test_deploy_script_installs_on_a_plain_root_and_is_idempotent(container: Container) -> None:
    # a root with python3 only: no venv support, no systemd bindings, no compiler
    container.run("dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl "
                  ">/dev/null 2>&1 || true")
    plain = container.run("python3 -c 'import ensurepip' 2>&1; python3 -c 'import systemd' 2>&1; "
                          "command -v pkg-config gcc || true", check=False).stdout
    assert plain.count("ModuleNotFoundError") == 2, plain
    started = time.monotonic()
    first = container.run(deploy_command(container), timeout=600)
    took = time.monotonic() - started
    assert "mgr-agent.service is active" in first.stdout, first.stdout + first.stderr
    assert "apt-get install python3-venv python3-systemd" in first.stdout, first.stdout
    print(f"install.sh on a plain root: {took:.1f} s (apt included)")
    assert container.run("dpkg-query -W -f '${Status}' python3-systemd").stdout == "install ok installed"
    assert container.run("test -L /opt/mgr-agent && /opt/mgr-agent/bin/python -c "
                         "'import systemd.journal, mgr_agent.daemon; print(1)'").stdout.strip() == "1"
    assert "systemd-python" not in container.run("/opt/mgr-agent/bin/python -m pip list").stdout
    venv = container.run("readlink /opt/mgr-agent").stdout.strip()
    started = time.monotonic()
    second = container.run(deploy_command(container), timeout=300)
    print(f"install.sh again (nothing to fetch): {time.monotonic() - started:.1f} s")
    assert "mgr-agent.service is active" in second.stdout
    assert "apt-get" not in second.stdout
    new = container.run("readlink /opt/mgr-agent").stdout.strip()
    assert new != venv and container.run("ls /opt/mgr-agent.venvs").stdout.split() == [Path(new).name]
    assert container.run("getent group mgr-agent | wc -l").stdout.strip() == "1"
    assert container.run("systemctl is-enabled mgr-agent.socket mgr-agent.service").stdout.split() == \
        ["enabled", "enabled"]
    sock = container.run("stat -c '%a %U %G' /run/mgr-agent/agent.sock").stdout.strip()
    assert sock == "660 root mgr-agent"
    verify = container.run("systemd-analyze verify mgr-agent.service mgr-agent.socket", check=False)
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", ""), verify.stderr
    assert container.run("stat -c '%a %U %G' /var/lib/mgr-agent").stdout.strip() == "750 root mgr-agent"


def write_samples(box: Container) -> None:
    box.run("/opt/mgr-agent/bin/python -c 'from pathlib import Path; "
            "from mgr_agent.sandbox.samples import *; "
            "write_zip(ispmanager_files(\"late\", \"1.0\"), Path(\"/srv/late-1.0.zip\")); "
            "write_zip(ispmanager_files(\"demo\", \"1.0\"), Path(\"/srv/demo-1.0.zip\")); "
            "write_zip(ispmanager_files(\"demo\", \"1.1\", post_install=\"sleep 120\"), "
            "Path(\"/srv/demo-1.1-slow.zip\")); "
            "write_zip(ispmanager_files(\"demo\", \"1.2\"), Path(\"/srv/demo-1.2.zip\"))' "
            "&& chmod 644 /srv/*.zip")


def test_a_panel_installed_after_the_agent_works_without_a_manual_restart(container: Container) -> None:
    assert container.run("test -e /usr/local/mgr5", check=False).returncode != 0
    container.wait_until("systemctl is-active mgr-agent.service", "active")
    before = container.show("MainPID")
    write_samples(container)
    # the panel arrives: the ispmanager stand-in (bin/core, sbin/mgrctl) under /usr/local/mgr5
    container.run("/opt/mgr-agent/bin/python -c 'from mgr_agent.sandbox.standin import install_standin; "
                  "from mgr_agent.layout import Layout; install_standin(Layout.at(\"/\"))'")
    wait_for(lambda: container.show("MainPID") not in (before, "0"), interval=0.2,
             what="the service to restart itself for the new panel tree")
    container.wait_until("systemctl is-active mgr-agent.service", "active")
    log = container.run("journalctl -u mgr-agent --no-pager").stdout
    assert "/usr/local/mgr5 appeared after mgr-agent started" in log, log[-2000:]
    done = container.run("mgr-agent install /srv/late-1.0.zip --json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["action"] == "installed"
    assert container.run("test -x /usr/local/mgr5/addon/late.py", check=False).returncode == 0


def test_socket_activates_the_service(container: Container) -> None:
    container.run("systemctl stop mgr-agent.service")
    assert container.run("systemctl is-active mgr-agent.service", check=False).stdout.strip() == "inactive"
    assert container.run("systemctl is-active mgr-agent.socket").stdout.strip() == "active"
    # any client connecting starts it; is-active only after READY=1 (Type=notify)
    ping = container.run("/opt/mgr-agent/bin/python -c 'from pathlib import Path; from mgr_agent import api; "
                         "sock = Path(\"/run/mgr-agent/agent.sock\"); "
                         "print(api.Client(sock).call(\"ping\", {}).data[\"pid\"])'")
    pid = ping.stdout.strip()
    assert container.run("systemctl is-active mgr-agent.service").stdout.strip() == "active"
    assert container.show("MainPID") == pid
    assert container.show("StatusText").startswith("ready, serving /run/mgr-agent/agent.sock")


def test_member_installs_through_the_socket_and_a_stranger_is_refused(container: Container) -> None:
    container.run("id alice >/dev/null 2>&1 || useradd -m -G mgr-agent alice; "
                  "id bob >/dev/null 2>&1 || useradd -m bob")
    done = container.run("runuser -u alice -- mgr-agent install /srv/demo-1.0.zip --json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert (doc["action"], doc["name"], doc["version"]) == ("installed", "demo", "1.0")
    assert container.run("cat /usr/local/mgr5/skins/common/img/demo.txt").stdout == "demo 1.0\n"
    refused = container.run("runuser -u bob -- mgr-agent uninstall demo --json", check=False)
    assert refused.returncode == 14, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["error"]["code"] == "not-authorised"
    assert container.run("test -f /usr/local/mgr5/addon/demo.py", check=False).returncode == 0
    # the journal has the transaction's fields
    entries = wait_for(lambda: journal(container, "MGR_AGENT_PLUGIN=demo"), timeout=10, interval=0.3,
                       what="journalctl MGR_AGENT_PLUGIN=demo to find the install")
    last = entries[-1]
    assert (last["MGR_AGENT_ACTION"], last["MGR_AGENT_VERSION"], last["MGR_AGENT_RESULT"]) == \
        ("installed", "1.0", "ok")
    assert last["MGR_AGENT_TX"] == doc["tx"]
    alice = container.run("id -u alice").stdout.strip()
    assert last["MGR_AGENT_UID"] == alice
    # who asked, in history (read through the daemon by a member)
    history = container.run("runuser -u alice -- mgr-agent history demo --json", check=False)
    assert history.returncode == 0, history.stdout + history.stderr
    assert json.loads(history.stdout)["data"][0]["actor"].startswith(f"uid {alice} pid ")
    # a stranger reads nothing, with or without the daemon, and is told why
    for argv in ("history", "history --no-daemon", "list --no-daemon", "info demo"):
        stranger = container.run(f"runuser -u bob -- mgr-agent {argv} --json", check=False)
        assert stranger.returncode == 14, (argv, stranger.stdout, stranger.stderr)
        assert "needs root or the mgr-agent group" in json.loads(stranger.stdout)["error"]["message"]
    assert container.run("runuser -u bob -- cat /var/lib/mgr-agent/state.db", check=False).returncode != 0


def test_watchdog_restarts_a_hung_daemon(container: Container) -> None:
    before = int(container.show("NRestarts"))
    container.run("systemctl set-environment MGR_AGENT_FAULT=daemon-hang:6=hang && "
                  "systemctl restart mgr-agent.service; systemctl unset-environment MGR_AGENT_FAULT")
    hung = container.show("MainPID")
    wait_for(lambda: int(container.show("NRestarts")) != before, timeout=40, interval=0.5,
             what="the watchdog to restart the service")
    assert int(container.show("NRestarts")) == before + 1, "restarted once by the watchdog"
    container.wait_until("systemctl is-active mgr-agent.service", "active")
    assert container.show("MainPID") != hung
    log = container.run("journalctl -u mgr-agent --no-pager").stdout
    assert "not pinging the watchdog" in log
    assert "Watchdog timeout" in log and "Failed with result 'watchdog'" in log


def test_transaction_killed_with_the_service_is_recovered_at_restart(container: Container) -> None:
    container.wait_until("systemctl is-active mgr-agent.service", "active")
    restarts = int(container.show("NRestarts"))
    client = container.popen("mgr-agent install /srv/demo-1.1-slow.zip")
    assert client.stderr is not None
    LineReader(client.stderr).wait_for_line("running post-install hook", timeout=120)
    assert container.run("cat /usr/local/mgr5/skins/common/img/demo.txt").stdout == "demo 1.1\n"
    container.run("systemctl kill -s KILL mgr-agent.service")
    assert client.wait(60) == 1, "the client is told the daemon went away"
    wait_for(lambda: int(container.show("NRestarts")) != restarts, timeout=40, interval=0.3,
             what="systemd to restart the killed service")
    container.wait_until("systemctl is-active mgr-agent.service", "active")
    assert container.run("cat /usr/local/mgr5/skins/common/img/demo.txt").stdout == "demo 1.0\n"
    assert container.run("ls /var/lib/mgr-agent/journal | wc -l").stdout.strip() == "0"
    history = json.loads(container.run("mgr-agent history --json").stdout)["data"]
    assert (history[0]["to_version"], history[0]["status"]) == ("1.1", "rolled_back_by_recovery")
    recovered = journal(container, "MGR_AGENT_ACTION=recovered")
    assert recovered and recovered[-1]["MGR_AGENT_RESULT"] == "rolled back"
    procs = container.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'sleep[ ]120'",
                          check=False)
    assert procs.stdout.strip() == "0", "the hook died with the daemon"


def core_pid(box: Container) -> str:
    return box.run("cat /usr/local/mgr5/var/run/core.pid").stdout.strip()


def alive(box: Container, pid: str) -> bool:
    return box.run(f"test \"$(cat /proc/{pid}/comm 2>/dev/null)\" = core", check=False).returncode == 0


def test_the_panel_core_lives_outside_the_agent(container: Container) -> None:
    container.wait_until("systemctl is-active mgr-agent.service", "active")
    done = container.run("mgr-agent install /srv/demo-1.2.zip --json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["action"] == "upgraded"
    pid = core_pid(container)
    cgroup = container.run(f"cat /proc/{pid}/cgroup").stdout
    assert "mgr-agent.service" not in cgroup and "/mgr-agent-panel-ispmgr-core-" in cgroup, cgroup
    # not in the agent's sandbox: the host's mount namespace, privileges not capped
    host_ns = container.run("readlink /proc/1/ns/mnt").stdout
    assert container.run(f"readlink /proc/{pid}/ns/mnt").stdout == host_ns
    assert "NoNewPrivs:\t0" in container.run(f"cat /proc/{pid}/status").stdout
    container.run(f"nsenter -t {pid} -m sh -c 'touch /etc/written-by-core && rm /etc/written-by-core'")
    container.run("systemctl restart mgr-agent.service")
    assert alive(container, pid), "the core survives systemctl restart mgr-agent"
    container.run("systemctl stop mgr-agent.service")
    assert alive(container, pid), "the core survives systemctl stop mgr-agent"
    container.run(deploy_command(container), timeout=300)
    assert alive(container, pid), "the core survives a re-run of install.sh"
    assert core_pid(container) == pid


LARGE = ("import random; from pathlib import Path; from mgr_agent.sandbox.samples import *; "
         "big = {f\"skins/common/img/large/b{i}.bin\": (random.Random(i).randbytes(1 << 20), 0o644) "
         "for i in range(12)}; "
         "write_zip(ispmanager_files(\"large\", \"1.0\", extra=big), Path(\"/srv/large-1.0.zip\"))")


def test_a_large_package_is_hashed_by_the_helper_under_the_unit(container: Container) -> None:
    """12 MiB of entries the agent does not keep in memory: through the daemon, its helper
    process (``python -m mgr_agent.hashproc``) hashes them under the unit's sandbox; the
    journal, which says when the helper fails and the agent hashes alone, says nothing."""
    container.run(f"/opt/mgr-agent/bin/python -c '{LARGE}' && chmod 644 /srv/large-1.0.zip")
    done = container.run("mgr-agent install /srv/large-1.0.zip --json", check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["action"] == "installed"
    history = json.loads(container.run("mgr-agent history large --json").stdout)["data"]
    assert history[0]["actor"].startswith("uid 0 pid "), history[0]  # the daemon ran it
    on_disk = container.run("sha256sum /usr/local/mgr5/skins/common/img/large/b7.bin").stdout.split()[0]
    assert on_disk == hashlib.sha256(random.Random(7).randbytes(1 << 20)).hexdigest()
    said = [e.get("MESSAGE", "") for e in journal(container)]
    assert not [m for m in said if "hashing helper" in m], said[-20:]
    gone = container.run("mgr-agent uninstall large --json", check=False, timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr


def test_a_failed_deploy_leaves_the_previous_installation_working(container: Container) -> None:
    venv = container.run("readlink /opt/mgr-agent").stdout.strip()
    version = container.run("mgr-agent --version").stdout
    container.run("mkdir -p /tmp/no-wheels")  # the agent's wheel, but none of its dependencies
    failed = container.run(f"sh /mnt/src/deploy/install.sh --src {container.wheel} "
                           "--find-links /tmp/no-wheels --no-index", check=False, timeout=300)
    assert failed.returncode != 0
    assert "the previous installation (if any) is unchanged" in failed.stderr, failed.stderr
    assert container.run("readlink /opt/mgr-agent").stdout.strip() == venv
    assert container.run("ls /opt/mgr-agent.venvs").stdout.split() == [Path(venv).name]
    assert container.run("mgr-agent --version").stdout == version
    assert container.run("systemctl is-active mgr-agent.service").stdout.strip() == "active"
    assert container.run("mgr-agent list --json").returncode == 0


def test_uninstall_keeps_state_plugins_and_the_panel(container: Container) -> None:
    pid = core_pid(container)
    done = container.run("sh /mnt/src/deploy/uninstall.sh", timeout=120)
    assert "kept /var/lib/mgr-agent" in done.stdout, done.stdout
    for gone in ("/opt/mgr-agent", "/opt/mgr-agent.venvs", "/usr/local/bin/mgr-agent",
                 "/etc/systemd/system/mgr-agent.service", "/etc/systemd/system/mgr-agent.socket",
                 "/usr/lib/sysusers.d/mgr-agent.conf", "/usr/lib/tmpfiles.d/mgr-agent.conf",
                 "/run/mgr-agent"):
        assert container.run(f"test -e {gone} || test -L {gone}", check=False).returncode != 0, gone
    assert container.run("systemctl is-active mgr-agent.service mgr-agent.socket",
                         check=False).stdout.split() == ["inactive", "inactive"]
    assert container.run("getent group mgr-agent", check=False).returncode != 0
    assert container.run("stat -c '%a %U %G' /var/lib/mgr-agent").stdout.strip() == "700 root root"
    assert container.run("test -f /var/lib/mgr-agent/state.db && test -f /usr/local/mgr5/addon/demo.py "
                         "&& test -f /usr/local/mgr5/addon/late.py", check=False).returncode == 0
    assert alive(container, pid), "uninstalling the agent never stops the panel"
    again = container.run("sh /mnt/src/deploy/uninstall.sh", timeout=120)
    assert again.stdout.strip().endswith("done"), again.stdout
    # installed again, it knows its plugins; --purge-state then forgets them
    container.run(deploy_command(container), timeout=300)
    listed = json.loads(container.run("mgr-agent list --json").stdout)["data"]
    assert sorted(p["name"] for p in listed) == ["demo", "late"]
    assert container.run("stat -c '%a %U %G' /var/lib/mgr-agent").stdout.strip() == "750 root mgr-agent"
    container.run("sh /mnt/src/deploy/uninstall.sh --purge-state", timeout=120)
    assert container.run("test -e /var/lib/mgr-agent", check=False).returncode != 0
    assert container.run("test -f /usr/local/mgr5/addon/demo.py", check=False).returncode == 0
    assert alive(container, pid)
