"""Running a package's pre-install, post-install and pre-uninstall hooks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgr_agent.errors import HookFailed, StageFailed
from mgr_agent.fsutil import write_new
from mgr_agent.package import Package
from mgr_agent.panels.base import HookSpec, Panel
from mgr_agent.proc import Runner


@dataclass(frozen=True)
class HookRun:
    hook: str
    argv: list[str]
    returncode: int
    output: str
    seconds: float
    timed_out: bool
    timeout: float

    def failure(self, plugin: str) -> HookFailed | None:
        """The error to raise for a failed run (its output is the message), or None."""
        if self.timed_out:
            return HookFailed(f"{self.hook} hook of {plugin} ran over its timeout of "
                              f"{self.timeout:g} s and was killed with its process group",
                              hook=self.hook, output=self.output)
        if self.returncode != 0:
            shown = self.output.strip() or "(no output)"
            return HookFailed(f"{self.hook} hook of {plugin} exited with {self.returncode}: {shown}",
                              hook=self.hook, output=self.output)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"hook": self.hook, "argv": self.argv, "exit_code": self.returncode,
                "output": self.output, "seconds": round(self.seconds, 3),
                "timed_out": self.timed_out}


def hook_args(old: tuple[str, str] | None) -> list[str]:
    """``install`` on a fresh install, ``upgrade OLD_VERSION OLD_RELEASE`` otherwise."""
    return ["install"] if old is None else ["upgrade", old[0], old[1]]


def run_hook(
    panel: Panel,
    pkg: Package,
    spec: HookSpec,
    args: list[str],
    *,
    runner: Runner,
    scratch: Path,
    timeout: float,
    env: dict[str, str],
) -> HookRun:
    """Run one hook to completion; see :meth:`HookRun.failure` for the verdict."""
    installed = panel.layout.under(spec.installed) if spec.installed else None
    if installed is not None and installed.is_file():
        script = installed
    else:
        assert spec.entry is not None
        script = scratch / f"{spec.hook}{Path(spec.entry).suffix}"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            if not script.exists():
                write_new(script, pkg.source.chunks(spec.entry), 0o700)
        except OSError as exc:
            raise StageFailed(f"cannot write the scratch copy of the {spec.hook} hook "
                              f"{exc.filename or script}: {os.strerror(exc.errno or 0)}",
                              path=str(exc.filename or script), errno=exc.errno) from exc
    if not spec.interpreter:
        with open(script, "rb") as fh:
            magic = fh.read(4)
        if not (magic.startswith(b"#!") or magic == b"\x7fELF"):
            raise HookFailed(f"{spec.hook} hook of {pkg.name}: {spec.entry} is neither a script "
                             "with a #! line nor an executable program", hook=spec.hook,
                             hint="start the hook with a line such as #!/bin/sh")
    argv = [*spec.interpreter, str(script), *args]
    cwd = spec.cwd if spec.cwd.is_dir() else scratch
    full_env = {**panel.hook_env(), **env, "MGR_AGENT_ROOT": str(panel.layout.root),
                "MGR_AGENT_HOOK": spec.hook}
    try:
        done = runner.run(argv, cwd=cwd, env=full_env, timeout=timeout)
    except OSError as exc:
        raise HookFailed(f"{spec.hook} hook of {pkg.name}: cannot run {argv[0]}: "
                         f"{os.strerror(exc.errno or 0)}", hook=spec.hook,
                         hint="a hook needs a #! line, or PHP for Plesk hooks") from exc
    return HookRun(spec.hook, argv, done.returncode, done.output, done.seconds, done.timed_out,
                   timeout)
