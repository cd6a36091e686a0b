"""Real faults (issue 3, item 4): every failure here is produced by the kernel, not simulated.

- a full disk: a small tmpfs in a private mount namespace (``unshare -m``) gives ENOSPC,
  while staging (the space taken by another process after preflight) and at every other
  point of an upgrade, a rollback and an uninstall (a sweep of the free space, page by page);
- ENOSPC in the switch itself: a tmpfs out of inodes refuses the hard-link backup (link(2));
- a read-only target: a read-only bind mount, made before the command (preflight refuses)
  or by the pre-install hook after preflight (stage or switch fails, rolled back);
  a file bind-mounted read-only onto itself (the switch cannot replace a mount point);
- an immutable directory (``chattr +i``), before the command or from a hook;
- hooks that leave daemons behind, escape with setsid, fail before uninstall, cannot be
  executed, are PHP with a parse error, or print 10 MB.

Every fault must end in the exact old state (``snapshot`` equal byte for byte), no
leftovers, ``info`` still the old version, and an error naming the cause (path and errno
text).  The namespace is held open by a sleeping process; the agent runs in it through
``nsenter`` and the test reads the tree through ``/proc/PID/root``.  Without unshare/mount
(no root, a restricted container) those tests are skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mgr_agent.sandbox.samples import Tree, ispmanager_files, plesk_files, write_zip
from tests.helpers import Run, cli, leftovers, snapshot
from tests.waits import wait_for_file

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
EXT = f"{PSA}/admin/plib/modules/demo-ext"
PHP = shutil.which("php")
Snap = dict[str, tuple[str, int, str]]
_serial = itertools.count()

needs_php = pytest.mark.skipif(PHP is None, reason="Plesk hooks need php (apt-get install php-cli)")


# ------------------------------------------------------------------ a private mount namespace
class Namespace:
    """A private mount namespace held open by a sleeping process.

    Commands enter it with ``nsenter -t PID -m``; the test reads the files as the namespace
    sees them through ``/proc/PID/root``.  Mounts made in it are invisible to the machine
    and vanish with it.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", "echo ready; exec sleep 3600"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            _, err = self.proc.communicate(timeout=10)
            raise OSError(f"unshare -m failed: {err.strip()}")
        self.pid = self.proc.pid

    def enter(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "--", *argv]

    def sh(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.enter("sh", "-c", script), capture_output=True, text=True,
                              timeout=60, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{script!r} failed in the namespace: {done.stderr.strip()}")
        return done

    def cli(self, root: Path, *args: str, timeout: float = 120,
            extra: dict[str, str] | None = None) -> Run:
        """``tests.helpers.cli`` run inside the namespace."""
        argv = self.enter(sys.executable, "-m", "mgr_agent", "--root", str(root), *args, "--json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
        env.update(extra or {})
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
        return Run(done.returncode, done.stdout, done.stderr)

    def view(self, path: Path) -> Path:
        """``path`` as the namespace sees it (through its tmpfs and bind mounts)."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def open_namespace(scratch: Path) -> Namespace:
    """A namespace where tmpfs and bind mounts work, or ``pytest.skip`` saying why not."""
    if os.geteuid() != 0:
        pytest.skip("mount namespaces and mounts need root")
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (util-linux)")
    try:
        ns = Namespace()
    except OSError as exc:
        pytest.skip(f"cannot create a private mount namespace: {exc}")
    scratch.mkdir(parents=True, exist_ok=True)
    probe = shlex.quote(str(scratch))
    done = ns.sh(f"mount -t tmpfs -o size=64k tmpfs {probe} && mount -o remount,ro {probe} "
                 f"&& umount {probe}", check=False)
    if done.returncode != 0:
        ns.close()
        pytest.skip(f"mounting is not permitted here: {done.stderr.strip()}")
    return ns


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    n = open_namespace(tmp_path / "mount-probe")
    try:
        yield n
    finally:
        n.close()


def populate(root: Path, *, margin_zero: bool = True) -> None:
    """The layout of conftest's ``root`` fixture, plus files no version ships."""
    (root / PSA).mkdir(parents=True, exist_ok=True)
    (root / PSA / "version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (root / MGR / "etc").mkdir(parents=True, exist_ok=True)
    (root / MGR / "var").mkdir(parents=True, exist_ok=True)
    (root / MGR / "var/demo.output").write_text("Good job!\n")  # made by the panel at run time
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    if margin_zero:
        # preflight adds 16 MiB by default: with no margin the disk can fill up after it
        (root / "etc/mgr-agent").mkdir(parents=True, exist_ok=True)
        (root / "etc/mgr-agent/agent.toml").write_text("[preflight]\nfree_space_margin = 0\n")


def tmpfs_root(ns: Namespace, root: Path, *, at: str, options: str) -> Path:
    """A sandbox root whose ``at`` (root-relative, "" for all of it) is a fresh tmpfs in ``ns``."""
    (root / at).mkdir(parents=True, exist_ok=True)
    ns.sh(f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(root / at))}")
    populate(ns.view(root))
    return root


# ------------------------------------------------------------------ packages and checks
ISP_V1 = {"etc/sql/demo.addon/old_field": (b"old field\n", 0o644),  # 2.0 drops it: alone in its dir
          "skins/common/img/demo/logo.png": (b"\x89PNG 1.0\n", 0o644)}
ISP_V2 = {"skins/common/img/demo/logo.png": (b"\x89PNG 2.0\n", 0o644),
          "skins/common/img/demo/new.png": (b"\x89PNG new\n", 0o644),
          "addon/demo-extra.sh": (b"#!/bin/sh\necho extra\n", 0o755)}  # first op switched in 2.0
EXT_V1 = {"htdocs/legacy/old.js": (b"// 1.0\n", 0o644)}  # 1.1 drops it: alone in its dir
REMOVED_ONLY = {"ispmanager": (f"{MGR}/etc/sql/demo.addon", "old_field"),
                "plesk": (f"{PSA}/admin/htdocs/modules/demo-ext/legacy", "old.js")}
REPLACED = {"ispmanager": f"{MGR}/skins/common/img/demo/logo.png",
            "plesk": f"{PSA}/admin/htdocs/modules/demo-ext/css/style.css"}
NAME = {"ispmanager": "demo", "plesk": "demo-ext"}
OLD = {"ispmanager": "1.0", "plesk": "1.0-1"}


def zip_of(tree: Tree, pkgs: Path) -> Path:
    return write_zip(tree, pkgs / f"pkg-{next(_serial)}.zip")


def isp(pkgs: Path, version: str, extra: Tree | None = None, **hooks: str) -> Path:
    return zip_of(ispmanager_files("demo", version, extra=extra, **hooks), pkgs)


def ext(pkgs: Path, version: str, extra: Tree | None = None, **hooks: str) -> Path:
    return zip_of(plesk_files("demo-ext", version, extra=extra, **hooks), pkgs)


def shell_hook(panel: str, script: str) -> str:
    """A hook body running ``script`` with /bin/sh, for either panel; fails if it fails."""
    if panel == "ispmanager":
        return f"{script}\n"
    return f"system({json.dumps(script)}, $rc); exit($rc);"


def versions(panel: str, pkgs: Path, **hooks: str) -> tuple[Path, Path]:
    """1.0 and an upgrade (2.0 / 1.1) that adds, replaces and removes, with ``hooks`` in it."""
    if panel == "ispmanager":
        return isp(pkgs, "1.0", ISP_V1), isp(pkgs, "2.0", ISP_V2, **hooks)
    return ext(pkgs, "1.0", EXT_V1), ext(pkgs, "1.1", None, **hooks)


def ok(run: Run) -> dict[str, Any]:
    assert run.rc == 0, (run.stdout, run.stderr)
    return run.json


def failure(run: Run, rc: int, code: str, cause_code: str | None = None) -> dict[str, Any]:
    """The error object of a run that must have failed with exit ``rc`` and ``code``."""
    assert run.rc == rc, f"exit {run.rc}, expected {rc}: {run.stdout[-3000:]} {run.stderr[-2000:]}"
    err = run.json["error"]
    assert err["code"] == code, err
    if cause_code is not None:
        assert err["details"]["cause_code"] == cause_code, err
    assert run.json["changed"] is False
    return err  # type: ignore[no-any-return]


def unchanged(tree: Path, before: Snap, *, ignore: tuple[str, ...] = ()) -> None:
    """The managed tree is exactly ``before`` (minus ``ignore``d paths) and nothing is left over."""
    after = snapshot(tree)
    for path in ignore:
        after = {k: v for k, v in after.items() if k != path and not k.startswith(path + "/")}
        before = {k: v for k, v in before.items() if k != path and not k.startswith(path + "/")}
    diff = sorted(set(after.items()) ^ set(before.items()))
    assert after == before, f"tree changed: {diff[:10]}"
    assert leftovers(tree) == []


def still(run_info: Run, version: str) -> None:
    assert run_info.rc == 0, run_info.stdout
    assert run_info.json["version"] == version


def cause_problem(err: dict[str, Any], path: Path, *errno_texts: str) -> str | None:
    """What is wrong with an error message that should name ``path`` and the errno text."""
    msg = err["message"]
    if str(path) not in msg:
        return f"the message does not name {path}: {msg}"
    if not any(t in msg for t in errno_texts):
        return f"the message does not say {' or '.join(errno_texts)}: {msg}"
    return None


def names_cause(err: dict[str, Any], path: Path, *errno_texts: str) -> None:
    problem = cause_problem(err, path, *errno_texts)
    assert problem is None, problem


# ------------------------------------------------------------------ full disk
@pytest.mark.root
def test_disk_filled_after_preflight_fails_staging_and_changes_nothing(ns: Namespace, tmp_path: Path) -> None:
    """Another process fills the disk between preflight and staging (here: the pre-install hook)."""
    root = tmpfs_root(ns, tmp_path / "root", at="usr/local", options="size=4m")
    view = ns.view(root)
    pkgs = tmp_path / "pkgs"
    blob = os.urandom(512 * 1024)  # a larger 2.0
    ok(ns.cli(root, "install", str(isp(pkgs, "1.0", ISP_V1))))
    before = snapshot(view)
    fill = 'dd if=/dev/zero of="$MGR_AGENT_ROOT/usr/local/ballast" bs=4k 2>/dev/null; exit 0'
    big = {**ISP_V2, "skins/common/img/demo/big.bin": (blob, 0o644)}
    run = ns.cli(root, "install", str(isp(pkgs, "2.0", big, pre_install=fill)))
    err = failure(run, 10, "stage-failed")
    assert err["details"]["errno"] == 28
    problem = cause_problem(err, root / MGR, "No space left on device")
    st = os.statvfs(view / "usr/local")
    assert st.f_bavail * st.f_frsize < 64 * 1024, "the disk was really full"
    unchanged(view, before, ignore=("usr/local/ballast",))
    still(ns.cli(root, "info", "demo"), "1.0")
    assert ok(ns.cli(root, "history"))["data"][0]["status"] == "failed"
    # once there is space again, the same upgrade goes through
    (view / "usr/local/ballast").unlink()
    assert ok(ns.cli(root, "install", str(isp(pkgs, "2.0", big))))["action"] == "upgraded"
    assert (view / MGR / "skins/common/img/demo/big.bin").read_bytes() == blob
    assert not (view / MGR / "etc/sql/demo.addon").exists()
    assert leftovers(view) == []
    assert not problem, problem


@dataclass
class Trial:
    """One command run with ``free_kib`` free on a root that lives entirely on one tmpfs."""

    command: str
    free_kib: int
    run: Run
    tree_kept: bool  # the managed tree is exactly the one before the command
    info: str | None  # the version `info demo` reports afterwards
    leftovers: list[str]
    root: Path


def _set_free(view: Path, ballast: Path, free_kib: int) -> None:
    """Leave ``free_kib`` KiB free on the filesystem of ``view`` (a real, allocated ballast)."""
    ballast.write_bytes(b"")
    st = os.statvfs(view)
    size = st.f_bavail * st.f_frsize - free_kib * 1024
    fd = os.open(ballast, os.O_WRONLY)
    try:
        if size > 0:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def _sweep(ns: Namespace, root: Path, command: list[str], new_version: str | None) -> list[Trial]:
    """Run ``command`` with less and less space taken away until it succeeds.

    Starts with a full disk, then from just below preflight's estimate upwards, one page
    (4 KiB) at a time: every point where the journal, the staged files, the stored archive
    or the SQLite commit runs out of space is hit.
    """
    view = ns.view(root)
    ballast = view / "ballast"

    def trial(free_kib: int) -> Trial:
        _set_free(view, ballast, free_kib)
        before = snapshot(view)
        run = ns.cli(root, *command)
        info = ns.cli(root, "info", "demo")
        version = info.json.get("version") if info.rc == 0 else None
        after = snapshot(view)
        return Trial(command[0], free_kib, run, after == before, version, leftovers(view), root)

    trials = [trial(0)]
    probe = trial(4)
    trials.append(probe)
    need = 0
    if probe.run.rc != 0 and (m := re.search(r"needs (\d+) KiB", probe.run.stdout)):
        need = int(m.group(1))
    for free in range(max(need - 4, 8), need + 400, 4):
        trials.append(trial(free))
        if trials[-1].run.rc == 0:
            break
    last = trials[-1]
    assert last.run.rc == 0, f"{command} still fails with {last.free_kib} KiB free: {last.run.stdout}"
    assert last.info == new_version
    assert all(t.run.rc != 0 for t in trials[:-1])
    ballast.unlink()
    return trials


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Trial]]:
    """An upgrade, a rollback and an uninstall, each tried on a full disk page by page."""
    base = tmp_path_factory.mktemp("full-disk")
    ns = open_namespace(base / "mount-probe")
    try:
        root = tmpfs_root(ns, base / "root", at="", options="size=8m")
        pkgs = base / "pkgs"
        blob = os.urandom(300_000)
        ok(ns.cli(root, "install", str(isp(pkgs, "1.0", ISP_V1))))
        v2 = isp(pkgs, "2.0", {**ISP_V2, "skins/common/img/demo/blob.bin": (blob, 0o644)})
        trials = _sweep(ns, root, ["install", str(v2)], "2.0")
        trials += _sweep(ns, root, ["rollback", "demo"], "1.0")
        trials += _sweep(ns, root, ["uninstall", "demo"], None)
        yield trials
    finally:
        ns.close()


OLD_OF = {"install": "1.0", "rollback": "2.0", "uninstall": "1.0"}  # installed before each sweep


@pytest.mark.root
@pytest.mark.slow
def test_full_disk_at_every_point_keeps_the_exact_old_state(full_disk: list[Trial]) -> None:
    failed = [t for t in full_disk if t.run.rc != 0]
    assert len(failed) >= 20, "the sweep should hit many points"
    for t in failed:
        where = f"{t.command} with {t.free_kib} KiB free: exit {t.run.rc}: {t.run.stdout[-600:]}"
        assert t.tree_kept, f"tree changed: {where}"
        assert t.leftovers == [], where
        assert t.info == OLD_OF[t.command], where
    # and, in the same sweep, the points really were reached
    codes = {t.run.json["error"]["code"] for t in failed if t.run.stdout.strip()}
    assert {"preflight-failed", "rolled-back"} <= codes, codes


@pytest.mark.root
@pytest.mark.slow
def test_full_disk_at_every_point_names_the_cause(full_disk: list[Trial]) -> None:
    bad = []
    for t in (t for t in full_disk if t.run.rc != 0):
        err: dict[str, Any] = (t.run.json["error"] if t.run.stdout.strip()
                               else {"code": "?", "message": t.run.stderr})
        cause = (err.get("details") or {}).get("cause_code", err["code"])
        msg = err["message"]
        good = (t.run.rc in (8, 10) and cause not in ("internal-error", "state-corrupt")
                and any(s in msg for s in ("No space left on device", "disk is full", "KiB free"))
                and str(t.root) in msg)
        if not good:
            bad.append(f"{t.command} @ {t.free_kib} KiB: exit {t.run.rc} {err['code']}/{cause}: {msg[:160]}")
    assert not bad, "\n".join(bad)


@pytest.mark.root
@pytest.mark.parametrize("switch", ["whole", "per-file"])
def test_enospc_in_the_switch_is_rolled_back(ns: Namespace, tmp_path: Path, switch: str) -> None:
    """A tmpfs out of inodes: staging fits exactly, then link(2) for the first backup fails.

    On tmpfs a hard link takes an inode slot; on ext4 the same error comes when a
    directory needs a new block.  Renames never need space.  2.0's files under
    skins/common/img/demo/ are staged as one tree (one more inode, the tree's directory)
    and exchanged whole, before the per-file ops; ``per-file``: no RENAME_EXCHANGE.
    """
    env = {"MGR_AGENT_NO_EXCHANGE": "1"} if switch == "per-file" else {}
    probe = tmp_path / "probe"
    probe.mkdir()
    q = shlex.quote(str(probe))
    done = ns.sh(f"mount -t tmpfs -o size=64k,nr_inodes=2 tmpfs {q} && : > {q}/a && ln {q}/a {q}/b",
                 check=False)
    if "No space left" not in done.stderr:
        pytest.skip(f"this kernel's tmpfs does not count hard links against nr_inodes: {done.stderr}")
    root = tmpfs_root(ns, tmp_path / "root", at="usr/local", options="size=4m,nr_inodes=200")
    view = ns.view(root)
    pkgs = tmp_path / "pkgs"
    ok(ns.cli(root, "install", str(isp(pkgs, "1.0", ISP_V1))))
    plan = ok(ns.cli(root, "install", str(isp(pkgs, "2.0", ISP_V2)), "--dry-run"))["plan"]
    staged = plan["summary"]["add"] + plan["summary"]["replace"]  # 2.0 creates no directory
    staged += switch == "whole"  # the staged tree's own directory
    assert plan["add"][0] == f"{MGR}/addon/demo-extra.sh", "an add is switched before the failure"
    (view / "usr/local/fill").mkdir()
    # after preflight, leave exactly as many free inodes as staging takes
    take = (f'fill="$MGR_AGENT_ROOT/usr/local/fill"; i=0; free=$(stat -f -c %d "$fill"); '
            f'while [ $((free - i)) -gt {staged} ]; do : > "$fill/f$i" || exit 1; i=$((i+1)); done')
    before = snapshot(view)
    run = ns.cli(root, "install", str(isp(pkgs, "2.0", ISP_V2, pre_install=take)), extra=env)
    err = failure(run, 8, "rolled-back", "switch-failed")
    first_replace = root / plan["replace"][0]
    names_cause(err, first_replace, "No space left on device")
    assert err["details"]["errno"] == 28
    unchanged(view, before, ignore=("usr/local/fill",))
    still(ns.cli(root, "info", "demo"), "1.0")
    assert ok(ns.cli(root, "history"))["data"][0]["status"] == "rolled_back"


# ------------------------------------------------------------------ read-only targets
@pytest.mark.root
@pytest.mark.parametrize("panel", ["ispmanager", pytest.param("plesk", marks=needs_php)])
def test_read_only_after_preflight_fails_the_switch_and_rolls_back(
        ns: Namespace, root: Path, pkgs: Path, panel: str) -> None:
    """The pre-install hook (after preflight) remounts a directory read-only.  Nothing is
    staged there (its only file is being removed), so the switch itself gets EROFS, after
    every add and replace was already switched: all of them are undone."""
    directory, name = REMOVED_ONLY[panel]
    target = root / directory
    remount = shell_hook(panel, f"mount -o remount,ro,bind {shlex.quote(str(target))}")
    old, new = versions(panel, pkgs, pre_install=remount)
    ok(ns.cli(root, "install", str(old)))
    ns.sh(f"mount --bind {shlex.quote(str(target))} {shlex.quote(str(target))}")
    before = snapshot(root)
    run = ns.cli(root, "install", str(new))
    err = failure(run, 8, "rolled-back", "switch-failed")
    names_cause(err, target / name, "Read-only file system")
    assert err["details"]["errno"] == 30
    assert run.json["plan"]["summary"]["replace"] >= 2, "there was something to roll back"
    unchanged(root, before)
    still(ns.cli(root, "info", NAME[panel]), OLD[panel])
    hist = ok(ns.cli(root, "history"))["data"][0]
    assert hist["status"] == "rolled_back" and "Read-only file system" in json.dumps(hist)


@pytest.mark.root
@pytest.mark.parametrize("which", ["removed-file-dir", "replaced-file-dir"])
def test_read_only_before_the_command_is_refused_by_preflight(
        ns: Namespace, root: Path, pkgs: Path, which: str) -> None:
    old, new = versions("ispmanager", pkgs)
    ok(ns.cli(root, "install", str(old)))
    target = root / (REMOVED_ONLY["ispmanager"][0] if which == "removed-file-dir"
                     else REPLACED["ispmanager"].rpartition("/")[0])
    ns.sh(f"mount --bind -o ro {shlex.quote(str(target))} {shlex.quote(str(target))}")
    before = snapshot(root)
    run = ns.cli(root, "install", str(new))
    err = failure(run, 10, "preflight-failed")
    names_cause(err, target, "read-only")
    assert run.json["hooks"] == [], "refused before any hook ran"
    unchanged(root, before)
    still(ns.cli(root, "info", "demo"), "1.0")


@pytest.mark.root
def test_read_only_from_the_hook_where_files_are_staged_fails_staging(
        ns: Namespace, root: Path, pkgs: Path) -> None:
    target = root / REPLACED["ispmanager"].rpartition("/")[0]
    quoted = shlex.quote(str(target))
    old, new = versions("ispmanager", pkgs, pre_install=f"mount -o remount,ro,bind {quoted}")
    ok(ns.cli(root, "install", str(old)))
    ns.sh(f"mount --bind {quoted} {quoted}")
    before = snapshot(root)
    run = ns.cli(root, "install", str(new))
    err = failure(run, 10, "stage-failed")
    names_cause(err, target, "Read-only file system")
    unchanged(root, before)
    still(ns.cli(root, "info", "demo"), "1.0")


@pytest.mark.root
def test_file_bind_mounted_read_only_onto_itself_is_rolled_back(
        ns: Namespace, root: Path, pkgs: Path) -> None:
    """A read-only bind mount of one file (as container runtimes do with resolv.conf).

    Its directory is writable, so preflight passes; the switch cannot put a file in place
    of a mount point (link(2): EXDEV, rename(2): EBUSY, write: EROFS) and rolls back.
    """
    old, new = versions("ispmanager", pkgs)
    ok(ns.cli(root, "install", str(old)))
    target = root / REPLACED["ispmanager"]
    ns.sh(f"mount --bind -o ro {shlex.quote(str(target))} {shlex.quote(str(target))}")
    before = snapshot(root)
    run = ns.cli(root, "install", str(new))
    err = failure(run, 8, "rolled-back", "switch-failed")
    names_cause(err, target, "Invalid cross-device link", "Device or resource busy",
                "Read-only file system")
    unchanged(root, before)
    still(ns.cli(root, "info", "demo"), "1.0")


# ------------------------------------------------------------------ immutable directories
@contextlib.contextmanager
def mutable_again(*paths: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for path in paths:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)


def _chattr_works(path: Path) -> None:
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {done.stderr.strip()}")


@pytest.mark.root
@pytest.mark.parametrize(("which", "rc", "code", "env"), [
    ("removed-file-dir", 8, "rolled-back", {}),  # nothing staged there: the switch fails
    # the plugin's own folder is staged as a tree beside it: its exchange fails
    ("replaced-file-dir", 8, "rolled-back", {}),
    # without RENAME_EXCHANGE the staged file cannot be created in it
    ("replaced-file-dir", 10, "stage-failed", {"MGR_AGENT_NO_EXCHANGE": "1"}),
], ids=["removed-file-dir", "replaced-file-dir", "replaced-file-dir-per-file"])
def test_directory_made_immutable_after_preflight(root: Path, pkgs: Path, which: str, rc: int,
                                                  code: str, env: dict[str, str]) -> None:
    target = root / (REMOVED_ONLY["ispmanager"][0] if which == "removed-file-dir"
                     else REPLACED["ispmanager"].rpartition("/")[0])
    old, new = versions("ispmanager", pkgs, pre_install=f"chattr +i {shlex.quote(str(target))}")
    ok(cli(root, "install", str(old)))
    _chattr_works(target)
    before = snapshot(root)
    with mutable_again(target):
        run = cli(root, "install", str(new), env=env)
        err = failure(run, rc, code, "switch-failed" if rc == 8 else None)
        names_cause(err, target, "Operation not permitted")
        assert err["details"]["errno"] == 1
        unchanged(root, before)
        still(cli(root, "info", "demo"), "1.0")
        # preflight names the immutable directory when it is so before the command
        run = cli(root, "install", str(versions("ispmanager", pkgs)[1]))
        err = failure(run, 10, "preflight-failed")
        names_cause(err, target, "immutable")
        unchanged(root, before)


@pytest.mark.root
def test_uninstall_into_an_immutable_directory_is_rolled_back(root: Path, pkgs: Path) -> None:
    target = root / REMOVED_ONLY["ispmanager"][0]
    freeze = f"#!/bin/sh\nchattr +i {shlex.quote(str(target))}\n".encode()
    ok(cli(root, "install", str(isp(pkgs, "1.0", {**ISP_V1, "scripts/pre-uninstall": (freeze, 0o755)}))))
    _chattr_works(target)
    before = snapshot(root)
    with mutable_again(target):
        run = cli(root, "uninstall", "demo")
        err = failure(run, 8, "rolled-back", "switch-failed")
        names_cause(err, target / "old_field", "Operation not permitted")
        assert run.json["plan"]["summary"]["remove"] > 3, "other files were removed, then put back"
        unchanged(root, before)
        still(cli(root, "info", "demo"), "1.0")


# ------------------------------------------------------------------ hooks
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _pid(marker: Path, timeout: float = 5) -> int:
    return int(wait_for_file(marker, lambda text: text.strip().isdigit() and text.endswith(b"\n"),
                             what=f"a pid in {marker}", timeout=timeout))


def _kill(marker: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(marker.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("spawn", [
    "nohup sleep 300 >/dev/null 2>&1 & echo $! > {m}",  # a daemon that let go of the output
    "sleep 300 & echo $! > {m}",  # keeps the output pipe open: must not hold the agent
])
def test_post_install_hook_leaving_a_child_behind(root: Path, pkgs: Path, spawn: str) -> None:
    marker = root.parent / "child.pid"
    hook = spawn.format(m=shlex.quote(str(marker))) + "\nexit 0"
    try:
        start = time.monotonic()
        doc = ok(cli(root, "install", str(isp(pkgs, "1.0", post_install=hook))))
        seconds = time.monotonic() - start
        assert doc["action"] == "installed" and doc["hooks"][-1]["exit_code"] == 0
        assert seconds < 10, f"the agent waited {seconds:.1f} s for the hook's child"
        pid = _pid(marker)
        assert not _alive(pid), "the child left in the hook's process group was not killed"
        assert leftovers(root) == []
    finally:
        _kill(marker)


@pytest.mark.parametrize("holds_output", [True, False])
def test_setsid_child_escapes_but_does_not_hold_the_agent(root: Path, pkgs: Path,
                                                          holds_output: bool) -> None:
    """docs/hooks.md: a process that starts its own session leaves the hook's group and is
    not tracked.  This pins that limit down, and that the agent still finishes promptly."""
    marker = root.parent / "escaped.pid"
    inner = shlex.quote(f"echo $$ > {shlex.quote(str(marker))}; exec sleep 300")
    redirect = "" if holds_output else " </dev/null >/dev/null 2>&1"
    hook = f"setsid sh -c {inner}{redirect} &\nsleep 0.2\nexit 0"
    try:
        start = time.monotonic()
        ok(cli(root, "install", str(isp(pkgs, "1.0", post_install=hook))))
        seconds = time.monotonic() - start
        assert seconds < 10, f"the agent waited {seconds:.1f} s for an escaped process"
        pid = _pid(marker)
        assert _alive(pid) and os.getsid(pid) == pid, "escaped into its own session (documented)"
    finally:
        _kill(marker)


@pytest.mark.parametrize("panel", ["ispmanager", pytest.param("plesk", marks=needs_php)])
def test_failing_pre_uninstall_removes_nothing(root: Path, pkgs: Path, panel: str) -> None:
    if panel == "ispmanager":
        refuse = b"#!/bin/sh\necho 'sites still use demo: example.com' >&2\nexit 3\n"
        pkg = isp(pkgs, "1.0", {"scripts/pre-uninstall": (refuse, 0o755)})
    else:
        refuse = b'<?php\necho "sites still use demo-ext: example.com\\n";\nexit(3);\n'
        pkg = ext(pkgs, "1.0", {"plib/scripts/pre-uninstall.php": (refuse, 0o644)})
    ok(cli(root, "install", str(pkg)))
    before = snapshot(root)
    run = cli(root, "uninstall", NAME[panel], "--purge")
    err = failure(run, 7, "hook-failed")
    assert "sites still use" in err["message"] and "exited with 3" in err["message"]
    assert run.json["action"] == "failed"
    unchanged(root, before)
    still(cli(root, "info", NAME[panel]), OLD[panel])
    assert ok(cli(root, "history"))["data"][0]["status"] == "failed"


def test_hook_mode_in_the_archive_does_not_matter(root: Path, pkgs: Path) -> None:
    """docs/hooks.md: the scratch copy is 0700 whatever the archive says."""
    tree = ispmanager_files("demo", "1.0")
    tree["scripts/pre-install"] = (b"#!/bin/sh\necho ran as 0644\n", 0o644)
    doc = ok(cli(root, "install", str(zip_of(tree, pkgs))))
    assert doc["hooks"][0]["output"] == "ran as 0644\n"


@pytest.mark.parametrize(("hook", "rc", "code"), [("pre-install", 7, "hook-failed"),
                                                  ("post-install", 8, "rolled-back")])
def test_hook_without_shebang_is_a_clear_error(root: Path, pkgs: Path, hook: str, rc: int,
                                               code: str) -> None:
    ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    before = snapshot(root)
    tree = ispmanager_files("demo", "1.1")
    tree[f"scripts/{hook}"] = (b"echo this is not a script\nexit 0\n", 0o755)
    run = cli(root, "install", str(zip_of(tree, pkgs)))
    err = failure(run, rc, code)
    assert "neither a script with a #! line" in err["message"] and hook in err["message"], \
        err["message"]
    unchanged(root, before)
    still(cli(root, "info", "demo"), "1.0")


def test_hook_with_a_missing_interpreter_is_a_clear_error(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    before = snapshot(root)
    tree = ispmanager_files("demo", "1.1")
    tree["scripts/pre-install"] = (b"#!/opt/nowhere/bin/sh\nexit 0\n", 0o755)
    run = cli(root, "install", str(zip_of(tree, pkgs)))
    err = failure(run, 7, "hook-failed")
    assert "pre-install" in err["message"] and "No such file or directory" in err["message"], err
    unchanged(root, before)
    still(cli(root, "info", "demo"), "1.0")


@needs_php
@pytest.mark.parametrize("hook", ["pre-install", "post-install"])
def test_plesk_hook_with_a_php_parse_error(root: Path, pkgs: Path, hook: str) -> None:
    """The check inside install lints the hooks (php -l): refused before any hook runs."""
    ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    before = snapshot(root)
    broken = 'echo "migrating" exit(0);'  # a missing ';': PHP exits 255
    run = cli(root, "install", str(ext(pkgs, "1.1", None, **{hook.replace("-", "_"): broken})))
    err = failure(run, 3, "invalid-package")
    assert err["details"]["rule"] == "php-syntax" and err["details"]["path"] == f"plib/scripts/{hook}.php"
    assert "Parse error" in err["message"] and "syntax error" in err["message"], err["message"]
    assert run.json["hooks"] == []
    unchanged(root, before)
    still(cli(root, "info", "demo-ext"), "1.0-1")


TEN_MB = 10 * 1024 * 1024
LIMIT = 64 * 1024
DROPPED = re.compile(r"\n\[\.\.\. (\d+) bytes of output dropped \.\.\.\]\n")


def _bounded(output: str, printed: int) -> None:
    assert len(output.encode()) <= LIMIT + 100, len(output)
    m = DROPPED.search(output)
    assert m is not None, output[:200]
    kept = len(output.encode()) - len(m.group(0).encode())
    assert int(m.group(1)) + kept == printed, "head + dropped + tail = everything printed"


def test_hook_printing_10_mb_is_bounded(root: Path, pkgs: Path) -> None:
    loud = f"head -c {TEN_MB} /dev/zero | tr '\\000' x; echo; echo END"
    doc = ok(cli(root, "install", str(isp(pkgs, "1.0", post_install=loud))))
    out = doc["hooks"][-1]["output"]
    head = "post-install install: demo 1.0\n"
    assert out.startswith(head + "xxxx") and out.endswith("xxxx\nEND\n")
    _bounded(out, len(head) + TEN_MB + len("\nEND\n"))
    hist = ok(cli(root, "history"))["data"][0]
    assert hist["status"] == "committed"
    assert max(len(h["output"]) for h in hist["hooks"]) <= LIMIT + 100
    assert (root / MGR / "addon/demo.py").is_file()


def test_failing_hook_printing_10_mb_gives_a_bounded_error(root: Path, pkgs: Path) -> None:
    loud = f"head -c {TEN_MB} /dev/zero | tr '\\000' y; echo; echo 'the real reason'; exit 3"
    run = cli(root, "install", str(isp(pkgs, "1.0", pre_install=loud)))
    err = failure(run, 7, "hook-failed")
    assert len(run.stdout) < 4 * LIMIT, "message, details.output and hooks[].output are each bounded"
    assert err["message"].startswith("pre-install hook of demo exited with 3: pre-install install")
    assert err["message"].endswith("the real reason"), "the tail, where the reason is, is kept"
    _bounded(err["details"]["output"], len("pre-install install: demo 1.0\n") + TEN_MB
             + len("\nthe real reason\n"))
    assert ok(cli(root, "list"))["data"] == []
    assert leftovers(root) == []
