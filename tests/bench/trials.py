"""Timed commands for the benchmark: every trial in a root of its own, only the command timed.

Before each timed command the bench waits for the detached reclaimers of the agent's
earlier commands to finish (they delete old trees after an upgrade or an uninstall
returned), then flushes the page cache's dirty data (``os.sync``), so that no command
pays for the deletions or the write-back of the one before it.  Trial trees are not deleted
while measuring: on this kind of machine (ext4, ``discard``) the first thousands of file
creations after a large deletion run several times slower, which would penalise
whichever command came next.  They are deleted at the end of the run (see
:meth:`Trials.cleanup`).
"""

from __future__ import annotations

import compileall
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgr_agent import reclaim
from mgr_agent.layout import Layout
from tests.bench.agent_rss import ENV as RSS_ENV

REPO = Path(__file__).resolve().parents[2]
PLESK_VERSION = "18.0.60 Debian 12.0 1800240311.09\n"
# dpkg into a prefix: --root implies --instdir and --admindir under it.  Not root on
# some machines: --force-not-root.  --force-bad-path: PATH checks for ldconfig etc.
# --force-script-chrootless: maintainer scripts (none in our .deb) would not chroot.
# --log=/dev/null: do not append to a dpkg.log.  --no-force-unsafe-io: dpkg fsyncs
# every file before renaming it into place, as a stock Debian server's dpkg does, even
# where /etc/dpkg/dpkg.cfg.d/ forces unsafe-io (Docker images ship docker-apt-speedup,
# which does: then a plain dpkg does no per-file fsync).  See dpkg_config().
DPKG_NO_UNSAFE_IO = "--no-force-unsafe-io"
DPKG_FLAGS = ("--force-not-root", "--force-bad-path", "--force-script-chrootless", "--log=/dev/null",
              DPKG_NO_UNSAFE_IO)
DPKG_CONFIG = (Path("/etc/dpkg/dpkg.cfg"), Path("/etc/dpkg/dpkg.cfg.d"))
UNDO_MARK = "restoring the previous state"
TIMEOUT = 1800.0  # seconds: any one command


@dataclass(frozen=True)
class Usage:
    """What ``wait4`` says about one finished command."""

    seconds: float
    maxrss_kib: int
    user: float
    system: float


class TrialFailed(RuntimeError):
    """A benchmarked command did not do what it should (exit code or outcome)."""


def dpkg_config(paths: tuple[Path, ...] = DPKG_CONFIG) -> dict[str, Any]:
    """The ``force-…`` options this machine's dpkg configuration sets (dpkg.cfg and every
    file of dpkg.cfg.d), and the flags the bench passes to override them."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files.append(path)
    found: dict[str, list[str]] = {}
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        forced = [line.strip() for line in lines
                  if line.strip().startswith(("force-", "no-force-", "refuse-"))]
        if forced:
            found[str(path)] = forced
    unsafe = any(o.startswith("force-") and "unsafe-io" in o.removeprefix("force-").split(",")
                 for opts in found.values() for o in opts)
    return {"config_forces": found, "config_forces_unsafe_io": unsafe,
            "bench_flags": list(DPKG_FLAGS), "bench_overrides": [DPKG_NO_UNSAFE_IO]}


def env() -> dict[str, str]:
    """The commands' environment: no MGR_AGENT_ settings, and bytecode used as installed.

    ``PYTHONDONTWRITEBYTECODE`` (set on some build machines) would make every start
    compile the agent from source, which no installed agent does (pip compiles it);
    :func:`compile_agent` compiles it once before the trials instead."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MGR_AGENT_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["LC_ALL"] = "C.UTF-8"
    return env


def compile_agent(source: Path = REPO / "agent") -> None:
    """Byte-compile the agent being measured, as ``pip install`` does."""
    compileall.compile_dir(str(source), quiet=1)


def agent_command(python: str) -> list[str]:
    """The installed ``mgr-agent`` command beside the interpreter ``python`` (what an admin
    runs), else ``python -m mgr_agent`` (which also imports runpy's machinery)."""
    script = Path(python).with_name("mgr-agent")
    return [str(script)] if os.access(script, os.X_OK) else [python, "-m", "mgr_agent"]


class Trials:
    """Creates trial roots under ``work`` and runs the commands being compared."""

    def __init__(self, work: Path, python: str) -> None:
        self.work = work
        self.trials = work / "trials"
        self.python = python
        self.count = 0
        self.env = env()
        compile_agent()
        self.last = Usage(0.0, 0, 0.0, 0.0)
        self.agent_maxrss_kib = 0  # the agent process alone, of the last agent(..., rss=True)
        self.reclaiming: set[Path] = set()  # roots whose detached reclaimer may still run

    # ------------------------------------------------------------ roots
    def new_dir(self, label: str) -> Path:
        self.count += 1
        path = self.trials / f"{self.count:05d}-{label}"
        path.mkdir(parents=True)
        return path

    def remove_after(self, mark: int) -> None:
        """Delete the trial directories made after :attr:`count` was ``mark`` (untimed, then
        ``sync``): a finished repetition's, so that the trials' filesystem holds about one
        repetition's trees, reusing blocks already written, as a server's disk does."""
        self.quiet()
        if self.trials.is_dir():
            for path in sorted(self.trials.iterdir()):
                number = path.name.partition("-")[0]
                if number.isdigit() and int(number) > mark:
                    shutil.rmtree(path, ignore_errors=True)
        os.sync()

    def agent_root(self, label: str, *, durability: str | None = None) -> Path:
        """A sandbox root as on a server with both panels: Plesk's version file, mgr5/etc."""
        root = self.new_dir(label)
        (root / "usr/local/psa").mkdir(parents=True)
        (root / "usr/local/psa/version").write_text(PLESK_VERSION)
        (root / "usr/local/mgr5/etc").mkdir(parents=True)
        (root / "var/lib").mkdir(parents=True)
        if durability is not None:
            (root / "etc/mgr-agent").mkdir(parents=True)
            (root / "etc/mgr-agent/agent.toml").write_text(f'[durability]\nmode = "{durability}"\n')
        return root

    def dpkg_root(self, label: str) -> Path:
        """The same skeleton plus an empty dpkg database."""
        root = self.agent_root(label)
        admin = root / "var/lib/dpkg"
        for sub in ("info", "updates", "triggers"):
            (admin / sub).mkdir(parents=True)
        (admin / "status").touch()
        (admin / "available").touch()
        return root

    def cleanup(self) -> None:
        shutil.rmtree(self.trials, ignore_errors=True)

    # ------------------------------------------------------------ running
    def quiet(self) -> None:
        """Wait until the detached reclaimers that the agent's earlier commands started
        have deleted their old trees (``reclaim.wait``: woken by inotify).  Without it, an
        upgrade's 5,000-file deletion could run beside whatever the bench timed next, such
        as ``dpkg``'s upgrade in the same group when the agent's ran first."""
        for root in sorted(self.reclaiming):
            if not reclaim.wait(Layout.at(root), timeout=TIMEOUT):
                raise TrialFailed(f"{root}: var/lib/mgr-agent/reclaim/ not emptied")
        self.reclaiming.clear()

    def run(self, argv: list[str], *, expect: int = 0, timed: bool = True,
            sync: bool | None = None, extra_env: dict[str, str] | None = None) -> tuple[float, str, str]:
        """Run ``argv``; returns (seconds, stdout, stderr).  Raises on another exit code.

        ``sync`` (default: ``timed``) flushes the page cache's dirty data first.  The
        process is reaped with ``wait4``: its peak RSS (the largest of it and the hooks
        it waited for, in KiB) and CPU times are kept in :attr:`last`.
        """
        if timed if sync is None else sync:
            self.quiet()
            os.sync()
        environ = self.env if extra_env is None else {**self.env, **extra_env}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=environ, cwd=REPO)
            killer = threading.Timer(TIMEOUT, proc.kill)  # a hung command must not hang the bench
            killer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            seconds = time.perf_counter() - start
            proc.returncode = returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
        self.last = Usage(seconds, usage.ru_maxrss, usage.ru_utime, usage.ru_stime)
        if returncode != expect:
            raise TrialFailed(f"{' '.join(argv)}: exit {returncode}, expected {expect}\n"
                              f"{stdout[-2000:]}{stderr[-2000:]}")
        return seconds, stdout, stderr

    def agent(self, root: Path, *args: str, action: str | None = None, timed: bool = True,
              expect: int = 0, sync: bool | None = None, rss: bool = False) -> tuple[float, dict[str, Any]]:
        """``mgr-agent --root ROOT ARGS --json`` (:func:`agent_command`); checks ``action``
        when given.

        With ``rss`` the same CLI runs in-process under ``tests.bench.agent_rss``, which
        reports the peak RSS of the agent process alone (without the hooks it waited for)
        into :attr:`agent_maxrss_kib`.
        """
        command = [self.python, "-m", "tests.bench.agent_rss"] if rss else \
            agent_command(self.python)
        argv = [*command, "--root", str(root), *args, "--json"]
        try:
            if not rss:
                seconds, out, _ = self.run(argv, expect=expect, timed=timed, sync=sync)
            else:
                fd, name = tempfile.mkstemp(prefix="bench-rss-")
                os.close(fd)
                try:
                    seconds, out, _ = self.run(argv, expect=expect, timed=timed, sync=sync,
                                               extra_env={RSS_ENV: name})
                    text = Path(name).read_text().strip()
                finally:
                    os.unlink(name)
                if not text.isdigit():
                    raise TrialFailed(f"{' '.join(argv)}: no peak RSS written to ${RSS_ENV} ({text!r})")
                self.agent_maxrss_kib = int(text)
        finally:
            self.reclaiming.add(root)  # its reclaimer may run on after it
        doc: dict[str, Any] = json.loads(out)
        if action is not None and doc.get("action") != action:
            raise TrialFailed(f"{' '.join(argv)}: action {doc.get('action')!r}, expected {action!r}: "
                              f"{doc.get('error')}")
        return seconds, doc

    # ------------------------------------------------------------ baselines
    def unzip(self, zip_path: Path) -> float:
        dest = self.new_dir("unzip")
        return self.run(["unzip", "-o", "-q", str(zip_path), "-d", str(dest)])[0]

    def unzip_durable(self, zip_path: Path, how: str) -> float:
        """``unzip -o``, then its files made durable, timed as one command: ``syncfs`` runs
        ``sync -f`` on the directory (the whole filesystem flushed, one journal commit);
        ``fsync`` fsyncs every file and directory it wrote with ``sync FILE...``, eight
        processes at once (``xargs -P 8``), as the agent's default mode fsyncs eight at once.
        Unlike the agent, unzip starts no write-back while it writes, so the fsyncs find
        all its data still to write."""
        dest = self.new_dir(f"unzip-{how}")
        durable = (f"sync -f {shlex.quote(str(dest))}" if how == "syncfs" else
                   f"find {shlex.quote(str(dest))} -print0 | xargs -0 -P 8 -n 640 sync")
        return self.run(["sh", "-c", f"unzip -o -q {shlex.quote(str(zip_path))} "
                                     f"-d {shlex.quote(str(dest))} && {durable}"])[0]

    def dpkg(self, root: Path, *args: str, timed: bool = True, sync: bool | None = None) -> float:
        return self.run(["dpkg", f"--root={root}", *DPKG_FLAGS, *args], timed=timed, sync=sync)[0]

    # ------------------------------------------------------------ mgr-agent
    def install(self, root: Path, zip_path: Path, action: str = "installed", *,
                timed: bool = True, sync: bool | None = None, rss: bool = False) -> float:
        return self.agent(root, "install", str(zip_path), action=action, timed=timed, sync=sync,
                          rss=rss)[0]

    def rollback(self, root: Path, name: str) -> float:
        """``mgr-agent rollback NAME``: back to the version kept from before the last upgrade."""
        return self.agent(root, "rollback", name, action="rolled_back")[0]

    def failing_upgrade(self, root: Path, zip_path: Path) -> tuple[float, float]:
        """Install a package whose post-install hook fails; (rollback seconds, total seconds).

        Runs without ``--json`` to see the progress line that starts the undo: the
        rollback is timed from that line to the end of the process.
        """
        argv = [*agent_command(self.python), "--root", str(root), "install", str(zip_path)]
        self.quiet()
        self.reclaiming.add(root)  # (added before it starts: nothing is waited for below)
        os.sync()
        start = time.perf_counter()
        mark: float | None = None
        lines: list[str] = []
        with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=self.env, cwd=REPO) as proc:
            assert proc.stderr is not None
            killer = threading.Timer(TIMEOUT, proc.kill)  # a hung command must not hang the bench
            killer.start()
            try:
                for line in proc.stderr:
                    if mark is None and UNDO_MARK in line:
                        mark = time.perf_counter()
                    lines.append(line)
                rc = proc.wait()
            finally:
                killer.cancel()
        end = time.perf_counter()
        text = "".join(lines)
        if rc != 8 or mark is None or "rolled back" not in text:
            raise TrialFailed(f"{' '.join(argv)}: exit {rc}, expected 8 with a rollback\n{text[-2000:]}")
        return end - mark, end - start
