"""The Ansible collection for real: ansible-playbook runs deploy/examples/ against ten
inventory hosts on this machine, each with its own ``root``. Two of them are reached over
real SSH (our own sshd on 127.0.0.1, a throwaway key, pipelining on), one through a
running mgr-agent daemon's socket, the rest with the local connection.

In order: install 1.0 in check mode (nothing on any host changes, state included), for
real, and again (changed=false everywhere); the rolling upgrade to 1.1 in batches of two
where one host of the second batch gets a package whose post-install hook fails (that
host fails with rolled_back, its files stay byte for byte 1.0, the rollout stops, later
batches are untouched); the rerun with the fixed package finishes the fleet; the fleet
rollback (check, real, again); the report; each host's metrics textfile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests import sshd as sshd_helper
from tests.helpers import REPO, snapshot
from tests.sshd import Sshd

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
AGENT = Path(sys.executable).parent / "mgr-agent"
EXAMPLES = REPO / "deploy/examples"
HOSTS = [f"h{i:02d}" for i in range(1, 11)]
SSH_HOSTS = ("h01", "h04")       # batch 1 and the failing host of batch 2 go over SSH
DAEMON_HOST = "h02"              # reached through a running daemon's socket
BROKEN = "h04"
TEXTFILE = "var/lib/node-exporter/mgr_agent.prom"
RECAP = re.compile(r"^(h\d\d)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed "
                                "(pip install -e '.[test]')")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """Our own sshd on 127.0.0.1 and a free port; root logs in with a throwaway key."""
    reason = sshd_helper.why_not() or (None if os.geteuid() == 0 else "needs root")
    if reason:
        pytest.skip(reason)
    server = sshd_helper.start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@dataclass
class Fleet:
    work: Path
    files: Path
    env: dict[str, str]
    sshd: Sshd

    def root(self, host: str) -> Path:
        return self.work / "hosts" / host

    def inventory(self, overrides: dict[str, str] | None = None) -> Path:
        lines = ["[panels]"]
        for host in HOSTS:
            fields = [host, f"mgr_agent_root={self.root(host)}", f"mgr_agent_executable={AGENT}",
                      "ansible_python_interpreter=/usr/bin/python3"]
            if host in SSH_HOSTS:
                fields += self.sshd.inventory_fields()
            else:
                fields.append("ansible_connection=local")
            if overrides and host in overrides:
                fields.append(f"plugin_package={overrides[host]}")
            lines.append(" ".join(fields))
        lines += ["", "[panels:vars]", f"plugin_package={self.files}/demo-1.1.zip", "plugin_name=demo",
                  "", "[local]",
                  "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3"]
        path = self.work / "inventory.ini"
        path.write_text("\n".join(lines) + "\n")
        return path

    def play(self, playbook: str, *args: str, overrides: dict[str, str] | None = None,
             expect_rc: int = 0) -> Play:
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory(overrides)), "-f", "10",
                str(EXAMPLES / playbook), *args]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=600, check=False)
        play = Play(done.returncode, done.stdout + done.stderr, time.monotonic() - started)
        assert done.returncode == expect_rc, play.out
        return play

    def version(self, host: str) -> str | None:
        db = self.root(host) / "var/lib/mgr-agent/state.db"
        if not db.exists():
            return None
        out = subprocess.run([str(AGENT), "--root", str(self.root(host)), "--no-daemon", "--json", "list"],
                             capture_output=True, text=True, check=True).stdout
        rows = json.loads(out)["data"]
        return rows[0]["version"] if rows else None


@dataclass
class Play:
    rc: int
    out: str
    seconds: float

    def recap(self) -> dict[str, tuple[int, int, int]]:
        """host -> (ok, changed, failed) from the PLAY RECAP."""
        return {m[1]: (int(m[2]), int(m[3]), int(m[5])) for m in RECAP.finditer(self.out)}

    def changed(self) -> dict[str, int]:
        return {h: c for h, (_, c, _) in self.recap().items() if h != "localhost"}

    def failure(self, host: str) -> dict[str, object]:
        m = re.search(rf"^fatal: \[{host}\]: FAILED! => (\{{.*\}})$", self.out, re.M)
        assert m, self.out
        return json.loads(m[1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def fleet(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    files = work / "files"
    write_zip(ispmanager_files("demo", "1.0"), files / "demo-1.0.zip")
    write_zip(ispmanager_files("demo", "1.1"), files / "demo-1.1.zip")
    write_zip(ispmanager_files("demo", "1.1", post_install="echo 'cannot migrate the settings'; exit 3"),
              files / "demo-1.1-broken.zip")
    for host in HOSTS:
        conf = work / "hosts" / host / "etc/mgr-agent/agent.toml"
        conf.parent.mkdir(parents=True)
        (work / "hosts" / host / "usr/local/mgr5/etc").mkdir(parents=True)
        conf.write_text(f'[metrics]\ntextfile = "/{TEXTFILE}"\n')
    yield Fleet(work, files, ansible_env(work), sshd)


def ansible_env(work: Path) -> dict[str, str]:
    """ansible-playbook's environment: this checkout's collection, deploy/examples/ansible.cfg,
    a HOME and temp directory under ``work``, no ANSIBLE_/MGR_AGENT_ settings of the caller."""
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MGR_AGENT_"))}
    env.update(HOME=str(home), ANSIBLE_COLLECTIONS_PATH=str(REPO / "deploy"), ANSIBLE_PIPELINING="1",
               ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"), ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_CONFIG=str(EXAMPLES / "ansible.cfg"), PATH=os.environ.get("PATH", ""),
               MGR_AGENT_NO_JOURNAL="1")
    return env


@pytest.fixture(scope="module")
def daemon(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.integration.test_daemon import Daemon  # noqa: PLC0415

    d = Daemon(fleet.root(DAEMON_HOST), tmp_path_factory.mktemp("daemon"), group="0",
               env={"MGR_AGENT_REQUEST_TIMEOUT": "10"}).ready()
    yield d
    d.stop(timeout=10)


def state_bytes(fleet: Fleet) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for host in HOSTS:
        db = fleet.root(host) / "var/lib/mgr-agent/state.db"
        out[host] = db.read_bytes() if db.exists() else None
    return out


def host_tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Everything under the host's root, the agent's state included (run/ holds the socket)."""
    out = {}
    for top in ("etc", "usr", "var"):
        if (root / top).exists():
            out.update({f"{top}/{rel}": v for rel, v in snapshot(root / top, skip_state=False).items()})
    return out


def trees(fleet: Fleet) -> dict[str, dict[str, tuple[str, int, str]]]:
    return {h: host_tree(fleet.root(h)) for h in HOSTS}


def test_install_check_then_real_then_again(fleet: Fleet, daemon: object) -> None:
    package = f"plugin_package={fleet.files}/demo-1.0.zip"
    before, db_before = trees(fleet), state_bytes(fleet)
    check = fleet.play("rolling-upgrade.yml", "--check", "--diff", "-e", package)
    assert check.changed() == dict.fromkeys(HOSTS, 1), check.out
    assert "+ usr/local/mgr5/addon/demo.py" in check.out     # the diff shows the file plan
    assert "version: (not installed)" in check.out
    assert trees(fleet) == before and state_bytes(fleet) == db_before

    real = fleet.play("rolling-upgrade.yml", "--diff", "-e", package)
    assert real.changed() == dict.fromkeys(HOSTS, 1), real.out
    assert all(fleet.version(h) == "1.0" for h in HOSTS)
    assert (fleet.root(DAEMON_HOST) / "run/mgr-agent/agent.sock").exists()

    again = fleet.play("rolling-upgrade.yml", "-e", package, "-v")
    assert again.changed() == dict.fromkeys(HOSTS, 0), again.out
    assert '"agent_via": "daemon"' in again.out and '"agent_via": "cli"' in again.out
    # a no-op in check mode changes nothing either, the agent's state included
    db_before = state_bytes(fleet)
    fleet.play("rolling-upgrade.yml", "--check", "-e", package)
    assert state_bytes(fleet) == db_before


def test_rolling_upgrade_stops_at_the_failed_batch_then_finishes(fleet: Fleet, daemon: object) -> None:
    before = trees(fleet)
    panel_before = snapshot(fleet.root(BROKEN) / "usr")
    broken = {BROKEN: f"{fleet.files}/demo-1.1-broken.zip"}
    upgrade = fleet.play("rolling-upgrade.yml", overrides=broken, expect_rc=2)
    failed = upgrade.failure(BROKEN)
    assert failed["rolled_back"] is True and failed["rc"] == 8
    assert failed["cause"]["code"] == "hook-failed"  # type: ignore[index]
    assert "cannot migrate the settings" in failed["cause"]["output"]  # type: ignore[index]
    assert failed["version"] == "1.1" and failed["previous_version"] == "1.0"
    assert snapshot(fleet.root(BROKEN) / "usr") == panel_before      # byte for byte 1.0
    assert fleet.version(BROKEN) == "1.0"
    assert [fleet.version(h) for h in ("h01", "h02", "h03")] == ["1.1"] * 3
    for host in HOSTS[4:]:          # later batches were never touched
        assert fleet.version(host) == "1.0"
        assert trees(fleet)[host] == before[host]
    assert set(upgrade.changed()) == {"h01", "h02", "h03", "h04"}, upgrade.out
    history = subprocess.run([str(AGENT), "--root", str(fleet.root(BROKEN)), "--no-daemon", "history",
                              "demo"], capture_output=True, text=True, check=True).stdout
    assert "1.0 -> 1.1  rolled_back" in history

    rerun = fleet.play("rolling-upgrade.yml")
    assert rerun.changed() == {h: 0 if h in ("h01", "h02", "h03") else 1 for h in HOSTS}, rerun.out
    assert all(fleet.version(h) == "1.1" for h in HOSTS)


def test_fleet_rollback_and_report(fleet: Fleet, daemon: object) -> None:
    before, db_before = trees(fleet), state_bytes(fleet)
    check = fleet.play("rollback.yml", "--check", "--diff")
    assert check.changed() == dict.fromkeys(HOSTS, 1), check.out
    assert trees(fleet) == before and state_bytes(fleet) == db_before
    real = fleet.play("rollback.yml")
    assert real.changed() == dict.fromkeys(HOSTS, 1), real.out
    assert all(fleet.version(h) == "1.0" for h in HOSTS)
    again = fleet.play("rollback.yml")
    assert again.changed() == dict.fromkeys(HOSTS, 0), again.out
    assert all(fleet.version(h) == "1.0" for h in HOSTS)

    report = fleet.play("report.yml")
    for host in HOSTS:
        assert re.search(rf"{host}\s+demo\s+ispmanager\s+1\.0\s+rollback committed", report.out), report.out


def test_metrics_textfiles_count_what_happened(fleet: Fleet) -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    for host in HOSTS:
        text = (fleet.root(host) / TEXTFILE).read_text()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("mgr_agent_plugin_info", (("name", "demo"), ("panel", "ispmanager"),
                                                  ("version", "1.0")))] == 1
        txs = {labels: v for (name, labels), v in samples.items() if name == "mgr_agent_transactions_total"}
        expected = {(("op", "install"), ("result", "committed")): 2.0,
                    (("op", "rollback"), ("result", "committed")): 1.0}
        rollbacks = {(("cause", "requested"),): 1.0}
        if host == BROKEN:
            expected[(("op", "install"), ("result", "rolled_back"))] = 1.0
            rollbacks[(("cause", "hook-failed"),)] = 1.0
        assert txs == expected, (host, text)
        assert {labels: v for (name, labels), v in samples.items()
                if name == "mgr_agent_rollbacks_total"} == rollbacks
        assert samples[("mgr_agent_interrupted_transaction_pending", ())] == 0
        assert samples[("mgr_agent_last_transaction_timestamp_seconds", ())] > time.time() - 3600

