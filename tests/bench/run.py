"""``make bench``: mgr-agent against unzip and dpkg on the same payloads, side by side.

    python -m tests.bench.run [--sizes 500,5000,20000] [--reps 5] [--quick] [--json-out PATH]
                              [--fs image|here]

The trials run on a journaled ext4 image made for the run (``tests.bench.trialfs``; as
root), dpkg with ``--no-force-unsafe-io`` (``tests.bench.trials``).  Each repetition
runs every group of commands being compared one after the other, in an order rotated
from one repetition to the next (A B, then B A), so that neither side always runs
first.  Rows report medians and ratios against the targets of issue 13;
then the live-server phase installs in every durability mode, and with dpkg, while a
background writer dirties the same filesystem.  Nothing here fails on timing: a missed
target is reported, not raised.  ``python -m tests.bench.report`` turns the JSON into
docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import inspect
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python tests/bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mgr_agent import __version__, config, reclaim, transaction
from mgr_agent.config import Config
from mgr_agent.engine import Engine
from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout
from tests.bench import deployed, live, logs_bench, report, trialfs
from tests.bench import payload as pl
from tests.bench.trials import REPO, TIMEOUT, TrialFailed, Trials, agent_command, dpkg_config

RESULTS = REPO / "tests/bench/results"
TINY_PLUGINS = 200
DURABILITY_CANDIDATES = ("syncfs", "fsync", "writeback")
Member = tuple[str, Callable[[], float | dict[str, float]]]
MB = 1e6


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def _mount(path: Path) -> str:
    """Filesystem type and options of the mount holding ``path`` (from /proc/self/mounts)."""
    best, found = "", "?"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and str(path).startswith(parts[1].rstrip("/") + "/") \
                and len(parts[1]) >= len(best):
            best, found = parts[1], f"{parts[2]} ({parts[3]}) on {parts[1]}"
    return found


def _meminfo() -> str:
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0].split()
        return f"{int(first[1]) / 2**20:.1f} GiB"
    except (OSError, IndexError, ValueError):
        return "?"


def _vm(name: str) -> str:
    try:
        return Path(f"/proc/sys/vm/{name}").read_text().strip()
    except OSError:
        return "?"


def machine(work: Path, trial_fs: dict[str, Any] | None = None,
            python: str = sys.executable) -> dict[str, Any]:
    """The machine, the agent's interpreter (``python``), its work directory's filesystem,
    the trials' filesystem (see :mod:`tests.bench.trialfs`) and dpkg's configured force
    options."""
    version = _version([python, "-c", "import sys; print(sys.version.split()[0])"])
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": version,
            "dpkg": _version(["dpkg", "--version"]), "unzip": _version(["unzip", "-v"]),
            "filesystem": _mount(work), "trial_filesystem": trial_fs or trialfs.describe(work),
            "dpkg_config": dpkg_config(), "memory": _meminfo(),
            "dirty": {k: _vm(k) for k in ("dirty_ratio", "dirty_background_ratio",
                                          "dirty_expire_centisecs", "dirty_writeback_centisecs")},
            "load_at_start": list(os.getloadavg())}


def durability_modes(work: Path) -> list[str]:
    """The ``[durability] mode`` values this agent accepts (asked of its own config
    loader), the default first."""
    probe = work / "probe-config"
    accepted: list[str] = []
    for mode in DURABILITY_CANDIDATES:
        layout = Layout.at(probe / mode)
        layout.config_file.parent.mkdir(parents=True, exist_ok=True)
        layout.config_file.write_text(f'[durability]\nmode = "{mode}"\n')
        try:
            if config.load(layout).durability == mode:
                accepted.append(mode)
        except UsageError:
            pass
    shutil.rmtree(probe, ignore_errors=True)
    default = Config().durability
    return sorted(accepted, key=lambda m: m != default)


def agent_info(modes: list[str]) -> dict[str, Any]:
    """Which durability the agent really uses: the configured default, the modes it
    accepts, and whether the transaction code calls ``sync_filesystems`` (syncfs) at all."""
    source = inspect.getsource(transaction)
    return {"version": __version__, "durability_default": Config().durability,
            "durability_modes": modes, "transaction_uses_syncfs": "sync_filesystems(" in source}


class Bench:
    def __init__(self, sizes: list[int], reps: int, work: Path, trial_root: Path | None = None,
                 python: str = sys.executable) -> None:
        self.sizes = sorted(sizes)
        self.reps = reps
        self.work = work
        self.trial_root = trial_root or work   # the trials' filesystem (tests.bench.trialfs)
        self.headline = 5_000 if 5_000 in self.sizes else self.sizes[0]
        self.biggest = self.sizes[-1]
        self.big_reps = reps          # repetitions of the secondary groups (see --big-reps)
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.payloads = pl.Payloads(work / "payloads")
        self.python = python          # the measured agent's interpreter (tests.bench.deployed)
        self.trials = Trials(self.trial_root, python)
        self.have_dpkg = bool(shutil.which("dpkg") and shutil.which("dpkg-deb"))
        self.have_unzip = bool(shutil.which("unzip"))
        self.notes: list[str] = []
        self.files: dict[int, int] = {}
        self.described: dict[str, dict[str, int]] = {}
        self.log_bytes = 1 << 30
        self.idle_seconds = 60.0
        self.live_reps = 2
        self.live_backlog = 6.0       # seconds of the writer's output dirty before each install
        self.writer_rate = 50.0       # MB/s
        self.ring_mb = 2048
        self.ctx: dict[str, Path] = {}
        self.modes = durability_modes(work)
        self.default_mode = Config().durability
        self.trial_fs: dict[str, Any] = {}
        self.peak_used = 0            # bytes in use on the trials' filesystem, the most of a rep

    # ------------------------------------------------------------ preparation
    def build(self) -> None:
        h = self.headline
        log(f"building payloads in {self.payloads.cache} (cached between runs)")
        self.zips = {v: self.payloads.zip("plesk", h, v) for v in pl.VARIANTS}
        self.isp = {v: self.payloads.zip("ispmanager", h, v) for v in pl.VARIANTS}
        self.other = {n: self.payloads.zip("plesk", n, "v1") for n in self.sizes if n != h}
        # the scaling row's fixed cost: a fresh install of the same kind of package with one file
        self.fixed_zip = self.payloads.zip("plesk", 1, "v1")
        self.debs: dict[str, Path] = {}
        if self.have_dpkg:
            self.debs = {v: self.payloads.deb("plesk", h, v) for v in ("v1", "v2")}
            self.debs.update({f"isp-{v}": self.payloads.deb("ispmanager", h, v) for v in ("v1", "v2")})
            self.debs.update({f"plesk-{n}": self.payloads.deb("plesk", n, "v1") for n in self.other})
        self.log_root = self.work / "logroot"
        log(f"building a {self.log_bytes >> 20} MiB ispmgr.log")
        self.log = logs_bench.build_log(self.log_root, self.log_bytes)
        for n in self.sizes:
            path = self.zips["v1"] if n == h else self.other[n]
            self.described[path.name] = pl.describe(path)
            self.files[n] = self.described[path.name]["files"]
        self.described[self.isp["v1"].name] = pl.describe(self.isp["v1"])
        self.described[self.fixed_zip.name] = pl.describe(self.fixed_zip)
        self.fixed_files = self.described[self.fixed_zip.name]["files"]
        log(f"setting up a root with {TINY_PLUGINS} installed plugins (untimed)")
        self.list_root = self.trials.agent_root("list")
        engine = Engine(Layout.at(self.list_root))
        for z in pl.tiny_plugins(TINY_PLUGINS, self.work / "payloads/tiny"):
            engine.install(z)

    # ------------------------------------------------------------ members
    def _rss(self, name: str) -> None:
        """Peak RSS of the agent command that just ran, in MB: the agent process alone
        (``name``, from ``tests.bench.agent_rss``) and, as before, ``wait4``'s figure for the
        whole command, the largest of the agent and the hooks it waited for (``name-wait4``)."""
        self.samples[name].append(self.trials.agent_maxrss_kib * 1024 / MB)
        self.samples[name + "-wait4"].append(self.trials.last.maxrss_kib * 1024 / MB)

    def _agent_fresh(self, zip_path: Path, key: str, durability: str | None = None,
                     rss: str | None = None) -> float:
        root = self.trials.agent_root("agent-fresh", durability=durability)
        self.ctx[key] = root
        seconds = self.trials.install(root, zip_path, rss=rss is not None)
        if rss:
            self._rss(rss)
        return seconds

    def _dpkg_fresh(self, deb: Path, key: str) -> float:
        root = self.trials.dpkg_root("dpkg-fresh")
        self.ctx[key] = root
        return self.trials.dpkg(root, "-i", str(deb))

    def _agent_upgrade(self, old: Path, new: Path, rss: str | None = None) -> float:
        root = self.trials.agent_root("agent-upgrade")
        self.trials.install(root, old, timed=False)
        seconds = self.trials.install(root, new, "upgraded", rss=rss is not None)
        if rss:
            self._rss(rss)
        return seconds

    def _dpkg_upgrade(self, old: Path, new: Path) -> float:
        root = self.trials.dpkg_root("dpkg-upgrade")
        self.trials.dpkg(root, "-i", str(old), timed=False)
        return self.trials.dpkg(root, "-i", str(new))

    def _rollback(self, zips: dict[str, Path]) -> dict[str, float]:
        root = self.trials.agent_root("agent-rollback")
        self.trials.install(root, zips["v1"], timed=False)
        undo, total = self.trials.failing_upgrade(root, zips["v2fail"])
        return {"agent-rollback": undo, "agent-failed-upgrade": total}

    def _manual_rollback(self, zips: dict[str, Path], name: str) -> float:
        root = self.trials.agent_root("agent-manual-rollback")
        self.trials.install(root, zips["v1"], timed=False)
        self.trials.install(root, zips["v2"], "upgraded", timed=False)
        return self.trials.rollback(root, name)

    def _uninstall(self, key: str, name: str) -> dict[str, float]:
        """The timed uninstall, then (untimed) the wait until the detached reclaimer has
        deleted the old trees: how long after the command's exit they were all gone."""
        root = self.ctx[key]
        seconds = self.trials.agent(root, "uninstall", name, action="removed")[0]
        start = time.perf_counter()
        if not reclaim.wait(Layout.at(root), timeout=TIMEOUT):
            raise TrialFailed(f"{root}: var/lib/mgr-agent/reclaim/ not emptied")
        return {"agent-uninstall": seconds, "agent-reclaimed": time.perf_counter() - start}

    def groups(self, rep: int) -> list[tuple[str, list[Member]]]:
        """What repetition ``rep`` runs, in order; members of a group are compared."""
        h, t, z, d, isp = self.headline, self.trials, self.zips, self.debs, self.isp
        p, q = f"plesk-{h}/", f"isp-{h}/"
        fresh: list[Member] = [(p + "agent-install",
                                lambda: self._agent_fresh(z["v1"], "agent", rss=p + "agent-install-rss"))]
        isp_fresh: list[Member] = [(q + "agent-install", lambda: self._agent_fresh(isp["v1"], "isp"))]
        upgrade: list[Member] = [(p + "agent-upgrade",
                                  lambda: self._agent_upgrade(z["v1"], z["v2"], p + "agent-upgrade-rss"))]
        isp_upgrade: list[Member] = [(q + "agent-upgrade", lambda: self._agent_upgrade(isp["v1"], isp["v2"]))]
        big = rep < self.big_reps  # the secondary groups run fewer repetitions
        uninstall: list[Member] = [
            (p + "agent-uninstall", lambda: self._uninstall("agent", pl.PLESK_EXT))]
        if big:
            uninstall.append((q + "agent-uninstall", lambda: self._uninstall("isp", pl.ISP_PLUGIN)))
        if self.have_unzip:
            fresh.append((p + "unzip", lambda: t.unzip(z["v1"])))
            if big:  # what making unzip's files durable costs: the floor under the unzip row
                fresh += [(p + f"unzip-{how}", functools.partial(t.unzip_durable, z["v1"], how))
                          for how in ("syncfs", "fsync")]
            isp_fresh.append((q + "unzip", lambda: t.unzip(isp["v1"])))
        if self.have_dpkg:
            fresh.append((p + "dpkg-install", lambda: self._dpkg_fresh(d["v1"], "dpkg")))
            isp_fresh.append((q + "dpkg-install", lambda: self._dpkg_fresh(d["isp-v1"], "dpkg-isp")))
            upgrade.append((p + "dpkg-upgrade", lambda: self._dpkg_upgrade(d["v1"], d["v2"])))
            isp_upgrade.append((q + "dpkg-upgrade", lambda: self._dpkg_upgrade(d["isp-v1"], d["isp-v2"])))
            uninstall.append((p + "dpkg-remove",
                              lambda: t.dpkg(self.ctx["dpkg"], "-r", pl.deb_name("plesk"))))
            if big:
                uninstall.append((q + "dpkg-remove",
                                  lambda: t.dpkg(self.ctx["dpkg-isp"], "-r", pl.deb_name("ispmanager"))))
        modes: list[Member] = [
            (p + f"agent-install-{mode}", functools.partial(self._agent_fresh, z["v1"], mode, mode))
            for mode in self.modes if mode != self.default_mode and big]
        scaling: list[Member] = [  # the fixed cost, measured beside the sizes it is taken from
            ("scaling/agent-fixed", lambda: self._agent_fresh(self.fixed_zip, "scaling-fixed"))]
        for n, zip_path in self.other.items():
            if n == self.biggest and not big:
                continue
            scaling.append((f"plesk-{n}/agent-install",
                            functools.partial(self._agent_fresh, zip_path, "scaling")))
            if self.have_unzip:
                scaling.append((f"plesk-{n}/unzip", functools.partial(t.unzip, zip_path)))
            if self.have_dpkg:
                scaling.append((f"plesk-{n}/dpkg-install",
                                functools.partial(self._dpkg_fresh, d[f"plesk-{n}"], "scaling-dpkg")))
        py, cmd = self.python, agent_command(self.python)
        startup: list[Member] = [
            ("startup/python-pass", lambda: t.run([py, "-c", "pass"])[0]),
            ("startup/agent-version", lambda: t.run([*cmd, "--version"])[0]),
            ("startup/agent-list", lambda: t.agent(self.list_root, "list", action="listed")[0]),
        ]
        return [
            ("fresh install", fresh),
            ("no-op reinstall",
             [(p + "agent-noop", lambda: t.install(self.ctx["agent"], z["v1"], "unchanged"))]),
            ("upgrade, every file changed", upgrade),
            ("upgrade, 1% changed",
             [(p + "agent-upgrade-1pct", lambda: self._agent_upgrade(z["v1"], z["v1b"]))]),
            ("automatic rollback after a failing post-install",
             [(p + "rollback", lambda: self._rollback(z))]),
            ("manual rollback",
             [(p + "agent-manual-rollback", lambda: self._manual_rollback(z, pl.PLESK_EXT))] if big else []),
            ("durability modes, idle filesystem", modes),
            ("ispmanager plugin: fresh install", isp_fresh),
            ("ispmanager plugin: upgrade, every file changed", isp_upgrade if big else []),
            ("ispmanager plugin: no-op reinstall",
             [(q + "agent-noop", lambda: t.install(self.ctx["isp"], isp["v1"], "unchanged"))] if big else []),
            ("ispmanager plugin: upgrade, 1% changed",
             [(q + "agent-upgrade-1pct", lambda: self._agent_upgrade(isp["v1"], isp["v1b"]))] if big else []),
            ("ispmanager plugin: automatic and manual rollback", [
                (q + "rollback", lambda: self._rollback(isp)),
                (q + "agent-manual-rollback", lambda: self._manual_rollback(isp, pl.ISP_PLUGIN)),
            ] if big else []),
            ("scaling", scaling),
            *[("startup", startup)] * 3,
            ("logs -n 100", [
                ("logs/tail", lambda: t.run(["tail", "-n", "100", str(self.log)])[0]),
                ("logs/agent", lambda: t.run([*cmd, "--root", str(self.log_root),
                                              "logs", "-n", "100"])[0])]),
            ("uninstall", uninstall),  # last: deletions slow down the creations after them
        ]

    # ------------------------------------------------------------ running
    def record(self, name: str, result: float | dict[str, float]) -> None:
        if isinstance(result, dict):
            prefix = name.rpartition("/")[0]
            for key, value in result.items():
                self.samples[f"{prefix}/{key}"].append(value)
        else:
            self.samples[name].append(result)

    def run(self) -> None:
        self.build()
        for rep in range(self.reps):
            mark = self.trials.count
            for title, members in self.groups(rep):
                if not members:
                    continue
                shift = rep % len(members)
                order = members[shift:] + members[:shift]
                log(f"rep {rep + 1}/{self.reps}: {title}: " + ", ".join(n for n, _ in order))
                for name, fn in order:
                    self.record(name, fn())
            used = _used(self.trial_root)
            self.peak_used = max(self.peak_used, used)
            log(f"rep {rep + 1}/{self.reps}: {used / trialfs.GIB:.1f} GiB in use on the trials' filesystem; "
                "deleting this repetition's trees (untimed)")
            self.trials.remove_after(mark)
        if self.live_reps == 0:
            self.idle_rows()
            return
        # The idle rows measure the CPU and RSS of processes that only wait, which the live
        # phase's I/O does not change: they run alongside it (a minute saved).
        idle = threading.Thread(target=self.idle_rows, name="idle-rows")
        idle.start()
        try:
            self.live_server()
        finally:
            idle.join()
        if "logs/idle-cpu" not in self.samples:
            raise RuntimeError("the idle rows failed (see the traceback above)")

    def idle_rows(self) -> None:
        """`logs -f` and the daemon, idle at the same time (both only wait): CPU and RSS."""
        log(f"idle `logs -f` and idle daemon, side by side, for {self.idle_seconds:g} s"
            + (" (during the live-server phase)" if self.live_reps else ""))
        results: dict[str, Any] = {}

        def follow() -> None:
            results["follow"] = logs_bench.idle_follow_cpu(self.log_root, self.idle_seconds, self.python)

        def daemon() -> None:
            results["daemon"] = logs_bench.idle_daemon(self.work / "daemonroot", self.idle_seconds,
                                                       self.python)

        threads = [threading.Thread(target=follow), threading.Thread(target=daemon)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if "follow" not in results or "daemon" not in results:
            raise RuntimeError("an idle row failed (see the traceback above)")
        self.samples["logs/idle-cpu"].append(results["follow"])
        self.record("daemon/x", results["daemon"])

    def live_server(self) -> None:
        """Fresh installs in every durability mode and with dpkg while a background writer
        dirties ``writer_rate`` MB/s on the same filesystem.  Before each install: ``sync``,
        then the writer writes ``live_backlog`` seconds' worth more (the dirty backlog the
        install finds); the install itself starts without a ``sync``."""
        h, z, t = self.headline, self.zips, self.trials
        members: list[tuple[str, Callable[[], float]]] = []
        for mode in self.modes:
            def agent(mode: str = mode) -> float:
                root = t.agent_root("live-agent", durability=mode)
                return t.install(root, z["v1"], sync=False)
            members.append((f"live/agent-{mode}", agent))
        if self.have_dpkg:
            def dpkg() -> float:
                root = t.dpkg_root("live-dpkg")
                return t.dpkg(root, "-i", str(self.debs["v1"]), sync=False)
            members.append(("live/dpkg-install", dpkg))
        backlog = int(self.live_backlog * self.writer_rate * MB)
        ring = self.trial_root / "live/ring.bin"  # the same filesystem as the installs
        log(f"live server: a writer dirties {self.writer_rate:g} MB/s in {ring.parent}; "
            f"{self.live_backlog:g} s of backlog before each install ({h:,} files)")
        with live.Writer(ring, self.writer_rate, ring_mb=self.ring_mb) as writer:
            for rep in range(self.live_reps):
                shift = rep % len(members)
                order = members[shift:] + members[:shift]
                log(f"live {rep + 1}/{self.live_reps}: " + ", ".join(n for n, _ in order))
                for name, fn in order:
                    os.sync()
                    writer.wait_written(backlog)
                    seconds, window = live.timed(writer, fn)
                    self.samples[name].append(seconds)
                    self.samples[name + "-writer-mbps"].append(window.mb_per_s)
                    self.samples[name + "-writer-stall"].append(window.max_stall)
                    self.samples[name + "-writer-commit"].append(window.max_commit)
            # the writer alone, for as long as the last install took: its undisturbed rate
            os.sync()
            writer.wait_written(backlog)
            start = time.monotonic()
            writer.wait_written(int(seconds * self.writer_rate * MB))
            alone = writer.window(start, time.monotonic())
            self.samples["live/writer-alone-mbps"].append(alone.mb_per_s)
            self.samples["live/writer-alone-stall"].append(alone.max_stall)
            self.samples["live/writer-alone-commit"].append(alone.max_commit)
        ring.unlink(missing_ok=True)
        ring.with_name(ring.name + ".commit").unlink(missing_ok=True)

    # ------------------------------------------------------------ rows
    def rows(self) -> list[report.Row]:
        h, s = self.headline, self.samples
        p, q = f"plesk-{h}/", f"isp-{h}/"
        fresh, isp_fresh = p + "agent-install", q + "agent-install"
        no_dpkg = None if self.have_dpkg else "dpkg not found"
        no_unzip = None if self.have_unzip else "unzip not found"
        n = f"{h:,} files"
        pass_ = "startup/python-pass"
        return [
            report.ratio_row("fresh-vs-dpkg", f"fresh install, {n} (Plesk extension)", "`dpkg -i`",
                             1.0, s, p + "dpkg-install", fresh, skip=no_dpkg),
            report.ratio_row("fresh-vs-unzip", f"fresh install, {n} (Plesk extension)",
                             "`unzip -o` into an empty dir", 1.5, s, p + "unzip", fresh, skip=no_unzip),
            report.floor_row("fresh-vs-unzip-syncfs", f"fresh install, {n} (Plesk extension)",
                             "`unzip -o`, then `sync -f`", s, p + "unzip-syncfs", fresh,
                             plain=p + "unzip", skip=no_unzip),
            report.floor_row("fresh-vs-unzip-fsync", f"fresh install, {n} (Plesk extension)",
                             "`unzip -o`, then `sync` of each file", s, p + "unzip-fsync", fresh,
                             plain=p + "unzip", skip=no_unzip),
            report.ratio_row("upgrade-vs-dpkg", f"upgrade, every file changed, {n}",
                             "`dpkg -i` of the next version", 0.8, s,
                             p + "dpkg-upgrade", p + "agent-upgrade", skip=no_dpkg),
            report.ratio_row("upgrade-1pct", f"upgrade, 1% of files changed, {n}",
                             "mgr-agent fresh install", 0.2, s, fresh, p + "agent-upgrade-1pct"),
            report.ratio_row("rollback", f"automatic rollback after a failing post-install, {n}",
                             "mgr-agent fresh install", 0.3, s, fresh, p + "agent-rollback",
                             note="upgrade 1.0 → 2.0 (every file changed) whose post-install exits 1; "
                                  "timed from the start of the undo to the exit; whole failed "
                                  "command: " + _fmt(report.median(s.get(p + "agent-failed-upgrade")))),
            report.ratio_row("manual-rollback", f"manual `rollback` after an upgrade, {n}",
                             "mgr-agent fresh install", 0.5, s, fresh, p + "agent-manual-rollback",
                             note="`mgr-agent rollback` after the upgrade 1.0 → 2.0 (every file changed): "
                                  "back to 1.0, the whole command"),
            report.ratio_row("uninstall-vs-dpkg", f"uninstall, {n}", "`dpkg -r`", 1.0,
                             s, p + "dpkg-remove", p + "agent-uninstall", skip=no_dpkg,
                             note=_reclaimed(s, p)),
            report.wall_row("noop", f"reinstall of identical content (no-op), {n}", 0.150, s,
                            p + "agent-noop"),
            report.scaling_row(s, self.files, "plesk-{n}/agent-install", "scaling/agent-fixed",
                               self.fixed_files),
            report.over_row("logs-n100", f"`mgr-agent logs -n 100` on a "
                            f"{self.log_bytes / 2**30:.2g} GiB log", 40, s, pass_, "logs/agent",
                            note="`tail -n 100` of the same log: "
                                 + report.fmt_time(report.median(s.get("logs/tail")))),
            report.over_row("startup-list", f"`mgr-agent list` with {TINY_PLUGINS} installed", 60, s,
                            pass_, "startup/agent-list"),
            report.over_row("startup-version", "`mgr-agent --version`", 30, s,
                            pass_, "startup/agent-version"),
            report.rss_row("peak-rss", f"peak RSS of a fresh install, {n}, "
                           f"{self.described[self.zips['v1'].name]['bytes'] / MB:.0f} MB", 100, s,
                           p + "agent-install-rss", p + "agent-upgrade-rss"),
            report.cpu_row("logs-follow-idle", f"`mgr-agent logs -f` idle for {self.idle_seconds:g} s",
                           s, "logs/idle-cpu"),
            report.daemon_row(f"daemon idle for {self.idle_seconds:g} s (watchdog running)", s),
            report.ratio_row("isp-fresh-vs-dpkg", f"fresh install, {n} (ispmanager plugin)",
                             "`dpkg -i`", 1.0, s, q + "dpkg-install", isp_fresh, skip=no_dpkg),
            report.ratio_row("isp-fresh-vs-unzip", f"fresh install, {n} (ispmanager plugin)",
                             "`unzip -o` into an empty dir", 1.5, s, q + "unzip", isp_fresh,
                             skip=no_unzip),
            report.ratio_row("isp-upgrade-vs-dpkg", f"upgrade, every file changed, {n} (ispmanager plugin)",
                             "`dpkg -i` of the next version", 0.8, s,
                             q + "dpkg-upgrade", q + "agent-upgrade", skip=no_dpkg),
            report.ratio_row("isp-upgrade-1pct", f"upgrade, 1% of files changed, {n} (ispmanager plugin)",
                             "mgr-agent fresh install", 0.2, s, isp_fresh, q + "agent-upgrade-1pct"),
            report.ratio_row("isp-rollback", f"automatic rollback after a failing post-install, {n} "
                             "(ispmanager plugin)", "mgr-agent fresh install", 0.3, s, isp_fresh,
                             q + "agent-rollback",
                             note="as for the Plesk extension (the post-install script exits 1); "
                                  "whole failed command: "
                                  + _fmt(report.median(s.get(q + "agent-failed-upgrade")))),
            report.ratio_row("isp-manual-rollback", f"manual `rollback` after an upgrade, {n} "
                             "(ispmanager plugin)", "mgr-agent fresh install", 0.5, s, isp_fresh,
                             q + "agent-manual-rollback"),
            report.ratio_row("isp-uninstall-vs-dpkg", f"uninstall, {n} (ispmanager plugin)", "`dpkg -r`",
                             1.0, s, q + "dpkg-remove", q + "agent-uninstall", skip=no_dpkg,
                             note=_reclaimed(s, q)),
            report.wall_row("isp-noop", f"reinstall of identical content (no-op), {n} (ispmanager plugin)",
                            0.150, s, q + "agent-noop"),
        ]

    def durability(self) -> dict[str, Any]:
        """The durability comparison: each mode (and dpkg) on an idle and on a live filesystem."""
        h, s = self.headline, self.samples
        entries: list[dict[str, Any]] = []
        for mode in [*self.modes, "dpkg"]:
            if mode == "dpkg":
                if not self.have_dpkg:
                    continue
                idle, busy = f"plesk-{h}/dpkg-install", "live/dpkg-install"
            else:
                idle = f"plesk-{h}/agent-install" + ("" if mode == self.default_mode else f"-{mode}")
                busy = f"live/agent-{mode}"
            entries.append({
                "mode": mode, "default": mode == self.default_mode,
                "idle": report.median(s.get(idle)), "live": report.median(s.get(busy)),
                "writer_mbps": report.median(s.get(busy + "-writer-mbps")),
                "writer_stall": max(s.get(busy + "-writer-stall") or [0.0]) if s.get(busy) else None,
                "writer_commit": max(s.get(busy + "-writer-commit") or [0.0]) if s.get(busy) else None,
                "samples": {"idle": s.get(idle, []), "live": s.get(busy, []),
                            "writer_mbps": s.get(busy + "-writer-mbps", []),
                            "writer_stall": s.get(busy + "-writer-stall", []),
                            "writer_commit": s.get(busy + "-writer-commit", [])}})
        return {"modes": self.modes, "default": self.default_mode, "writer_rate_mb": self.writer_rate,
                "backlog_seconds": self.live_backlog, "reps": self.live_reps, "files": h,
                "writer_alone_mbps": report.median(s.get("live/writer-alone-mbps")),
                "writer_alone_stall": max(s.get("live/writer-alone-stall") or [0.0]),
                "writer_alone_commit": max(s.get("live/writer-alone-commit") or [0.0]),
                "entries": entries}

    def document(self, rows: list[report.Row], argv: list[str], quick: bool) -> dict[str, Any]:
        measures = {name: {"median": report.median(v), "min": min(v), "max": max(v), "samples": v}
                    for name, v in sorted(self.samples.items())}
        durability = self.durability()
        scaling = report.scaling_series(self.samples, self.files, "scaling/agent-fixed",
                                        self.fixed_files)
        return {
            "schema": 2,
            "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": argv,
            "settings": {"sizes": self.sizes, "reps": self.reps, "quick": quick,
                         "big_reps": min(self.big_reps, self.reps), "live_reps": self.live_reps,
                         "headline_size": self.headline, "seed": pl.SEED, "generator": pl.GENERATOR,
                         "idle_seconds": self.idle_seconds, "log_bytes": self.log_bytes},
            "machine": machine(self.work, {**self.trial_fs, "peak_used_bytes": self.peak_used}
                               if self.trial_fs else None, self.python),
            "agent": agent_info(self.modes),
            "payloads": self.described,
            "rows": [r.to_dict() for r in rows],
            "durability": durability,
            "scaling": scaling,
            "measures": measures,
            "notes": self.notes,
            "table": report.markdown(rows),
            "durability_table": report.durability_markdown(durability),
        }


def _used(path: Path) -> int:
    """Bytes in use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _reclaimed(samples: dict[str, list[float]], prefix: str) -> str:
    """The uninstall rows' note: when the trees handed over were deleted."""
    after = report.median(samples.get(prefix + "agent-reclaimed"))
    return ("the command returns once the plugin is out of the panel and committed; its old "
            "trees are deleted by a detached process (docs/transactions.md#reclaimed-trees), "
            f"all gone {'—' if after is None else f'{after * 1000:.0f} ms'} after the exit (median)")


def _fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, pl.SIZES)),
                        help="payload sizes in files, comma-separated (default %(default)s)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, 2 with --quick)")
    parser.add_argument("--big-reps", type=int, default=3,
                        help="repetitions of the secondary groups: the scaling group at the biggest size, "
                             "the non-default durability modes, the manual rollback and the ispmanager "
                             "rows but its fresh install (default %(default)s)")
    parser.add_argument("--live-reps", type=int, default=None,
                        help="repetitions of the live-server phase (default 2, 1 with --quick; 0: none)")
    parser.add_argument("--live-backlog", type=float, default=None, metavar="SECONDS",
                        help="the writer's output left dirty before each live install "
                             "(default 6, 1 with --quick)")
    parser.add_argument("--writer-rate", type=float, default=50.0, metavar="MB/S",
                        help="the background writer's rate (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="for CI: the smallest size only, 2 repetitions (unless --reps), "
                             "a 64 MiB log, 5 s idle rows, one short live round")
    parser.add_argument("--json-out", type=Path, default=RESULTS / "latest.json", metavar="PATH")
    parser.add_argument("--work", type=Path, default=RESULTS / "work", metavar="DIR",
                        help="payload cache, and the trials' image (with --fs here: the trial "
                             "roots themselves) (default %(default)s)")
    parser.add_argument("--fs", choices=("image", "here"), default="image",
                        help="image: the trials run on a journaled ext4 image made and loop-mounted "
                             "in --work (as root; else as with `here`, with a note in the results); "
                             "here: in --work itself (default %(default)s)")
    parser.add_argument("--fs-size", type=float, default=None, metavar="GIB",
                        help="the image's size (default 8, 2 with --quick); it is written in "
                             "full before mkfs, and a repetition's trees are deleted after it")
    parser.add_argument("--python", default=None, metavar="PATH|current",
                        help="the interpreter of the agent measured: a venv of it is built with the "
                             "agent pip-installed, as deploy/install.sh does on a server (default: "
                             "$BENCH_PYTHON, else the distribution's /usr/bin/python3); `current`: "
                             "this interpreter and the agent it imports (the development venv)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the trial roots after the run (and the image mounted)")
    args = parser.parse_args(argv)
    args.size_list = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    if args.quick:
        args.size_list = args.size_list[:1]
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.live_reps is None:
        args.live_reps = 1 if args.quick else 2
    if args.live_backlog is None:
        args.live_backlog = 1.0 if args.quick else 6.0
    if args.fs_size is None:
        args.fs_size = 2.0 if args.quick else 8.0
    if not args.size_list or args.reps < 1 or args.big_reps < 1 or args.live_reps < 0:
        parser.error("need at least one size and one repetition")
    if args.fs_size <= 0:
        parser.error("--fs-size must be positive")
    return args


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so that the trial image is unmounted and deleted."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = args.work.absolute()
    started = time.monotonic()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    if args.python == "current":
        python, what = sys.executable, f"this interpreter ({sys.executable})"
    else:
        python, what = deployed.agent_python(work, args.python)
    log(f"the agent measured runs on {what}")
    with trialfs.TrialFilesystem(work, args.fs, int(args.fs_size * trialfs.GIB), keep=args.keep) as fs:
        bench = Bench(args.size_list, args.reps, work, fs.root, python)
        bench.notes.append(f"the agent measured: {what}")
        bench.trial_fs = fs.info
        if fs.note:
            bench.notes.append(fs.note)
        bench.big_reps = args.big_reps
        bench.live_reps = args.live_reps
        bench.live_backlog = args.live_backlog
        bench.writer_rate = args.writer_rate
        bench.log_bytes = (64 << 20) if args.quick else (1 << 30)
        bench.idle_seconds = 5.0 if args.quick else 60.0
        bench.ring_mb = 256 if args.quick else 2048
        shutil.rmtree(bench.trials.trials, ignore_errors=True)  # left by an interrupted run
        try:
            bench.run()
        finally:
            if not args.keep and not fs.mounted:  # an image goes as a whole
                log("deleting the trial roots")
                bench.trials.cleanup()
        rows = bench.rows()
        doc = bench.document(rows, sys.argv[1:] if argv is None else argv, args.quick)
    doc["settings"]["wall_seconds"] = round(time.monotonic() - started, 1)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(doc, indent=1) + "\n")
    info = doc["agent"]
    print(f"mgr-agent {info['version']}, durability: {info['durability_default']} "
          f"(modes: {', '.join(info['durability_modes'])}); "
          f"{args.reps} repetition{'s' if args.reps != 1 else ''}; medians")
    print(doc["table"])
    print()
    print(doc["durability_table"])
    for note in bench.notes:
        print(f"note: {note}")
    met = sum(r.status == "met" for r in rows)
    missed = [r.key for r in rows if r.status == "missed"]
    print(f"\n{met} met, {len(missed)} missed{': ' + ', '.join(missed) if missed else ''}; "
          f"{doc['settings']['wall_seconds']:.0f} s")
    print(f"JSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
