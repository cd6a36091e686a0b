"""``make demo``: the main job on a sandbox root, with the real CLI in subprocesses.

Builds a sample ispmanager plugin and a sample Plesk extension, installs them,
upgrades them, shows an upgrade whose post-install hook fails being rolled back
automatically, rolls back on request, and uninstalls, printing each step.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from mgr_agent import signals
from mgr_agent.layout import Layout
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip
from mgr_agent.sandbox.standin import install_standin
from mgr_agent.sandbox.standin.core import our_cores

BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


def tree_digest(path: Path) -> str:
    """One hash of every file (path, mode, content) under ``path``."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{file.stat().st_mode:o}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


class Demo:
    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.layout = Layout.at(root)
        self.colour = sys.stdout.isatty()

    def say(self, text: str) -> None:
        print(f"\n{BOLD if self.colour else ''}== {text}{RESET if self.colour else ''}", flush=True)

    def run(self, *args: str, expect: int = 0) -> None:
        argv = [sys.executable, "-m", "mgr_agent", "--root", str(self.root), *args]
        shown = "mgr-agent --root $ROOT " + " ".join(a.replace(str(self.work), "$WORK") for a in args)
        print(f"{DIM if self.colour else ''}$ {shown}{RESET if self.colour else ''}", flush=True)
        done = subprocess.run(argv, check=False, capture_output=True, text=True)
        for line in (done.stdout + done.stderr).splitlines():
            if not line.startswith("··· "):
                print("  " + line.replace(str(self.root), "$ROOT").replace(str(self.work), "$WORK"))
        print(f"  (exit {done.returncode})")
        if done.returncode != expect:
            raise SystemExit(f"demo: expected exit {expect}, got {done.returncode}")

    def main(self) -> None:
        (self.layout.psa).mkdir(parents=True, exist_ok=True)
        (self.layout.psa / "version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
        isp = {v: write_zip(ispmanager_files("demo", v), self.work / f"demo-{v}.zip")
               for v in ("1.0", "1.1")}
        isp_bad = write_zip(ispmanager_files("demo", "1.2", post_install="echo 'cannot migrate' >&2; exit 3"),
                            self.work / "demo-1.2-broken.zip")
        ext = {v: write_zip(plesk_files("demo-ext", v), self.work / f"demo-ext-{v}.zip")
               for v in ("1.0", "1.1")}
        failing = 'fwrite(STDERR, "db migration failed\\n"); exit(2);'
        ext_bad = write_zip(plesk_files("demo-ext", "1.2", post_install=failing),
                            self.work / "demo-ext-1.2-broken.zip")
        print(f"sandbox root: {self.root}\npackages:     {self.work}")

        self.say("ispmanager plugin: validate, install, upgrade")
        self.run("check", str(isp["1.0"]))
        self.run("install", str(isp["1.0"]))
        self.run("install", str(isp["1.1"]))
        self.run("install", str(isp["1.1"]))
        before = tree_digest(self.layout.mgr)
        self.say("ispmanager plugin: an upgrade whose post-install hook fails is rolled back")
        self.run("install", str(isp_bad), expect=8)
        after = tree_digest(self.layout.mgr)
        print(f"  tree of usr/local/mgr5 before {before}, after {after}: "
              f"{'identical' if before == after else 'DIFFERENT'}")
        if before != after:
            raise SystemExit("demo: rollback did not restore the tree")

        self.say("ispmanager plugin: an upgrade that breaks the running panel is rolled back")
        install_standin(self.layout)
        subprocess.run([str(self.layout.mgr / "sbin/mgrctl"), "-m", "ispmgr"], check=True,
                       capture_output=True, timeout=30)
        print("  (a stand-in ispmanager core is running: it loads plugin XML and calls handlers, "
              "logging to var/ispmgr.log)")
        broken = ispmanager_files("demo", "1.3", extra={"addon/demo.py": (
            b"#!/bin/sh\ncat >/dev/null\necho 'Traceback: this is not XML'\n", 0o755)})
        isp_breaks_panel = write_zip(broken, self.work / "demo-1.3-bad-handler.zip")
        self.run("install", str(isp_breaks_panel), "--health-window", "5", expect=8)
        self.run("call", "demo.settings")
        self.run("logs", "-n", "4", "--plugin", "demo")

        self.say("Plesk extension: install, upgrade (var/ kept), failed upgrade rolled back")
        self.run("install", str(ext["1.0"]))
        settings = self.layout.psa / "var/modules/demo-ext/settings.json"
        settings.write_text('{"changed_by_admin": true}\n')
        print("  (the administrator edits var/modules/demo-ext/settings.json)")
        self.run("install", str(ext["1.1"]))
        print(f"  settings.json after the upgrade: {settings.read_text().strip()}")
        before = tree_digest(self.layout.psa)
        self.run("install", str(ext_bad), expect=8)
        after = tree_digest(self.layout.psa)
        print(f"  tree of usr/local/psa before {before}, after {after}: "
              f"{'identical' if before == after else 'DIFFERENT'}")
        if before != after:
            raise SystemExit("demo: rollback did not restore the tree")

        self.say("rollback on request, dry run, list, history")
        self.run("rollback", "demo-ext")
        self.run("uninstall", "demo", "--dry-run")
        self.run("list")
        self.run("history")

        self.say("uninstall (Plesk data kept unless --purge)")
        self.run("uninstall", "demo", "--health-window", "1")
        self.run("uninstall", "demo-ext")
        print(f"  var/modules/demo-ext kept: {settings.exists()}")
        self.run("list")
        leftovers = sorted(str(p.relative_to(self.root)) for p in self.root.rglob(".mga-*"))
        print(f"\nstaging/backup leftovers under the root: {leftovers or 'none'}")

    def stop_core(self) -> None:
        """End the stand-in core the demo started (also after Ctrl-C or a closed pipe)."""
        mgrctl = self.layout.mgr / "sbin/mgrctl"
        if mgrctl.exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([str(mgrctl), "-m", "ispmgr", "exit"], check=False,
                               capture_output=True, timeout=30)
        left = our_cores(self.layout.mgr)
        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(left, timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, help="sandbox root (default: a new temp dir)")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="mgr-agent-demo-") as tmp:
            root = args.root or Path(tmp) / "root"
            root.mkdir(parents=True, exist_ok=True)
            demo = Demo(root.absolute(), Path(tmp))
            try:
                demo.main()
            finally:
                with signals.held():  # a second Ctrl-C waits until the core is stopped
                    demo.stop_core()
        print("\ndemo finished: every step behaved as expected")
    except KeyboardInterrupt:
        print("\ndemo interrupted; its stand-in core was stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `make demo | head`: stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(128 + signal.SIGPIPE) from None



if __name__ == "__main__":
    main()
