"""Sizing figures for docs/ansible.md: the ``mgr.agent.plugin`` task over real SSH with
pipelining (our own sshd on 127.0.0.1), and a 10-host rolling upgrade.

    python -m tests.bench.ansible_sizing [--reps 3]

- agent time: ``mgr-agent --json install`` of the installed package (a no-op) and of an
  upgrade, run directly on the host (median of ``reps``);
- wall per task: a play of 1 and of 11 identical no-op tasks on one SSH host; the
  difference / 10 is what one more task costs (connection set up once, as in a real play),
  without and with the host's daemon running (the role's setup), and for
  ``ansible.builtin.ping`` as the baseline;
- upgrade task: a play upgrading 1.0 -> 1.1 minus the same play when there is nothing to do;
- the 10-host rolling upgrade (every host over SSH, ``serial: 2``, ``forks=10``) and the
  same with ``serial: 10``; then one host's metrics textfile.
Timings are reported, never asserted (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests import sshd as sshd_helper
from tests.helpers import REPO

BIN = Path(sys.executable).parent
TEXTFILE = "var/lib/node-exporter/mgr_agent.prom"


class Bench:
    def __init__(self, work: Path, server: sshd_helper.Sshd) -> None:
        self.work = work
        self.server = server
        self.files = work / "files"
        write_zip(ispmanager_files("demo", "1.0"), self.files / "demo-1.0.zip")
        write_zip(ispmanager_files("demo", "1.1"), self.files / "demo-1.1.zip")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MGR_AGENT_"))}
        (work / "home").mkdir()
        self.env.update(HOME=str(work / "home"), ANSIBLE_COLLECTIONS_PATH=str(REPO / "deploy"),
                        ANSIBLE_PIPELINING="1", ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_NOCOLOR="1",
                        ANSIBLE_RETRY_FILES_ENABLED="0", MGR_AGENT_NO_JOURNAL="1")

    def root(self, name: str, version: str | None = None) -> Path:
        root = self.work / "hosts" / name
        (root / "usr/local/mgr5/etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/mgr-agent").mkdir(parents=True, exist_ok=True)
        (root / "etc/mgr-agent/agent.toml").write_text(f'[metrics]\ntextfile = "/{TEXTFILE}"\n')
        if version:
            self.agent(root, "install", str(self.files / f"demo-{version}.zip"))
        return root

    def agent(self, root: Path, *args: str) -> float:
        started = time.monotonic()
        subprocess.run([str(BIN / "mgr-agent"), "--root", str(root), "--json", "--no-daemon", *args],
                       check=True, capture_output=True, env=self.env)
        return time.monotonic() - started

    def daemon(self, root: Path) -> subprocess.Popen[bytes]:
        """The host's daemon (as the role sets up); returns once its socket exists."""
        argv = [sys.executable, "-m", "mgr_agent", "--root", str(root), "daemon", "--group", "0"]
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = root / "run/mgr-agent/agent.sock"
        while not sock.exists():      # bound before it serves; connections queue until then
            if proc.poll() is not None:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.02)
        return proc

    def inventory(self, hosts: dict[str, Path]) -> Path:
        lines = ["[panels]"] + [
            " ".join([name, f"mgr_agent_root={root}", f"mgr_agent_executable={BIN / 'mgr-agent'}",
                      "ansible_python_interpreter=/usr/bin/python3", *self.server.inventory_fields()])
            for name, root in hosts.items()]
        path = self.work / "inventory.ini"
        path.write_text("\n".join(lines) + "\n")
        return path

    def playbook(self, tasks: int, package: str | None) -> Path:
        """``tasks`` identical plugin tasks (or ``ansible.builtin.ping`` tasks, the baseline,
        when ``package`` is None)."""
        task: dict[str, object] = {"name": "ping", "ansible.builtin.ping": {}}
        if package is not None:
            task = {"name": "plugin", "mgr.agent.plugin": {
                "src": str(self.files / package), "name": "demo", "root": "{{ mgr_agent_root }}",
                "executable": "{{ mgr_agent_executable }}"}}
        play = [{"name": "bench", "hosts": "panels", "gather_facts": False, "tasks": [task] * tasks}]
        path = self.work / f"play-{tasks}-{package}.yml"
        path.write_text(json.dumps(play))
        return path

    def play(self, inventory: Path, playbook: Path, *args: str) -> float:
        started = time.monotonic()
        done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *args],
                              capture_output=True, text=True, env=self.env, check=False)
        took = time.monotonic() - started
        if done.returncode not in (0, 2):
            raise RuntimeError(done.stdout + done.stderr)
        return took


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgr-agent-sizing-") as tmp:
        work = Path(tmp)
        server = sshd_helper.start(work / "sshd")
        try:
            figures = run(Bench(work, server), args.reps)
        finally:
            server.stop()
    print(json.dumps(figures, indent=2))
    return 0


def run(b: Bench, reps: int) -> dict[str, object]:
    out: dict[str, object] = {}
    one = b.root("one", "1.0")
    pkg = b.files / "demo-1.0.zip"
    digest = hashlib.sha256(pkg.read_bytes()).hexdigest()
    out["baseline_agent_version_s"] = median([b.agent(one, "--version") for _ in range(max(reps, 5))])
    out["agent_noop_s"] = median([b.agent(one, "install", "--sha256", digest, "--", str(pkg))
                                  for _ in range(max(reps, 5))])
    upgrades = []
    for i in range(reps):
        root = b.root(f"up{i}", "1.0")
        upgrades.append(b.agent(root, "install", str(b.files / "demo-1.1.zip")))
    out["agent_upgrade_s"] = median(upgrades)

    inventory = b.inventory({"one": one})
    b.play(inventory, b.playbook(1, "demo-1.0.zip"))          # the package reaches the host's cache
    short = [b.play(inventory, b.playbook(1, "demo-1.0.zip")) for _ in range(reps)]
    long = [b.play(inventory, b.playbook(11, "demo-1.0.zip")) for _ in range(reps)]
    per_task = (median(long) - median(short)) / 10
    out["play_1_noop_task_s"] = median(short)
    out["noop_task_wall_s"] = round(per_task, 3)
    daemon = b.daemon(one)
    try:
        d_short = [b.play(inventory, b.playbook(1, "demo-1.0.zip")) for _ in range(reps)]
        d_long = [b.play(inventory, b.playbook(11, "demo-1.0.zip")) for _ in range(reps)]
        out["noop_task_wall_with_daemon_s"] = round((median(d_long) - median(d_short)) / 10, 3)
    finally:
        daemon.terminate()
        daemon.wait(30)
    ping_short = [b.play(inventory, b.playbook(1, None)) for _ in range(reps)]
    ping_long = [b.play(inventory, b.playbook(11, None)) for _ in range(reps)]
    out["baseline_ping_task_wall_s"] = round((median(ping_long) - median(ping_short)) / 10, 3)
    out["load_average"] = os.getloadavg()

    upgrade_plays = []
    for i in range(reps):
        inv = b.inventory({"one": b.root(f"play-up{i}", "1.0")})
        upgrade_plays.append(b.play(inv, b.playbook(1, "demo-1.1.zip")))
    out["upgrade_task_wall_s"] = round(median(upgrade_plays) - median(short) + per_task, 3)

    for serial in (2, 10):
        hosts = {f"h{i:02d}-{serial}": b.root(f"h{i:02d}-{serial}", "1.0") for i in range(1, 11)}
        inv = b.inventory(hosts)
        took = b.play(inv, REPO / "deploy/examples/rolling-upgrade.yml", "-f", "10",
                      "-e", f"plugin_package={b.files}/demo-1.1.zip", "-e", f"batch_size={serial}",
                      "-e", "plugin_name=demo")
        out[f"rolling_upgrade_10_hosts_serial_{serial}_forks_10_s"] = round(took, 2)
    out["metrics_textfile_h01"] = (b.work / "hosts/h01-2" / TEXTFILE).read_text()
    return out


if __name__ == "__main__":
    sys.exit(main())
