"""The helper process that hashes a large package's entries not kept in memory
(``mgr_agent.hashproc``): real zips, a real ``python -m mgr_agent.hashproc``, compared
with the threads that do the same work without it."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from mgr_agent import hashing, hashproc, package, secretscan
from mgr_agent.checks import safety
from mgr_agent.config import Config
from mgr_agent.errors import InvalidPackage
from mgr_agent.layout import Layout
from mgr_agent.panels import Panel, all_panels
from mgr_agent.proc import Runner
from mgr_agent.sandbox import samples
from tests.helpers import damage

TOKEN = b"ghp_" + b"A1b2C3d4E5" * 4  # what the secrets scan reports as a GitHub token


def _panels(tmp_path: Path) -> list[Panel]:
    return all_panels(Layout.at(tmp_path / "root"), Config())


def _tree() -> samples.Tree:
    """Small entries (kept in memory), and entries over ``KEEP_FILE`` (left to the
    background): text ones, one holding a token, and incompressible ones."""
    line = b"<?php // some code, as code compresses\n"
    extra = {f"skins/common/img/bg/s{i:03d}.txt": (line * 80, 0o644) for i in range(30)}
    extra |= {f"skins/common/img/bg/text{i}.php": (line * 9000 + (TOKEN if i == 1 else b""), 0o644)
              for i in range(3)}
    extra |= {f"skins/common/img/bg/big{i}.bin": (random.Random(i).randbytes(400_000), 0o644)
              for i in range(3)}
    return samples.ispmanager_files("bg", extra=extra)


SCAN = hashing.Scan(secretscan.secret_hits, safety.SCAN_LIMIT)


def _load(zip_path: Path, tmp_path: Path, runner: Runner | None) -> package.Package:
    return package.load(zip_path, _panels(tmp_path), background=True, scan=SCAN, runner=runner)


@pytest.fixture
def helper_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "HELPER_FROM", 0)


def test_the_helper_gives_what_the_threads_give(tmp_path: Path, helper_always: None) -> None:
    zip_path = samples.write_zip(_tree(), tmp_path / "bg.zip")
    threads = _load(zip_path, tmp_path, None)
    helped = _load(zip_path, tmp_path, Runner())
    try:
        assert isinstance(helped.pending, hashproc.Helper)
        assert threads.pending is not None and not isinstance(threads.pending, hashproc.Helper)
        assert helped.pending.names == threads.pending.names != frozenset()
        scanned = helped.pending.results()
        assert scanned == threads.pending.results()
        token = [n for n, hits in scanned.items() if hits]
        assert len(token) == 1 and token[0].endswith("text1.php")
        helped.hashed()
        threads.hashed()
        assert {n: s.sha256 for n, s in helped.files.items()} == \
            {n: s.sha256 for n, s in threads.files.items()}
        assert helped.content_hash == threads.content_hash != ""
        assert helped.archive_digest() == threads.archive_digest() == \
            hashlib.sha256(zip_path.read_bytes()).hexdigest()
    finally:
        threads.close()
        helped.close()


def _damaged(tmp_path: Path) -> Path:
    tree = _tree()
    zip_path = samples.write_zip(tree, tmp_path / "bg.zip")
    damage(zip_path, tree["skins/common/img/bg/big2.bin"][0])
    return zip_path


def test_a_damaged_entry_is_refused_as_without_the_helper(tmp_path: Path,
                                                           helper_always: None) -> None:
    """The helper answers nothing for the damaged entry; the agent reads it again and
    refuses it with the rule and message the threads give."""
    zip_path = _damaged(tmp_path)
    refusals = []
    for runner in (None, Runner()):
        pkg = _load(zip_path, tmp_path, runner)
        try:
            assert isinstance(pkg.pending, hashproc.Helper) == (runner is not None)
            with pytest.raises(InvalidPackage, match=r"big2\.bin") as caught:
                pkg.hashed()
            refusals.append((str(caught.value), caught.value.details.get("rule")))
        finally:
            pkg.close()
    assert refusals[0] == refusals[1] and refusals[0][1] == "corrupt-data"


class _Silent(Runner):
    """A runner whose helper reads its request and dies without a word."""

    def start(self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        return super().start([sys.executable, "-c", "import sys; sys.stdin.buffer.read()"],
                             cwd=cwd, env=env, pass_fds=pass_fds)


def test_a_helper_that_answers_nothing_leaves_the_work_to_the_agent(
        tmp_path: Path, helper_always: None, caplog: pytest.LogCaptureFixture) -> None:
    zip_path = samples.write_zip(_tree(), tmp_path / "bg.zip")
    now = package.load(zip_path, _panels(tmp_path))
    pkg = _load(zip_path, tmp_path, _Silent())
    try:
        assert isinstance(pkg.pending, hashproc.Helper)
        assert any(pkg.pending.results().values())  # the token, found by the agent itself
        pkg.hashed()
        assert pkg.content_hash == now.content_hash
        assert pkg.archive_digest() == now.archive_sha256
    finally:
        now.close()
        pkg.close()
    said = [r.getMessage() for r in caplog.records if r.name == "mgr_agent"]
    assert said == ["the hashing helper ended before its last answer (exit status 0): "
                    "the agent reads what it left"]


class _Swapping(Runner):
    """A runner that replaces the archive at its path just before the helper starts."""

    def __init__(self, path: Path, other: Path) -> None:
        super().__init__()
        self.path, self.other = path, other

    def start(self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        os.replace(self.other, self.path)
        return super().start(argv, cwd=cwd, env=env, pass_fds=pass_fds)


def test_the_helper_reads_the_archive_the_agent_opened(tmp_path: Path, helper_always: None) -> None:
    """The helper reads through the agent's own descriptor: a file put at the archive's
    path meanwhile is not what it hashes (the agent stages what it opened)."""
    zip_path = samples.write_zip(_tree(), tmp_path / "bg.zip")
    original = zip_path.read_bytes()
    now = package.load(zip_path, _panels(tmp_path))
    other = _tree()
    other["skins/common/img/bg/big0.bin"] = (b"another file" * 40_000, 0o644)
    swapped = samples.write_zip(other, tmp_path / "other.zip")
    pkg = _load(zip_path, tmp_path, _Swapping(zip_path, swapped))
    try:
        assert isinstance(pkg.pending, hashproc.Helper)
        pkg.hashed()
        assert zip_path.read_bytes() != original  # the path holds the other archive now
        assert pkg.content_hash == now.content_hash
        assert pkg.archive_digest() == hashlib.sha256(original).hexdigest()
    finally:
        now.close()
        pkg.close()


def test_close_stops_the_helper(tmp_path: Path, helper_always: None) -> None:
    zip_path = samples.write_zip(_tree(), tmp_path / "bg.zip")
    pkg = _load(zip_path, tmp_path, Runner())
    helper = pkg.pending
    assert isinstance(helper, hashproc.Helper)
    pkg.close()  # at once, while the helper may still read: it is killed and reaped
    assert helper._proc.returncode is not None
    assert pkg.pending is None


AGENT = """
import sys, time
from pathlib import Path
from mgr_agent.proc import Runner
proc = Runner().start(["sleep", "600"], cwd=Path("/"))
print(proc.pid, flush=True)
time.sleep(600)  # killed by the test long before
"""


@pytest.mark.skipif(not Runner().pdeathsig, reason="needs setpriv (util-linux)")
def test_what_runner_start_starts_dies_with_the_agent() -> None:
    """An agent SIGKILLed while a process it started with ``Runner.start`` (the helper)
    runs: that process is killed too, by setpriv's parent-death signal, even one that
    never looks at its pipes (a helper would also see its stdin end)."""
    agent = subprocess.Popen([sys.executable, "-c", AGENT], stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    helper = int(agent.stdout.readline())  # started, and sleeping
    pidfd = os.pidfd_open(helper)
    try:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        ready, _, _ = select.select([pidfd], [], [], 60)  # readable once it is gone
        assert ready, f"pid {helper} outlived the agent"
    finally:
        os.close(pidfd)
