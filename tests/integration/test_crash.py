"""Crash safety (DESIGN §5): SIGKILL the real CLI at every fault point, then ``recover``.

Each scenario's "before" root is built once and copied per case; a reference copy runs
the same command without a fault.  After kill + recover the managed tree must equal one
of the two exactly (the old one up to ``before-commit``, the new one at ``after-commit``),
the state database must agree, nothing may be left behind, and recovery must be idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from mgr_agent.sandbox import samples
from mgr_agent.sandbox.standin import install_plesk_standin
from tests.helpers import cli, full_snapshot, leftovers, snapshot
from tests.waits import wait_for_file

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
POINTS = ("after-begin", "after-pre-hook", "mid-stage", "before-staged", "after-staged",
          "after-switching", "mid-switch", "before-switched", "after-switched", "after-post-hook",
          "before-commit", "after-commit")
# the whole-directory switch: after a staged tree is made (its directories and hard links),
# after its switch-dir record and before its renameat2, after the commit before an old tree
# is deleted
DIR_POINTS = ("dir-staged", "before-switch-dir", "before-drop-dir")
Snap = dict[str, tuple[str, int, str]]
State = tuple[list[tuple[str, str, str, int]], dict[str, Any] | None]


def _write(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _packages(dest: Path) -> None:
    """v1/v2 of an ispmanager plugin and a Plesk extension; v2 adds, replaces, removes, keeps."""
    isp1 = {"etc/sql/demo.addon/old_field": (b"old field\n", 0o644),
            "addon/demo-lib/util.sh": (b"#!/bin/sh\necho util\n", 0o755)}
    isp2 = {"addon/demo-lib/util.sh": isp1["addon/demo-lib/util.sh"],
            "addon/demo-lib/extra.sh": (b"#!/bin/sh\necho extra\n", 0o755),
            "skins/common/img/demo/new.png": (b"\x89PNG v2\n", 0o644),
            "etc/templates/nginx-vhosts.template": (b"server { # demo 2.0\n}\n", 0o644)}
    ext1 = {"plib/library/Legacy.php": (b"<?php // legacy\n", 0o644),
            "htdocs/img/old.png": (b"\x89PNG old\n", 0o644)}
    ext2 = {"htdocs/img/new.png": (b"\x89PNG new\n", 0o644),
            "plib/views/index.phtml": (b"<p>2.0</p>\n", 0o644),
            "var/defaults.json": (b'{"default": 2}\n', 0o644)}
    samples.write_zip(samples.ispmanager_files("demo", "1.0", extra=isp1), dest / "isp1.zip")
    samples.write_zip(samples.ispmanager_files("demo", "2.0", extra=isp2), dest / "isp2.zip")
    samples.write_zip(samples.plesk_files("demo-ext", "1.0", extra=ext1), dest / "ext1.zip")
    samples.write_zip(samples.plesk_files("demo-ext", "2.0", extra=ext2), dest / "ext2.zip")
    samples.write_zip(samples.ispmanager_files("other", "1.0"), dest / "other.zip")


def _isp_runtime(root: Path) -> None:
    """A panel file a plugin may replace, and files no version shipped (run-time data)."""
    _write(root, f"{MGR}/etc/templates/nginx-vhosts.template", b"server { # panel original\n}\n")
    _write(root, f"{MGR}/var/demo.output", b"Good job!\n", 0o600)
    _write(root, f"{MGR}/addon/demo-lib/state.json", b'{"runs": 3}\n')


def _plesk_data(root: Path) -> None:
    """var/ data left by an earlier, non-purged installation."""
    _write(root, f"{PSA}/var/modules/demo-ext/settings.json", b'{"edited": "by the admin"}\n', 0o640)


def _plesk_admin(root: Path) -> None:
    """The admin edited var/ data; the extension created files at run time."""
    _plesk_data(root)
    _write(root, f"{PSA}/var/modules/demo-ext/cache/sessions.db", b"session data\n", 0o600)
    _write(root, f"{PSA}/admin/plib/modules/demo-ext/runtime.cache", b"cache\n")


EDITED = (f"{MGR}/skins/common/img/demo.txt", f"{MGR}/etc/sql/demo.addon/old_field",
          f"{MGR}/addon/demo-lib/util.sh")


def _plesk_standin(root: Path) -> None:
    """Plesk's extension utility (the stand-in): its registry is a file in the tree."""
    install_plesk_standin(root / PSA)


def _isp_edited(root: Path) -> None:
    """The admin edited installed files: one 2.0 replaces, one it drops, one it ships unchanged."""
    _write(root, f"{MGR}/skins/common/img/demo.txt", b"demo 1.0 # admin\n")
    _write(root, f"{MGR}/etc/sql/demo.addon/old_field", b"old field, edited\n")
    _write(root, f"{MGR}/addon/demo-lib/util.sh", b"#!/bin/sh\necho util # admin\n", 0o755)


Step = tuple[str, ...] | Callable[[Path], None]


@dataclass(frozen=True)
class Scenario:
    id: str
    name: str
    panel: str
    setup: tuple[Step, ...]
    command: tuple[str, ...]
    old: str | None  # version label before the command (None: not installed)
    new: str | None  # ... and after it
    staged: int      # times mid-stage is reached (files added or replaced)
    ops: int         # files added, replaced or removed
    edited: tuple[str, ...] = ()  # files the admin edited: on disk not as the manifest says
    steps: int = -1  # times mid-switch is reached: each op switched alone, each directory once
    dirs: tuple[int, int, int] = (0, 0, 0)  # times each of DIR_POINTS is reached

    @property
    def switch_steps(self) -> int:
        return self.ops if self.steps < 0 else self.steps


UPGRADE_ISP = Scenario("upgrade-isp", "demo", "ispmanager",
                       (_isp_runtime, ("install", "@isp1")), ("install", "@isp2"), "1.0", "2.0", 5, 6,
                       dirs=(1, 1, 0))
UPGRADE_PLESK = Scenario("upgrade-plesk", "demo-ext", "plesk", (("install", "@ext1"), _plesk_admin),
                         ("install", "@ext2"), "1.0-1", "2.0-1", 11, 14, steps=11, dirs=(1, 1, 1))
UPGRADE_EDITED = Scenario("upgrade-isp-edited", "demo", "ispmanager",
                          (_isp_runtime, ("install", "@isp1"), _isp_edited), ("install", "@isp2"),
                          "1.0", "2.0", 5, 6, edited=EDITED, dirs=(1, 1, 0))
UNINSTALL_EDITED = Scenario("uninstall-isp-edited", "demo", "ispmanager",
                            (_isp_runtime, ("install", "@isp1"), _isp_edited), ("uninstall", "demo"),
                            "1.0", None, 0, 6, edited=EDITED)
PURGE_PLESK = Scenario("uninstall-plesk-purge", "demo-ext", "plesk", (("install", "@ext1"), _plesk_admin),
                       ("uninstall", "demo-ext", "--purge"), "1.0-1", None, 0, 14, steps=12,
                       dirs=(0, 2, 2))
SCENARIOS = (
    Scenario("install-isp", "demo", "ispmanager", (_isp_runtime,), ("install", "@isp1"),
             None, "1.0", 6, 6),
    Scenario("install-plesk", "demo-ext", "plesk", (_plesk_data,), ("install", "@ext1"),
             None, "1.0-1", 12, 12, steps=3, dirs=(3, 3, 0)),
    UPGRADE_ISP,
    UPGRADE_EDITED,
    UNINSTALL_EDITED,
    UPGRADE_PLESK,
    Scenario("uninstall-isp", "demo", "ispmanager",
             (_isp_runtime, ("install", "@isp1"), ("install", "@isp2")), ("uninstall", "demo"),
             "2.0", None, 1, 8, dirs=(0, 1, 1)),
    Scenario("uninstall-plesk", "demo-ext", "plesk", (("install", "@ext1"), _plesk_admin),
             ("uninstall", "demo-ext"), "1.0-1", None, 0, 12, steps=10, dirs=(0, 2, 2)),
    PURGE_PLESK,
    Scenario("rollback-isp", "demo", "ispmanager",
             (_isp_runtime, ("install", "@isp1"), ("install", "@isp2")), ("rollback", "demo"),
             "2.0", "1.0", 4, 6, dirs=(0, 1, 1)),
    Scenario("rollback-plesk", "demo-ext", "plesk",
             (("install", "@ext1"), ("install", "@ext2"), _plesk_admin), ("rollback", "demo-ext"),
             "2.0-1", "1.0-1", 10, 13, steps=10, dirs=(1, 1, 1)),
)


# With Plesk under the root the registration is a step of the transaction and of its undo;
# the stand-in's registry (PSA/var/standin-extensions.json) is part of every tree compared.
REGISTERED = (
    Scenario("install-plesk-registered", "demo-ext", "plesk", (_plesk_standin, _plesk_data),
             ("install", "@ext1"), None, "1.0-1", 12, 12, steps=3, dirs=(3, 3, 0)),
    Scenario("upgrade-plesk-registered", "demo-ext", "plesk",
             (_plesk_standin, ("install", "@ext1"), _plesk_admin), ("install", "@ext2"),
             "1.0-1", "2.0-1", 11, 14, steps=11, dirs=(1, 1, 1)),
    Scenario("uninstall-plesk-registered", "demo-ext", "plesk",
             (_plesk_standin, ("install", "@ext1"), _plesk_admin), ("uninstall", "demo-ext"),
             "1.0-1", None, 0, 12, steps=10, dirs=(0, 2, 2)),
)
REGISTER_POINTS = ("before-register", "after-register", "after-switched", "after-post-hook",
                   "before-commit", "after-commit")


def _nths(count: int) -> list[int]:
    return sorted({n for n in (1, 2, (count + 1) // 2, count) if 1 <= n <= count})


def _cases() -> list[object]:
    out: list[object] = []
    for sc in SCENARIOS:
        for point in POINTS:
            # mid-stage is never reached when nothing is staged (a plain uninstall)
            nths = {"mid-stage": _nths(sc.staged), "mid-switch": _nths(sc.switch_steps)}.get(point, [0])
            for n in nths:
                fault = f"{point}:{n}" if n else point
                out.append(pytest.param(sc, fault, id=f"{sc.id}-{fault}"))
        for point, count in zip(DIR_POINTS, sc.dirs, strict=True):
            out += [pytest.param(sc, f"{point}:{n}", id=f"{sc.id}-{point}:{n}") for n in _nths(count)]
    out += [pytest.param(sc, point, id=f"{sc.id}-{point}") for sc in REGISTERED
            for point in REGISTER_POINTS]
    return out


@dataclass
class Built:
    before: Path
    pkgs: Path
    old: Snap
    new: Snap
    argv: tuple[str, ...]
    old_state: State
    new_state: State
    new_saved: dict[str, str]


class World:
    """Builds each scenario's before-root and reference result once per module."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pkgs = base / "pkgs"
        self.pkgs.mkdir()
        _packages(self.pkgs)
        self.built: dict[str, Built] = {}

    def args(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(self.pkgs / f"{a[1:]}.zip") if a.startswith("@") else a for a in argv)

    def __call__(self, sc: Scenario) -> Built:
        if sc.id in self.built:
            return self.built[sc.id]
        before = self.base / sc.id / "before"
        (before / PSA).mkdir(parents=True)
        (before / PSA / "version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
        (before / MGR / "etc").mkdir(parents=True)
        (before / "var/lib/mgr-agent").mkdir(parents=True)  # the agent's own state dir
        for step in sc.setup:
            if callable(step):
                step(before)
            else:
                done = cli(before, *self.args(step))
                assert done.rc == 0, done.stdout + done.stderr
        ref = copy_root(before, self.base / sc.id / "reference")
        argv = self.args(sc.command)
        done = cli(ref, *argv)
        assert done.rc == 0, done.stdout + done.stderr
        s = done.json["plan"]["summary"]
        assert (s["add"] + s["replace"], s["add"] + s["replace"] + s["remove"]) == (sc.staged, sc.ops)
        assert done.json["version"] == sc.new or sc.new is None
        built = Built(before, self.pkgs, snapshot(before), snapshot(ref), argv,
                      state_of(before, sc), state_of(ref, sc), saved_of(ref))
        assert saved_of(before) == {}
        assert built.old != built.new
        if sc in REGISTERED:  # Plesk's registry changed with the files
            reg = f"{PSA}/var/standin-extensions.json"
            assert (reg in built.old, reg in built.new) == (sc.old is not None, sc.new is not None)
            assert built.old.get(reg) != built.new.get(reg)
        assert [r[2] for r in built.old_state[0]] == ([sc.old] if sc.old else [])
        assert [r[2] for r in built.new_state[0]] == ([sc.new] if sc.new else [])
        self.built[sc.id] = built
        return built


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("crash"))


def copy_root(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def diff(got: Snap, want: Snap) -> str:
    bad = [f"  {p}: got {got.get(p)}, want {want.get(p)}"
           for p in sorted(set(got) | set(want)) if got.get(p) != want.get(p)]
    return "\n".join(bad[:40])


def journals(root: Path) -> list[Path]:
    return sorted((root / "var/lib/mgr-agent/journal").glob("*.log"))


def crash(root: Path, argv: tuple[str, ...], fault: str, env: dict[str, str] | None = None) -> str:
    """Run the command with a fault; it must die by SIGKILL.  Returns the transaction id."""
    done = cli(root, *argv, env={**(env or {}), "MGR_AGENT_FAULT": fault})
    assert done.rc == -signal.SIGKILL, f"{fault}: rc {done.rc}\n{done.stdout}{done.stderr}"
    (journal,) = journals(root)
    return journal.stem


def saved_of(root: Path) -> dict[str, str]:
    """The admin's files saved under saved/NAME/TX/PATH, as NAME/PATH -> sha256."""
    top = root / "var/lib/mgr-agent/saved"
    out = {}
    for path in top.rglob("*") if top.is_dir() else []:
        if path.is_file():
            name, _tx, rel = path.relative_to(top).as_posix().split("/", 2)
            out[f"{name}/{rel}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def state_of(root: Path, sc: Scenario) -> State:
    """What ``list`` and ``info`` say about the scenario's package (ids and times left out)."""
    listed = cli(root, "list")
    assert listed.rc == 0, listed.stderr
    rows = [(r["name"], r["panel"], r["version"], r["files"]) for r in listed.json["data"]
            if r["name"] == sc.name]
    info = cli(root, "info", sc.name)
    if info.rc == 4:
        return rows, None
    assert info.rc == 0, info.stdout
    data = {k: v for k, v in info.json["data"].items() if k not in ("installed_at", "tx")}
    data["kept"] = [{k: v for k, v in kept.items() if k != "kept_at"} for kept in data["kept"]]
    return rows, data


def assert_state(root: Path, sc: Scenario, built: Built, new: bool) -> None:
    """``list`` and ``info`` say what they said where the command did (not) run, and agree
    with the files on disk."""
    state = state_of(root, sc)
    assert state == (built.new_state if new else built.old_state)
    for f in state[1]["files"] if state[1] else []:
        path = root / f["path"]
        assert path.is_file(), f["path"]
        if f["kind"] != "data" and f["path"] not in sc.edited:  # data files are the admin's
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], f["path"]
            assert f"{path.stat().st_mode & 0o7777:04o}" == f["mode"], f["path"]


def assert_clean(root: Path, tree: Snap) -> None:
    """Nothing left behind, and another recover finds nothing and changes nothing."""
    assert leftovers(root) == []
    again = cli(root, "recover")
    assert again.rc == 0, again.stdout
    assert again.json["data"]["transactions"] == []
    assert snapshot(root) == tree


@pytest.mark.slow
@pytest.mark.parametrize(("sc", "fault"), _cases())
def test_kill_at_fault_point_then_recover(world: World, tmp_path: Path, sc: Scenario, fault: str) -> None:
    built = world(sc)
    root = copy_root(built.before, tmp_path / "root")
    tx = crash(root, built.argv, fault)
    recovered(root, sc, built, tx, fault == "after-commit" or fault.startswith("before-drop-dir"))


INSTALL_PLESK = SCENARIOS[1]
UNINSTALL_PLESK = SCENARIOS[7]


@pytest.mark.slow
@pytest.mark.parametrize(("sc", "fault"), [
    (INSTALL_PLESK, "after-staged"), (INSTALL_PLESK, "mid-switch:1"), (INSTALL_PLESK, "mid-switch:12"),
    (INSTALL_PLESK, "after-commit"), (UPGRADE_PLESK, "mid-stage:5"), (UPGRADE_PLESK, "mid-switch:1"),
    (UPGRADE_PLESK, "mid-switch:7"), (UPGRADE_PLESK, "mid-switch:14"), (UPGRADE_PLESK, "after-switched"),
    (UPGRADE_PLESK, "after-commit"), (UNINSTALL_PLESK, "before-switch-dir:2"),
    (UNINSTALL_PLESK, "before-drop-dir:1")], ids=lambda v: v.id if isinstance(v, Scenario) else v)
def test_kill_without_rename_exchange(world: World, tmp_path: Path, sc: Scenario, fault: str) -> None:
    """Where the filesystem has no RENAME_EXCHANGE (simulated), the directories are switched
    file by file (an uninstall still moves them aside whole: a plain rename); the recovery,
    run without the simulation, learns it from the journal."""
    built = world(sc)
    root = copy_root(built.before, tmp_path / "root")
    tx = crash(root, built.argv, fault, {"MGR_AGENT_NO_EXCHANGE": "1"})
    recovered(root, sc, built, tx, fault in ("after-commit", "before-drop-dir:1"))


def recovered(root: Path, sc: Scenario, built: Built, tx: str, committed: bool) -> None:
    """``recover`` leaves the old tree (the new one when ``committed``), state and all."""
    rec = cli(root, "recover")
    assert rec.rc == 0, rec.stdout + rec.stderr
    tree = snapshot(root)
    assert tree in (built.old, built.new), "neither the old nor the new tree:\n" + diff(tree, built.old)
    want = built.new if committed else built.old
    assert tree == want, f"expected the {'new' if committed else 'old'} tree:\n" + diff(tree, want)
    (entry,) = rec.json["data"]["transactions"]
    assert entry["tx"] == tx
    assert entry["outcome"] == ("completed" if committed else "rolled back")
    assert_state(root, sc, built, committed)
    assert saved_of(root) == (built.new_saved if committed else {}), "saved copies of edits"
    assert_clean(root, tree)


def _agent(root: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    return subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), *args, "--json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_lock(root: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    """Until ``proc`` holds the agent's lock (its pid is written there once it has it)."""
    lock = root / "var/lib/mgr-agent/lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if f'"pid": {proc.pid},' in lock.read_text():
                return True
        time.sleep(0.0005)
    return False


def kill_after_lock(root: Path, argv: tuple[str, ...], delay: float) -> bool:
    """Start the agent, SIGKILL it ``delay`` s after it took the lock; True if it was killed."""
    proc = _agent(root, *argv)
    if _wait_for_lock(root, proc):
        time.sleep(delay)
    proc.kill()
    return proc.wait() == -signal.SIGKILL


def converge(root: Path, sc: Scenario, built: Built) -> bool:
    """A final recover; the tree is the old or the new one, and the state agrees.  True if new."""
    final = cli(root, "recover")
    assert final.rc == 0, final.stdout
    tree = snapshot(root)
    assert tree in (built.old, built.new), diff(tree, built.old)
    assert_state(root, sc, built, tree == built.new)
    assert saved_of(root) == (built.new_saved if tree == built.new else {})
    assert_clean(root, tree)
    return tree == built.new


@pytest.mark.slow
@pytest.mark.parametrize(("sc", "fault"), [(UPGRADE_PLESK, "mid-switch:7"), (UPGRADE_PLESK, "after-commit"),
                                           (UPGRADE_ISP, "after-switched")],
                         ids=["plesk-mid-switch", "plesk-after-commit", "isp-after-switched"])
def test_recovery_killed_repeatedly_converges(world: World, tmp_path: Path, sc: Scenario,
                                              fault: str) -> None:
    """Double faults: recovery itself is SIGKILLed at random instants, several times in a row."""
    built = world(sc)
    rng = random.Random(fault)
    interrupted = 0
    for rnd in range(4):
        root = copy_root(built.before, tmp_path / f"root{rnd}")
        crash(root, built.argv, fault)
        for _ in range(3):
            # recovery works for a few ms after it takes the lock: kill it in there
            interrupted += kill_after_lock(root, ("recover",), rng.uniform(0, 0.004)) and bool(journals(root))
        assert converge(root, sc, built) == (fault == "after-commit")
    assert interrupted, "no recovery was killed before it finished; the test proved nothing"


@pytest.mark.slow
@pytest.mark.parametrize("sc", [UPGRADE_PLESK, UPGRADE_ISP, PURGE_PLESK, UPGRADE_EDITED],
                         ids=lambda sc: sc.id)
def test_kill_at_random_instants(world: World, tmp_path: Path, sc: Scenario) -> None:
    """Between the named points too: the command is killed at random, then so is its recovery."""
    built = world(sc)
    rng = random.Random(sc.id)
    probe = _agent(copy_root(built.before, tmp_path / "probe"), *built.argv)
    assert _wait_for_lock(tmp_path / "probe", probe)
    started = time.monotonic()
    assert probe.wait() == 0
    span = time.monotonic() - started  # from taking the lock to exiting, unkilled
    outcomes = []
    for rnd in range(6):
        root = copy_root(built.before, tmp_path / f"root{rnd}")
        kill_after_lock(root, built.argv, rng.uniform(0, span))
        kill_after_lock(root, ("recover",), rng.uniform(0, 0.004))
        outcomes.append(converge(root, sc, built))
    print(f"{sc.id}: span {span * 1000:.0f} ms, new tree after {sum(outcomes)} of {len(outcomes)} kills")


def test_mutating_command_recovers_first(world: World, tmp_path: Path) -> None:
    built = world(UPGRADE_ISP)
    root = copy_root(built.before, tmp_path / "root")
    tx = crash(root, built.argv, "mid-switch:3")
    done = cli(root, "install", str(built.pkgs / "other.zip"))
    assert done.rc == 0, done.stdout
    assert done.json["action"] == "installed"
    tree = snapshot(root)
    assert {p: v for p, v in tree.items() if p in built.old} == built.old
    assert all("other" in p for p in set(tree) - set(built.old)), sorted(set(tree) - set(built.old))
    history = {h["tx"]: h for h in cli(root, "history").json["data"]}
    assert history[tx]["status"] == "rolled_back_by_recovery"
    assert history[done.json["tx"]]["status"] == "committed"
    assert_state(root, UPGRADE_ISP, built, False)
    assert_clean(root, tree)


def test_wait_zero_fails_fast_while_lock_held(root: Path, pkgs: Path) -> None:
    started_hook = pkgs / "pre-install-started"  # the holder's transaction has begun
    slow = samples.write_zip(samples.ispmanager_files(
        "slow", "1.0", pre_install=f"touch {started_hook}; sleep 5"), pkgs / "slow.zip")
    other = samples.write_zip(samples.ispmanager_files("other", "1.0"), pkgs / "other.zip")
    before = snapshot(root)
    holder = _agent(root, "install", str(slow))
    try:
        assert _wait_for_lock(root, holder), "the holder never took the lock"
        # (the lock alone is taken before the journal's begin: killed then, there would be
        # nothing to recover)
        wait_for_file(started_hook, what="the holder's pre-install hook to start",
                      alive=lambda: holder.poll() is None)
        started = time.monotonic()
        busy = cli(root, "install", str(other), "--wait", "0")
        elapsed = time.monotonic() - started
        assert busy.rc == 9, busy.stdout
        err = busy.json["error"]
        assert err["code"] == "lock-busy"
        assert f"pid {holder.pid}" in err["message"] and "install slow" in err["message"]
        assert elapsed < 3, f"--wait 0 took {elapsed:.1f} s"
        assert holder.poll() is None, "the holder should still be in its pre-install hook"
    finally:  # end the holder (and its hook) mid pre-install: a crash of its own to recover
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(holder.pid).children(recursive=True):
                child.kill()
        holder.kill()
        holder.wait()
    rec = cli(root, "recover")
    assert rec.rc == 0, rec.stdout
    assert [t["outcome"] for t in rec.json["data"]["transactions"]] == ["rolled back"]
    assert snapshot(root) == before
    assert cli(root, "list").json["data"] == []
    assert_clean(root, before)


def test_torn_journal_tail_is_ignored(world: World, tmp_path: Path) -> None:
    built = world(UPGRADE_PLESK)
    root = copy_root(built.before, tmp_path / "root")
    crash(root, built.argv, "after-switching")
    (journal,) = journals(root)
    assert journal.read_bytes().count(b"\n") == 3  # begin, staged, switching
    with open(journal, "ab") as fh:
        fh.write(b'0badf00d {"type":"swit')
    rec = cli(root, "recover", as_json=False)
    assert rec.rc == 0, rec.stderr
    assert "rolled back" in rec.stdout
    assert "found an unterminated last record of 22 bytes" in rec.stdout
    assert snapshot(root) == built.old
    assert_state(root, UPGRADE_PLESK, built, False)
    assert_clean(root, built.old)


def test_damaged_middle_record_refuses_and_changes_nothing(world: World, tmp_path: Path) -> None:
    built = world(UPGRADE_PLESK)
    root = copy_root(built.before, tmp_path / "root")
    crash(root, built.argv, "after-switching")
    (journal,) = journals(root)
    data = bytearray(journal.read_bytes())
    assert data.count(b"\n") == 3
    at = data.index(b'"op":') + 2  # a byte inside the body of record 1 (the begin record)
    data[at] ^= 0x01
    journal.write_bytes(bytes(data))

    def state_dir() -> Snap:  # the lock file records who last held it; that is not a change
        return {p: v for p, v in full_snapshot(root).items() if p != "var/lib/mgr-agent/lock"}

    before = state_dir()
    for argv in (("recover",), ("install", str(built.pkgs / "other.zip"))):
        done = cli(root, *argv)
        assert done.rc == 11, done.stdout
        err = done.json["error"]
        assert err["code"] == "state-corrupt"
        assert f"{journal}: record 1 of 3 is damaged; refusing to guess" in err["message"]
        assert "inspect the file by hand" in err["hint"]
        assert state_dir() == before


def test_damaged_last_record_after_switch_began(world: World, tmp_path: Path) -> None:
    """A damaged (not merely unterminated) last record is taken for torn; the files still say
    which ops were switched, so nothing may be lost even if the step had in fact begun."""
    built = world(UPGRADE_PLESK)
    root = copy_root(built.before, tmp_path / "root")
    crash(root, built.argv, "mid-switch:3")
    (journal,) = journals(root)
    data = bytearray(journal.read_bytes())
    # the last record is the switch-dir record of the directory exchanged first (mid-switch:1):
    # recovery still finds the exchange, from the staged tree's inode in the staged record
    assert b'"type":"switch-dir"' in data.splitlines()[-1]
    at = data.rindex(b'"type":"switch-dir"') + 9
    data[at] ^= 0x01
    journal.write_bytes(bytes(data))
    rec = cli(root, "recover")
    assert rec.rc == 0, rec.stdout
    (entry,) = rec.json["data"]["transactions"]
    assert entry["found"] == "a damaged last record (line 4)"
    tree = snapshot(root)
    assert tree == built.old, diff(tree, built.old)
    assert_state(root, UPGRADE_PLESK, built, False)
    assert_clean(root, built.old)
