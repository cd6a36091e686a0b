"""Kill at random moments (issue 3, item 2).

A package with a few hundred files is built in two versions: v2 adds, replaces (some with
a new mode) and removes files, creates new directories and empties old ones.  The sandbox
root also holds data the admin edited (Plesk ``var/``) and files the plugin created at run
time.  v1 is installed once; each trial copies that root, runs the real CLI
``install v2.zip`` as a subprocess, SIGKILLs it after a delay drawn uniformly within its
measured no-fault run time (median of 3), runs ``recover`` and checks:

- the tree (outside the agent's state dir) is byte for byte the v1 or the v2 reference;
- ``list`` and ``info`` say exactly what they say for that version, and the files agree;
- no staging/backup files, scratch dirs or journals are left; a second ``recover``
  finds nothing and changes nothing.

Used by ``tests/integration/test_random_kill.py`` (a reduced pass) and by the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgr_agent.errors import StateCorrupt
from mgr_agent.sandbox import samples
from mgr_agent.wal import replay
from tests.helpers import cli, leftovers, snapshot

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
Snap = dict[str, tuple[str, int, str]]
State = tuple[list[tuple[str, str, str, int]], dict[str, Any] | None]
Tree = samples.Tree

# what the journal said when the agent was killed (before recovery), in order
# "switching-dirs": killed in the switch after a directory's switch-dir record (a directory
# switched whole, or about to be)
PHASES = ("before-begin", "begin", "staged", "switching", "switching-dirs", "switched", "committed",
          "cleaned-up")


# ---------------------------------------------------------------- packages
def _blob(rng: random.Random, label: str) -> bytes:
    """Deterministic content of a varied size: mostly small, a few of 64-256 KiB."""
    size = rng.choice((rng.randint(40, 900),) * 6 + (rng.randint(1000, 12000),) * 3
                      + (rng.randint(64 << 10, 256 << 10),))
    head = f"{label}\n".encode()
    return head + rng.randbytes(max(size - len(head), 0))


def _split(files: int) -> tuple[int, int, int]:
    """Of ``files`` v1 files: how many v2 replaces and removes, and how many it adds."""
    replaced, removed = files * 3 // 10, files * 15 // 100
    return replaced, removed, files * 2 // 10


def bulk_trees(panel: str, files: int = 300, seed: int = 3) -> tuple[Tree, Tree]:
    """v1 and v2 of a package with about ``files`` files (plus the sample's own)."""
    rng = random.Random(f"{panel}-{files}-{seed}")
    if panel == "plesk":
        dirs = [f"htdocs/js/mod{k}" for k in range(6)] + [f"plib/library/Part{k}" for k in range(6)] + \
               ["plib/views/scripts/index", "plib/resources/locales", "sbin/tools"]
        new_dirs = ["htdocs/js/v2/widgets", "plib/library/V2/Api"]
        data: Tree = {"var/defaults.json": (b'{"default": 1}\n', 0o644),
                "var/templates/mail.tpl": (b"Hello {name}\n", 0o640)}
    else:
        dirs = [f"addon/bulk-lib/part{k}" for k in range(6)] + \
               [f"skins/common/img/bulk/s{k}" for k in range(5)] + \
               ["etc/sql/bulk.addon", "etc/templates/bulk", "addon/bulk-lib/tools"]
        new_dirs = ["addon/bulk-lib/v2/api", "skins/common/img/bulk/v2"]
        data = {}
    v1: Tree = {}
    for i in range(files):
        d = dirs[i % len(dirs)]
        ext = ".sh" if "tools" in d else ".php" if "plib" in d else ".js" if "js" in d else ".dat"
        v1[f"{d}/f{i:04d}{ext}"] = (_blob(rng, f"v1 {d} {i}"), 0o755 if ext == ".sh" else 0o644)
    replaced, removed, added = _split(files)
    names = sorted(v1)
    rng.shuffle(names)
    v2: Tree = dict(v1)
    # dir 0 goes away entirely in v2 (an emptied directory to prune)
    gone = [n for n in names if n.startswith(dirs[0] + "/")]
    rest = [n for n in names if n not in gone]
    for name in gone + rest[: max(removed - len(gone), 0)]:
        del v2[name]
    for j, name in enumerate(rest[removed:removed + replaced]):
        mode = v1[name][1] if j % 10 else (0o644 if v1[name][1] == 0o755 else 0o755)  # mode change
        v2[name] = (_blob(rng, f"v2 {name}"), mode)
    for i in range(added):
        d = (new_dirs + dirs[1:])[i % (len(dirs) + 1)]
        v2[f"{d}/n{i:04d}.dat"] = (_blob(rng, f"v2 new {d} {i}"), 0o644)
    # one directory the package owns outright changes whole: it is switched with one
    # renameat2 (docs/transactions.md#whole-directory-switches), the others file by file
    whole = "htdocs/" if panel == "plesk" else "skins/common/img/bulk/"
    for name in sorted(n for n in v2 if n.startswith(whole) and v2[n] == v1.get(n)):
        v2[name] = (_blob(rng, f"v2 whole {name}"), v2[name][1])
    if panel == "plesk":  # var/ data: shipped, changed in v2 (kept: the admin's), new in v2
        v1.update(data)
        v2.update(data)
        v2["var/defaults.json"] = (b'{"default": 2}\n', 0o644)
        v2["var/new-in-v2.json"] = (b'{"new": true}\n', 0o644)
        return (samples.plesk_files("bulk-ext", "1.0", extra=v1),
                samples.plesk_files("bulk-ext", "2.0", extra=v2))
    return (samples.ispmanager_files("bulk", "1.0", extra=v1),
            samples.ispmanager_files("bulk", "2.0", extra=v2))


def _write(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _admin_and_runtime(root: Path, panel: str) -> None:
    """After v1 is installed: the admin edits data, the plugin writes files at run time."""
    if panel == "plesk":
        _write(root, f"{PSA}/var/modules/bulk-ext/settings.json", b'{"edited": "by the admin"}\n', 0o640)
        _write(root, f"{PSA}/var/modules/bulk-ext/cache/sessions.db", os.urandom(3000), 0o600)
        _write(root, f"{PSA}/admin/plib/modules/bulk-ext/runtime.cache", b"cache\n")
    else:
        _write(root, f"{MGR}/var/bulk.output", b"Good job!\n", 0o600)
        _write(root, f"{MGR}/addon/bulk-lib/state.json", b'{"runs": 3}\n')


# ---------------------------------------------------------------- state
def new_root(path: Path) -> Path:
    """An empty sandbox root, as on a server: panel dirs, a Plesk version file, var/lib."""
    (path / PSA).mkdir(parents=True)
    (path / PSA / "version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (path / MGR / "etc").mkdir(parents=True)
    (path / "var/lib").mkdir(parents=True)
    return path


def copy_root(src: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)
    return dest


def diff(got: Snap, want: Snap, limit: int = 20) -> str:
    bad = [f"  {p}: got {got.get(p)}, want {want.get(p)}"
           for p in sorted(set(got) | set(want)) if got.get(p) != want.get(p)]
    more = f"\n  … and {len(bad) - limit} more" if len(bad) > limit else ""
    return "\n".join(bad[:limit]) + more


def _cli_both(root: Path, *commands: tuple[str, ...]) -> list[tuple[int, str]]:
    """Run read-only CLI commands side by side (they take no lock): (exit code, stdout) each."""
    procs = [subprocess.Popen(_argv(root, *argv), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for argv in commands]
    return [(p.returncode, out) for p, out in ((p, p.communicate(timeout=120)[0]) for p in procs)]


def state_of(root: Path, name: str) -> State:
    """What ``list`` and ``info`` say about package ``name`` (ids and times left out)."""
    (list_rc, listed), (info_rc, info) = _cli_both(root, ("list",), ("info", name))
    if list_rc != 0:
        raise AssertionError(f"list exited {list_rc}: {listed}")
    rows = [(r["name"], r["panel"], r["version"], r["files"]) for r in json.loads(listed)["data"]
            if r["name"] == name]
    if info_rc == 4:
        return rows, None
    if info_rc != 0:
        raise AssertionError(f"info exited {info_rc}: {info}")
    data = {k: v for k, v in json.loads(info)["data"].items() if k not in ("installed_at", "tx")}
    data["kept"] = [{k: v for k, v in kept.items() if k != "kept_at"} for kept in data["kept"]]
    data["files"] = sorted(data["files"], key=lambda f: f["path"])
    return rows, data


def files_agree(root: Path, state: State) -> list[str]:
    """Files ``info`` lists that differ on disk (data files are the admin's: only present)."""
    bad = []
    for f in state[1]["files"] if state[1] else []:
        path = root / f["path"]
        if not path.is_file():
            bad.append(f"{f['path']}: missing")
        elif f["kind"] != "data":
            if hashlib.sha256(path.read_bytes()).hexdigest() != f["sha256"]:
                bad.append(f"{f['path']}: content differs from info")
            elif f"{path.stat().st_mode & 0o7777:04o}" != f["mode"]:
                bad.append(f"{f['path']}: mode differs from info")
    return bad


# ---------------------------------------------------------------- the fixture
@dataclass
class Fixture:
    panel: str
    name: str
    before: Path          # v1 installed, data edited, run-time files present
    v2: Path              # the upgrade package
    old: Snap
    new: Snap
    old_state: State
    new_state: State
    span: float           # median no-fault run time of the upgrade, seconds
    spans: list[float]
    tx_span: float        # median time from taking the lock to exiting, seconds
    tx_spans: list[float]
    files: int            # files in v2's plan (add + replace + remove)
    summary: dict[str, int]


def _argv(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mgr_agent", "--root", str(root), *args, "--json"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}


def _wait_for_lock(root: Path, proc: subprocess.Popen[Any], timeout: float = 60) -> bool:
    """Until ``proc`` holds the agent's lock (it writes its pid there once it has it)."""
    lock = root / "var/lib/mgr-agent/lock"
    needle = f'"pid": {proc.pid},'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if needle in lock.read_text():
                return True
        time.sleep(0.001)
    return False


def build(base: Path, panel: str = "plesk", files: int = 300) -> Fixture:
    """Packages, the v1 root and both references; measures the no-fault upgrade time."""
    base.mkdir(parents=True, exist_ok=True)
    name = "bulk-ext" if panel == "plesk" else "bulk"
    t1, t2 = bulk_trees(panel, files)
    v1 = samples.write_zip(t1, base / f"{name}-1.zip")
    v2 = samples.write_zip(t2, base / f"{name}-2.zip")
    before = new_root(base / "before")
    done = cli(before, "install", str(v1))
    if done.rc != 0:
        raise AssertionError(f"installing v1 failed: {done.stdout}{done.stderr}")
    _admin_and_runtime(before, panel)
    spans: list[float] = []
    tx_spans: list[float] = []
    ref = base / "reference"
    summary: dict[str, int] = {}
    for k in range(3):  # the no-fault upgrade, three times: its run time, and from the lock on
        root = copy_root(before, base / f"probe{k}")
        started = time.monotonic()
        proc = subprocess.Popen(_argv(root, "install", str(v2)), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        locked = time.monotonic() if _wait_for_lock(root, proc) else started
        stdout, stderr = proc.communicate(timeout=300)
        ended = time.monotonic()
        spans.append(ended - started)
        tx_spans.append(ended - locked)
        if proc.returncode != 0:
            raise AssertionError(f"upgrading to v2 failed: {stdout}{stderr}")
        if k == 0:
            summary = json.loads(stdout)["plan"]["summary"]
            root.rename(ref)
        else:
            shutil.rmtree(root)
    old, new = snapshot(before), snapshot(ref)
    if old == new or leftovers(ref):
        raise AssertionError("the reference upgrade changed nothing or left files behind")
    return Fixture(panel=panel, name=name, before=before, v2=v2, old=old, new=new,
                   old_state=state_of(before, name), new_state=state_of(ref, name),
                   span=statistics.median(spans), spans=spans,
                   tx_span=statistics.median(tx_spans), tx_spans=tx_spans,
                   files=summary["add"] + summary["replace"] + summary["remove"], summary=summary)


# ---------------------------------------------------------------- one trial
@dataclass
class Trial:
    index: int
    panel: str
    delay: float             # seconds after the start (anchor "start") or after taking the lock
    anchor: str = "start"
    outcome: str = ""        # "old", "new", "completed" (exited before the kill) or "failed"
    phase: str = ""          # one of PHASES: how far the transaction had got
    error: str = ""
    kept: str = ""           # where a failed root was kept for inspection


def _phase_at_kill(root: Path) -> str:
    """Read the journal the killed agent left (before recovery touches it)."""
    logs = sorted((root / "var/lib/mgr-agent/journal").glob("*.log"))
    if not logs:
        return ""
    try:
        rep = replay(logs[-1])
    except StateCorrupt as exc:  # a real finding: recovery will refuse
        return f"corrupt journal: {exc}"
    if rep.phase == "switching" and rep.dirs:
        return "switching-dirs"
    return rep.phase or "before-begin"


def run_trial(fx: Fixture, work: Path, index: int, delay: float, anchor: str = "start", *,
              again: bool = True) -> Trial:
    """Copy the v1 root, upgrade, SIGKILL ``delay`` s after the start (``anchor="start"``) or
    after the agent took its lock (``"lock"``), recover, check (``again``: that a second
    recover is a no-op too)."""
    t = Trial(index=index, panel=fx.panel, delay=delay, anchor=anchor)
    root = copy_root(fx.before, work / f"trial-{fx.panel}")
    try:
        proc = subprocess.Popen(_argv(root, "install", str(fx.v2)), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if anchor == "lock":
            _wait_for_lock(root, proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if rc not in (0, -signal.SIGKILL):
            raise AssertionError(f"install exited {rc}: {stderr[-2000:]}")
        journal_phase = _phase_at_kill(root)
        if journal_phase.startswith("corrupt"):
            raise AssertionError(journal_phase)
        rec = cli(root, "recover")
        if rec.rc != 0:
            raise AssertionError(f"recover exited {rec.rc}: {rec.stdout}{rec.stderr}")
        txs = rec.json["data"]["transactions"]
        tree = snapshot(root)
        if tree == fx.old:
            t.outcome, want_state = "old", fx.old_state
        elif tree == fx.new:
            t.outcome, want_state = "new", fx.new_state
        else:
            raise AssertionError("the tree is neither v1 nor v2; against v1:\n" + diff(tree, fx.old)
                                 + "\nagainst v2:\n" + diff(tree, fx.new))
        if rc == 0:
            if t.outcome != "new" or txs:
                raise AssertionError(f"exited 0 but tree is {t.outcome}, recovery found {txs}")
            t.outcome, t.phase = "completed", "cleaned-up"
        elif not journal_phase:
            t.phase = "before-begin" if t.outcome == "old" else "cleaned-up"
            if [x for x in txs if x["outcome"] != "discarded"]:
                raise AssertionError(f"no journal, yet recovery did {txs}")
        else:
            (entry,) = txs
            committed = entry["outcome"] == "completed"
            t.phase = "committed" if committed else journal_phase
            if entry["outcome"] not in ("completed", "rolled back", "discarded"):
                raise AssertionError(f"recovery outcome {entry}")
            if committed != (t.outcome == "new"):
                raise AssertionError(f"recovery said {entry['outcome']} but the tree is {t.outcome}")
        state = state_of(root, fx.name)
        if state != want_state:
            raise AssertionError(f"list/info disagree with the {t.outcome} tree: {state[0]} "
                                 f"vs {want_state[0]}")
        bad = files_agree(root, state)
        if bad:
            raise AssertionError("files differ from info: " + "; ".join(bad[:10]))
        left = leftovers(root)
        if left:
            raise AssertionError(f"left behind: {left[:10]}")
        if again:
            rec2 = cli(root, "recover")
            if rec2.rc != 0 or rec2.json["data"]["transactions"] or snapshot(root) != tree:
                raise AssertionError(f"a second recover was not a no-op: {rec2.stdout}")
    except AssertionError as exc:
        t.outcome, t.error = "failed", str(exc)
        keep = work / f"failed-{index:04d}-{fx.panel}"
        with contextlib.suppress(OSError):
            root.rename(keep)
            t.kept = str(keep)
    return t


# ---------------------------------------------------------------- many trials
@dataclass
class Summary:
    anchor: str = "start"
    trials: int = 0
    to_old: int = 0
    to_new: int = 0
    completed: int = 0
    failures: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    spans: dict[str, float] = field(default_factory=dict)       # panel -> median span drawn from
    files: dict[str, int] = field(default_factory=dict)         # panel -> files in the plan
    failed: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, t: Trial) -> None:
        self.trials += 1
        if t.outcome == "failed":
            self.failures += 1
            self.failed.append(t)
            return
        self.to_old += t.outcome == "old"
        self.to_new += t.outcome == "new"
        self.completed += t.outcome == "completed"
        self.phases[t.phase] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "trials": self.trials, "to_old": self.to_old, "to_new": self.to_new,
                "completed_before_kill": self.completed, "failures": self.failures,
                "killed_at_phase": {p: self.phases[p] for p in PHASES if self.phases[p]},
                "median_span_seconds": self.spans, "files_changed": self.files,
                "seconds": round(self.seconds, 1),
                "failed": [{"trial": t.index, "panel": t.panel, "anchor": t.anchor,
                            "delay": round(t.delay, 4),
                            "error": t.error, "kept": t.kept} for t in self.failed]}


def run_trials(fixtures: list[Fixture], work: Path, trials: int, *, anchor: str = "start",
               seed: int = 0, stratified: bool = False, again: bool = True,
               progress: Callable[[Trial, Summary], None] | None = None) -> Summary:
    """``trials`` random-kill trials, shared round-robin among ``fixtures``.

    ``anchor="start"``: each delay is uniform in [0, the median no-fault run time], counted
    from the start of the process.  ``anchor="lock"``: uniform in [0, the median time from
    taking the lock to exiting], counted from the moment the agent holds its lock, so that
    most kills land inside the transaction.  ``stratified`` draws the k-th of n delays of a
    panel within the k-th n-th of that span, so that a short pass still covers all of it.
    """
    started = time.monotonic()
    rng = random.Random(f"{seed}-{anchor}")
    summary = Summary(anchor=anchor)
    for fx in fixtures:
        summary.spans[fx.panel] = round(fx.span if anchor == "start" else fx.tx_span, 3)
        summary.files[fx.panel] = fx.files
    per_panel = -(-trials // len(fixtures))
    for i in range(trials):
        fx = fixtures[i % len(fixtures)]
        span = fx.span if anchor == "start" else fx.tx_span
        k = i // len(fixtures)
        delay = span * ((k + rng.random()) / per_panel if stratified else rng.random())
        t = run_trial(fx, work, i, delay, anchor, again=again)
        summary.add(t)
        if progress:
            progress(t, summary)
    summary.seconds = time.monotonic() - started
    return summary


def build_all(work: Path, panels: tuple[str, ...] = ("plesk", "ispmanager"),
              files: int = 300) -> list[Fixture]:
    return [build(work / panel, panel, files) for panel in panels]
