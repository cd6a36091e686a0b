"""A real systemd for the system tests: a Debian bookworm root (debootstrap, cached under
/var/cache/mgr-agent-test; ``MGR_AGENT_TEST_CACHE`` moves it) booted with
``systemd-nspawn --boot --register=no --keep-unit`` on a throw-away overlay, driven from
outside with ``nsenter -t PID -a`` (the project's TESTING.md says why those options).

:func:`booted` is the one way the tests get a container. It *skips* (with the reason) only
when the machine cannot be expected to boot one: not root, a tool missing, the root
filesystem or the wheels cannot be fetched. Once those hold, a container that does not boot
or whose systemd does not reach ``running`` is a test *failure*, with the boot log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.waits import wait_for

CACHE = Path(os.environ.get("MGR_AGENT_TEST_CACHE", "/var/cache/mgr-agent-test"))
ROOTFS = CACHE / "rootfs-bookworm"
ROOTFS_OK = ROOTFS / ".mgr-agent-rootfs-ok"
WHEELHOUSE = CACHE / "wheelhouse"
DEPS = ["requests>=2.28", "lxml>=4.9", "psutil>=5.9", "systemd-python>=235"]
INCLUDE = "systemd,systemd-sysv,dbus,python3,python3-venv,passwd"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOTED = ("running", "degraded")


def sh(argv: list[str], *, timeout: float = 300, check: bool = True,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def debian_mirror() -> str:
    """The Debian mirror apt already uses (sources.list or deb822 .sources)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in ("", ".list", ".sources"):
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "bookworm" in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return m.group(1)
    return "http://deb.debian.org/debian"


def why_not() -> str | None:
    """Why this machine cannot boot a container, or None."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container debootstrap)"
    return None


def ensure_rootfs() -> None:
    """debootstrap once; later runs reuse the tree (about 50 s the first time)."""
    if ROOTFS_OK.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "rootfs-bookworm.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(ROOTFS, ignore_errors=True)
    done = sh(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", "bookworm", str(tmp),
               debian_mirror()], timeout=900, check=False)
    if done.returncode != 0:
        pytest.skip(f"debootstrap failed (exit {done.returncode}): {done.stderr[-500:]}")
    tmp.rename(ROOTFS)
    ROOTFS_OK.touch()


def ensure_dependency_wheels() -> None:
    """The agent's dependencies as wheels in WHEELHOUSE (built once, then cached)."""
    marker = WHEELHOUSE / ".deps-ok"
    if marker.exists():
        return
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    done = sh([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(WHEELHOUSE), *DEPS],
              timeout=600, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot build the wheelhouse: {done.stderr[-500:]}")
    marker.touch()


def build_wheel(dest: Path) -> Path:
    """A wheel of this checkout in ``dest``, built from a copy: the checkout stays untouched
    (no build/ or egg-info churn)."""
    with tempfile.TemporaryDirectory() as build:
        shutil.copytree(REPO / "agent", Path(build) / "agent",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy(REPO / "pyproject.toml", build)
        if (REPO / "README.md").exists():
            shutil.copy(REPO / "README.md", build)
        sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), build], timeout=300)
    wheels = list(dest.glob("mgr_agent-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def ensure_wheelhouse() -> Path:
    """The cached dependency wheels plus a fresh wheel of this checkout, in WHEELHOUSE."""
    ensure_dependency_wheels()
    for old in WHEELHOUSE.glob("mgr_agent-*.whl"):
        old.unlink()
    return build_wheel(WHEELHOUSE)


@dataclass
class Container:
    nspawn: subprocess.Popen[bytes]
    init: int
    log: Path            # systemd-nspawn's output; its directory is the test's scratch space
    wheel: str = ""      # the agent's wheel (or wheelhouse), as the test needs it

    def run(self, command: str, *, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``sh -c COMMAND`` inside the container (all its namespaces)."""
        env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        return sh(["nsenter", "-t", str(self.init), "-a", "sh", "-c", command], env=env,
                  check=check, timeout=timeout)

    def popen(self, command: str) -> subprocess.Popen[str]:
        env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        return subprocess.Popen(["nsenter", "-t", str(self.init), "-a", "sh", "-c", command], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def show(self, prop: str, unit: str = "mgr-agent.service") -> str:
        return self.run(f"systemctl show -p {prop} --value {unit}").stdout.strip()

    def wait_until(self, command: str, expected: str, timeout: float = 30) -> str:
        """Until ``command``'s output is ``expected`` (systemd's state: nothing to block on)."""
        last = [""]

        def matches() -> bool:
            last[0] = self.run(command, check=False).stdout.strip()
            return last[0] == expected

        wait_for(matches, what=f"{command!r} to give {expected!r}", timeout=timeout, interval=0.2,
                 seen=lambda: f"{last[0]!r}\n" + self.run("journalctl -u mgr-agent --no-pager | tail -30",
                                                          check=False).stdout)
        return last[0]


def find_init(nspawn: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """The container's PID 1: the child of our systemd-nspawn running systemd."""
    def init() -> int | None:
        for child in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                stat = (child / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == nspawn.pid and "systemd" in (child / "comm").read_text():
                    return int(child.name)
        return None
    return wait_for(init, what="the container's systemd (PID 1) to start", timeout=timeout, interval=0.1,
                    alive=lambda: nspawn.poll() is None)


def stop_container(nspawn: subprocess.Popen[bytes], box: Container | None) -> None:
    """poweroff inside; SIGTERM then SIGKILL to our systemd-nspawn (by its pid) if needed."""
    if nspawn.poll() is None and box is not None:
        box.run("systemctl poweroff --no-block", check=False, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            nspawn.wait(15)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if nspawn.poll() is None:
            nspawn.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                nspawn.wait(15)


def journal(box: Container, *match: str) -> list[dict[str, str]]:
    out = box.run("journalctl --sync; journalctl -u mgr-agent -o json --no-pager " + " ".join(match)).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _wait_for_boot(box: Container, timeout: float = 60) -> None:
    """``systemctl is-system-running --wait`` until it says running (or degraded): the
    namespaces exist a moment before systemd inside can answer."""
    said = [""]

    def up() -> bool:
        done = box.run("systemctl is-system-running --wait", check=False, timeout=120)
        said[0] = f"{done.stdout.strip()!r} {done.stderr[-300:]!r}"
        return done.stdout.strip() in BOOTED

    wait_for(up, what="the container's systemd to reach running", timeout=timeout, interval=0.2,
             alive=lambda: box.nspawn.poll() is None,
             seen=lambda: f"{said[0]}; boot log: {box.log.read_text(errors='replace')[-800:]}")


@contextlib.contextmanager
def booted(name: str, *, binds: Sequence[tuple[Path, str]] = (),
           prepare: Callable[[Path], None] | None = None) -> Iterator[Container]:
    """A container named ``name`` booted on an overlay of the cached root (a copy where
    overlayfs is missing), ``binds`` mounted read-only (host path, path inside), ``prepare``
    called with the root before the boot. Powered off and removed afterwards."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    ensure_rootfs()
    work = Path(tempfile.mkdtemp(prefix=f"mgr-agent-{name}-", dir="/var/tmp"))
    merged, upper, scratch = work / "merged", work / "upper", work / "work"
    for d in (merged, upper, scratch):
        d.mkdir()
    mounted = sh(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={ROOTFS},upperdir={upper},workdir={scratch}", str(merged)], check=False)
    try:
        if mounted.returncode != 0:  # no overlayfs here: a plain copy (slower)
            merged.rmdir()
            sh(["cp", "-a", "--reflink=auto", str(ROOTFS), str(merged)], timeout=600)
        if prepare is not None:
            prepare(merged)
        log = work / "nspawn.log"
        with open(log, "wb") as out:
            nspawn = subprocess.Popen(
                ["systemd-nspawn", "-D", str(merged), "--boot", "--register=no", "--keep-unit", "-M", name,
                 "--console=passive", *(f"--bind-ro={host}:{inside}" for host, inside in binds)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        box: Container | None = None
        try:
            try:
                box = Container(nspawn, find_init(nspawn), log)
                _wait_for_boot(box)
            except AssertionError as exc:
                boot_log = log.read_text(errors="replace")[-800:]
                tail = "" if "boot log:" in str(exc) else f"; boot log: {boot_log}"
                raise AssertionError(f"the container did not boot: {exc}{tail}") from None
            yield box
        finally:
            stop_container(nspawn, box)
    finally:
        if mounted.returncode == 0:
            sh(["umount", str(merged)], check=False)
        shutil.rmtree(work, ignore_errors=True)
