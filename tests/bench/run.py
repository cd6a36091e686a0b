"""``make bench``: mgr-agent against unzip and dpkg on the same payloads, side by side.

    python -m tests.bench.run [--sizes 500,5000,20000] [--reps 5] [--quick] [--json-out PATH]

Each repetition runs every group of commands being compared one after the other, in an
order rotated from one repetition to the next (A B, then B A), so that neither side
always runs first.  Rows report medians and ratios; the targets are those of issue 4.
Nothing here fails on timing: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python tests/bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mgr_agent import __version__, transaction
from mgr_agent.config import Config
from mgr_agent.engine import Engine
from mgr_agent.layout import Layout
from tests.bench import logs_bench, report
from tests.bench import payload as pl
from tests.bench.trials import REPO, Trials

RESULTS = REPO / "tests/bench/results"
TINY_PLUGINS = 200
Member = tuple[str, Callable[[], float | dict[str, float]]]


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


def machine(work: Path) -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "dpkg": _version(["dpkg", "--version"]), "unzip": _version(["unzip", "-v"]),
            "filesystem": _mount(work)}


def agent_info() -> dict[str, Any]:
    """Which durability the agent really uses: the configured default, and whether the
    transaction code calls ``sync_filesystems`` (one syncfs per filesystem) at all."""
    source = inspect.getsource(transaction)
    return {"version": __version__, "durability_default": Config().durability,
            "transaction_uses_syncfs": "sync_filesystems(" in source}


class Bench:
    def __init__(self, sizes: list[int], reps: int, work: Path) -> None:
        self.sizes = sorted(sizes)
        self.reps = reps
        self.work = work
        self.headline = 5_000 if 5_000 in self.sizes else self.sizes[0]
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.payloads = pl.Payloads(work / "payloads")
        self.trials = Trials(work, sys.executable)
        self.have_dpkg = bool(shutil.which("dpkg") and shutil.which("dpkg-deb"))
        self.have_unzip = bool(shutil.which("unzip"))
        self.notes: list[str] = []
        self.files: dict[int, int] = {}
        self.described: dict[str, dict[str, int]] = {}
        self.log_bytes = 1 << 30
        self.idle_seconds = 60.0
        self.ctx: dict[str, Path] = {}

    # ------------------------------------------------------------ preparation
    def build(self) -> None:
        h = self.headline
        log(f"building payloads in {self.payloads.cache} (cached between runs)")
        self.zips = {v: self.payloads.zip("plesk", h, v) for v in pl.VARIANTS}
        self.isp_zip = self.payloads.zip("ispmanager", h, "v1")
        self.other = {n: self.payloads.zip("plesk", n, "v1") for n in self.sizes if n != h}
        self.debs: dict[str, Path] = {}
        if self.have_dpkg:
            self.debs = {v: self.payloads.deb("plesk", h, v) for v in ("v1", "v2")}
            self.debs["isp"] = self.payloads.deb("ispmanager", h, "v1")
        self.log_root = self.work / "logroot"
        log(f"building a {self.log_bytes >> 20} MiB ispmgr.log")
        self.log = logs_bench.build_log(self.log_root, self.log_bytes)
        for n in self.sizes:
            path = self.zips["v1"] if n == h else self.other[n]
            self.described[path.name] = pl.describe(path)
            self.files[n] = self.described[path.name]["files"]
        self.described[self.isp_zip.name] = pl.describe(self.isp_zip)
        log(f"setting up a root with {TINY_PLUGINS} installed plugins (untimed)")
        self.list_root = self.trials.agent_root("list")
        engine = Engine(Layout.at(self.list_root))
        for z in pl.tiny_plugins(TINY_PLUGINS, self.work / "payloads/tiny"):
            engine.install(z)

    # ------------------------------------------------------------ members
    def _agent_fresh(self, zip_path: Path, key: str, durability: str | None = None) -> float:
        root = self.trials.agent_root("agent-fresh", durability=durability)
        self.ctx[key] = root
        return self.trials.install(root, zip_path)

    def _dpkg_fresh(self, deb: Path, key: str) -> float:
        root = self.trials.dpkg_root("dpkg-fresh")
        self.ctx[key] = root
        return self.trials.dpkg(root, "-i", str(deb))

    def _agent_upgrade(self, new: Path) -> float:
        root = self.trials.agent_root("agent-upgrade")
        self.trials.install(root, self.zips["v1"], timed=False)
        return self.trials.install(root, new, "upgraded")

    def _dpkg_upgrade(self) -> float:
        root = self.trials.dpkg_root("dpkg-upgrade")
        self.trials.dpkg(root, "-i", str(self.debs["v1"]), timed=False)
        return self.trials.dpkg(root, "-i", str(self.debs["v2"]))

    def _rollback(self) -> dict[str, float]:
        root = self.trials.agent_root("agent-rollback")
        self.trials.install(root, self.zips["v1"], timed=False)
        undo, total = self.trials.failing_upgrade(root, self.zips["v2fail"])
        return {"agent-rollback": undo, "agent-failed-upgrade": total}

    def groups(self) -> list[tuple[str, list[Member]]]:
        """What each repetition runs, in order; members of a group are compared."""
        h, t, z = self.headline, self.trials, self.zips
        p = f"plesk-{h}/"
        fresh: list[Member] = [(p + "agent-install", lambda: self._agent_fresh(z["v1"], "agent"))]
        isp: list[Member] = [(f"isp-{h}/agent-install", lambda: self._agent_fresh(self.isp_zip, "isp"))]
        upgrade: list[Member] = [(p + "agent-upgrade", lambda: self._agent_upgrade(z["v2"]))]
        uninstall: list[Member] = [
            (p + "agent-uninstall",
             lambda: t.agent(self.ctx["agent"], "uninstall", pl.PLESK_EXT, action="removed")[0])]
        if self.have_unzip:
            fresh.append((p + "unzip", lambda: t.unzip(z["v1"])))
            isp.append((f"isp-{h}/unzip", lambda: t.unzip(self.isp_zip)))
        if self.have_dpkg:
            fresh.append((p + "dpkg-install", lambda: self._dpkg_fresh(self.debs["v1"], "dpkg")))
            isp.append((f"isp-{h}/dpkg-install", lambda: self._dpkg_fresh(self.debs["isp"], "dpkg-isp")))
            upgrade.append((p + "dpkg-upgrade", self._dpkg_upgrade))
            uninstall.append((p + "dpkg-remove",
                              lambda: t.dpkg(self.ctx["dpkg"], "-r", pl.deb_name("plesk"))))
        scaling: list[Member] = []
        for n, zip_path in self.other.items():
            scaling.append((f"plesk-{n}/agent-install",
                            lambda zp=zip_path: self._agent_fresh(zp, "scaling")))
            if self.have_unzip:
                scaling.append((f"plesk-{n}/unzip", lambda zp=zip_path: t.unzip(zp)))
        py = sys.executable
        startup: list[Member] = [
            ("startup/python-pass", lambda: t.run([py, "-c", "pass"])[0]),
            ("startup/agent-version", lambda: t.run([py, "-m", "mgr_agent", "--version"])[0]),
            ("startup/agent-list", lambda: t.agent(self.list_root, "list", action="listed")[0]),
        ]
        return [
            ("fresh install", fresh),
            ("no-op reinstall",
             [(p + "agent-noop", lambda: t.install(self.ctx["agent"], z["v1"], "unchanged"))]),
            ("upgrade, every file changed", upgrade),
            ("upgrade, 1% changed", [(p + "agent-upgrade-1pct", lambda: self._agent_upgrade(z["v1b"]))]),
            ("rollback after a failing post-install", [(p + "rollback", self._rollback)]),
            ('[durability] mode = "fsync"',
             [(p + "agent-install-fsync", lambda: self._agent_fresh(z["v1"], "fsync", "fsync"))]),
            ("ispmanager plugin", isp),
            ("scaling", scaling),
            *[("startup", startup)] * 3,
            ("logs -n 100", [
                ("logs/tail", lambda: t.run(["tail", "-n", "100", str(self.log)])[0]),
                ("logs/agent", lambda: t.run([py, "-m", "mgr_agent", "--root", str(self.log_root),
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
            free_before = shutil.disk_usage(self.work).free
            for title, members in self.groups():
                if not members:
                    continue
                shift = rep % len(members)
                order = members[shift:] + members[:shift]
                log(f"rep {rep + 1}/{self.reps}: {title}: " + ", ".join(n for n, _ in order))
                for name, fn in order:
                    self.record(name, fn())
            free_after = shutil.disk_usage(self.work).free
            if rep == 0:
                log(f"idle `logs -f` for {self.idle_seconds:g} s")
                self.samples["logs/idle-cpu"].append(
                    logs_bench.idle_follow_cpu(self.log_root, self.idle_seconds))
                log(f"idle daemon for {self.idle_seconds:g} s")
                self.record("daemon/x", logs_bench.idle_daemon(self.work / "daemonroot",
                                                                self.idle_seconds))
            if rep + 1 < self.reps and free_after < 2 * (free_before - free_after) + (2 << 30):
                self.notes.append(f"low disk space: trial trees deleted after repetition {rep + 1}")
                self.trials.cleanup()
                os.sync()

    # ------------------------------------------------------------ rows
    def rows(self) -> list[report.Row]:
        h, s = self.headline, self.samples
        p = f"plesk-{h}/"
        fresh = p + "agent-install"
        no_dpkg = None if self.have_dpkg else "dpkg not found"
        no_unzip = None if self.have_unzip else "unzip not found"
        n = f"{h:,} files"
        rows = [
            report.ratio_row("fresh-vs-unzip", f"fresh install, {n} (Plesk extension)",
                             "`unzip -o` into an empty dir", 2.0, "≤ 2.0× unzip", s,
                             p + "unzip", fresh, skip=no_unzip),
            report.ratio_row("fresh-vs-dpkg", f"fresh install, {n} (Plesk extension)", "`dpkg -i`",
                             1.0, "≤ 1.0× dpkg", s, p + "dpkg-install", fresh, skip=no_dpkg),
            report.ratio_row("upgrade-vs-dpkg", f"upgrade, every file changed, {n}",
                             "`dpkg -i` of the next version", 1.0, "≤ 1.0× dpkg", s,
                             p + "dpkg-upgrade", p + "agent-upgrade", skip=no_dpkg),
            report.ratio_row("upgrade-1pct", f"upgrade, 1% of files changed, {n}",
                             "mgr-agent fresh install", 0.3, "≤ 0.3× install", s, fresh,
                             p + "agent-upgrade-1pct"),
            report.ratio_row("rollback", f"automatic rollback after a failing post-install, {n}",
                             "mgr-agent fresh install", 0.5, "≤ 0.5× install", s, fresh,
                             p + "agent-rollback",
                             note="upgrade 1.0 → 2.0 (every file changed) whose post-install exits 1; "
                                  "timed from the start of the undo to the exit; whole failed "
                                  "command: " + _fmt(report.median(s.get(p + "agent-failed-upgrade")))),
            report.ratio_row("uninstall-vs-dpkg", f"uninstall, {n}", "`dpkg -r`", 1.0, "≤ 1.0× dpkg",
                             s, p + "dpkg-remove", p + "agent-uninstall", skip=no_dpkg),
            report.wall_row("noop", f"reinstall of identical content (no-op), {n}", 0.3, s,
                            p + "agent-noop"),
            report.scaling_row(s, self.files, "plesk-{n}/agent-install"),
            report.over_row("startup-version", "`mgr-agent --version`", 150, s,
                            "startup/python-pass", "startup/agent-version"),
            report.over_row("startup-list", f"`mgr-agent list` with {TINY_PLUGINS} installed", 150, s,
                            "startup/python-pass", "startup/agent-list"),
            report.ratio_row("logs-tail", f"`mgr-agent logs -n 100` on a "
                             f"{self.log_bytes / 2**30:.2g} GiB log", "`tail -n 100`", 5.0,
                             "≤ 5× tail", s, "logs/tail", "logs/agent",
                             note="both as whole processes: the agent's figure is mostly the "
                                  "interpreter's start"),
            report.cpu_row("logs-follow-idle", f"`mgr-agent logs -f` idle for {self.idle_seconds:g} s",
                           s, "logs/idle-cpu"),
            report.daemon_row(f"daemon idle for {self.idle_seconds:g} s (watchdog running)", s),
            report.ratio_row("isp-fresh-vs-unzip", f"fresh install, {n} (ispmanager plugin)",
                             "`unzip -o` into an empty dir", 2.0, "≤ 2.0× unzip", s,
                             f"isp-{h}/unzip", f"isp-{h}/agent-install", skip=no_unzip),
            report.ratio_row("isp-fresh-vs-dpkg", f"fresh install, {n} (ispmanager plugin)",
                             "`dpkg -i`", 1.0, "≤ 1.0× dpkg", s, f"isp-{h}/dpkg-install",
                             f"isp-{h}/agent-install", skip=no_dpkg),
        ]
        info = agent_info()
        fsync = report.ratio_row(
            "fsync-mode", f'fresh install, {n}, `[durability] mode = "fsync"`',
            "mgr-agent fresh install (default mode)", 0.0, "— (informational)", s, fresh,
            p + "agent-install-fsync",
            note="one fsync per file instead of one syncfs per filesystem"
            if info["transaction_uses_syncfs"] else
            "this agent version does not read the setting: every file is fsynced in both runs")
        fsync.target_value, fsync.status = None, "info"
        rows.append(fsync)
        return rows

    def document(self, rows: list[report.Row], argv: list[str], quick: bool) -> dict[str, Any]:
        measures = {name: {"median": report.median(v), "min": min(v), "max": max(v), "samples": v}
                    for name, v in sorted(self.samples.items())}
        return {
            "schema": 1,
            "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": argv,
            "settings": {"sizes": self.sizes, "reps": self.reps, "quick": quick,
                         "headline_size": self.headline, "seed": pl.SEED, "generator": pl.GENERATOR},
            "machine": machine(self.work),
            "agent": agent_info(),
            "payloads": self.described,
            "rows": [r.to_dict() for r in rows],
            "measures": measures,
            "notes": self.notes,
            "table": report.markdown(rows),
        }


def _fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, pl.SIZES)),
                        help="payload sizes in files, comma-separated (default %(default)s)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="for CI: the smallest size only, 2 repetitions (unless --reps)")
    parser.add_argument("--json-out", type=Path, default=RESULTS / "latest.json", metavar="PATH")
    parser.add_argument("--work", type=Path, default=RESULTS / "work", metavar="DIR",
                        help="payload cache and trial roots (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the trial roots after the run")
    args = parser.parse_args(argv)
    args.size_list = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    if args.quick:
        args.size_list = args.size_list[:1]
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if not args.size_list or args.reps < 1:
        parser.error("need at least one size and one repetition")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = args.work.absolute()
    bench = Bench(args.size_list, args.reps, work)
    bench.log_bytes = (64 << 20) if args.quick else (1 << 30)
    bench.idle_seconds = 5.0 if args.quick else 60.0
    shutil.rmtree(bench.trials.trials, ignore_errors=True)  # left by an interrupted run
    try:
        bench.run()
    finally:
        if not args.keep:
            log("deleting the trial roots")
            bench.trials.cleanup()
    rows = bench.rows()
    doc = bench.document(rows, sys.argv if argv is None else argv, args.quick)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(doc, indent=1) + "\n")
    info = doc["agent"]
    print(f"mgr-agent {info['version']}, durability: {info['durability_default']} "
          f"(syncfs in the transaction: {'yes' if info['transaction_uses_syncfs'] else 'no'}); "
          f"{args.reps} repetition{'s' if args.reps != 1 else ''}; medians")
    print(doc["table"])
    for note in bench.notes:
        print(f"note: {note}")
    print(f"\nJSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
