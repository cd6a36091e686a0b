"""``follow`` while a writer appends to ispmgr.log and rotates it: every line exactly once, in
order; an idle follow sleeps on inotify instead of polling."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pty
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pytest

from mgr_agent.layout import Layout
from mgr_agent.panels.base import LogQuery
from mgr_agent.panels.ispmanager import logreader, logrecords, logs
from mgr_agent.panels.ispmanager.logfollow import follow
from mgr_agent.panels.ispmanager.logrecords import Record
from tests.waits import Feed, wait_for

Rotate = Callable[[Path, TextIO], TextIO]


def entry(i: int) -> str:
    """Record ``i``; every fifth has continuation lines (written in the same write)."""
    body = "".join(f"\n  <elem n='{k}'/>" for k in range(3)) if i % 5 == 0 else ""
    return f"\x1b[1;30mNov 21 10:{i // 60 % 60:02d}:{i % 60:02d}\x1b[0m [4242:{i % 4}] core_module " \
           f"\x1b[1;32mINFO\x1b[0m line {i}{body}\n"


def first_lines(records: list[Record]) -> list[str]:
    return [r.message.splitlines()[0] for r in records]


class Collector(threading.Thread):
    """Runs ``follow`` in a thread and keeps what it yields."""

    def __init__(self, path: Path, **kw: object) -> None:
        super().__init__(daemon=True)
        self.path, self.kw = path, kw
        self.stop = threading.Event()
        self.got: Feed[Record] = Feed()
        self.cpu = 0.0

    def run(self) -> None:
        t0 = time.thread_time()
        for rec in follow(self.path, stop=self.stop, **self.kw):  # type: ignore[arg-type]
            self.got.append(rec)
        self.cpu = time.thread_time() - t0

    def wait_for(self, count: int, timeout: float = 15) -> None:
        self.got.wait_until(lambda got: len(got) >= count, what=f"{count} records", timeout=timeout)

    def finish(self, count: int, timeout: float = 15) -> list[Record]:
        """Wait for ``count`` records, then stop: the follower reads the file once more before
        it ends, so anything it would repeat shows up too."""
        self.wait_for(count, timeout)
        self.stop.set()
        self.join(5)
        assert not self.is_alive()
        return self.got.items()


def watched_by_inotify(path: Path) -> bool:
    """An inotify watch of this process is on ``path``'s inode (``/proc/self/fdinfo``). The
    follower adds it once it has opened the file and fixed its offset; nothing announces that."""
    inode = f" ino:{os.stat(path).st_ino:x} "
    for fd in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError):
            if any(line.startswith("inotify wd:") and inode in line
                   for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()):
                return True
    return False


def started(log: Path, reader: Collector) -> str:
    """Append a record and wait until ``reader`` yields it: from then on the follower is on
    the file and its offset is fixed. Returns that record's first line."""
    with open(log, "a") as fh:
        fh.write(entry(9999))
    reader.wait_for(1)
    return "line 9999"


def rename(path: Path, fh: TextIO) -> TextIO:
    """logrotate without copytruncate: .1 -> .2, the log -> .1, a new empty log."""
    fh.close()
    one = path.with_name(path.name + ".1")
    if one.exists():
        os.replace(one, path.with_name(path.name + ".2"))
    os.rename(path, one)
    return open(path, "a")


def copytruncate(path: Path, fh: TextIO) -> TextIO:
    """logrotate copytruncate: copy to .1, truncate in place; the writer keeps its O_APPEND fd."""
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    os.truncate(path, 0)
    return fh


def panel_rotation(path: Path, fh: TextIO) -> TextIO:
    """ispmanager at max_log_size: the content goes to var/logs/*.gz, the log is truncated in
    place and its new first line names the archive."""
    archive = path.parent / "logs" / f"ispmgr.log.2026-11-21_10-{time.time_ns() % 10**6}.0.gz"
    archive.parent.mkdir(exist_ok=True)
    with open(path, "rb") as src, gzip.open(archive, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.truncate(path, 0)
    fh.write(f"Nov 21 10:30:00 [4242:1] core INFO log continued, archive {archive.name}\n")
    fh.flush()
    return fh


def write_with_rotations(path: Path, total: int, rotations: dict[int, Rotate],
                         interval: float = 0.003) -> list[str]:
    """Append ``total`` records, rotating before the given ones; returns the first line of every
    record the log received (rotation markers included), in order. No pause before a rotation,
    so the follower may not have read the last lines when the file is cut."""
    expected: list[str] = []
    fh: TextIO = open(path, "a")  # noqa: SIM115 - a rotation may swap it for a new file
    for i in range(total):
        if i in rotations:
            fh = rotations[i](path, fh)
            if rotations[i] is panel_rotation:
                expected.append(path.read_text().splitlines()[0].split("INFO ", 1)[1])
        fh.write(entry(i))
        fh.flush()
        expected.append(f"line {i}")
        if i + 1 not in rotations:
            time.sleep(interval)
    fh.close()
    return expected


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "usr/local/mgr5/var/ispmgr.log"
    path.parent.mkdir(parents=True)
    path.write_text("".join(entry(i) for i in range(-5, 0)))     # history: not followed
    return path


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "poll"])
@pytest.mark.parametrize("kind", ["rename", "copytruncate", "panel", "mixed"])
def test_follow_loses_and_repeats_nothing_across_rotation(log: Path, kind: str, use_inotify: bool) -> None:
    rotations: dict[str, dict[int, Rotate]] = {
        "rename": {60: rename, 130: rename},
        "copytruncate": {60: copytruncate, 130: copytruncate},
        "panel": {60: panel_rotation, 130: panel_rotation},
        "mixed": {50: panel_rotation, 100: rename, 150: copytruncate},
    }
    reader = Collector(log, use_inotify=use_inotify, poll_interval=0.05, start=log.stat().st_size)
    reader.start()
    expected = [started(log, reader), *write_with_rotations(log, 200, rotations[kind])]
    got = reader.finish(len(expected))
    assert first_lines(got) == expected
    assert all(r.message.count("\n") == 3 for r in got if r.message.startswith("line ")
               and int(r.message.split()[1]) % 5 == 0)          # continuations stayed together


def test_truncation_recovers_what_was_not_read_yet_from_the_archive(log: Path) -> None:
    """Deterministic: the generator is suspended while lines are appended and the file is cut."""
    stop = threading.Event()
    records = follow(log, start=0, stop=stop, timeout=10, flush_after=0.05)
    assert first_lines([next(records) for _ in range(4)]) == [f"line {i}" for i in range(-5, -1)]
    with open(log, "a") as fh:      # not read yet ...
        fh.write(entry(1) + entry(2))
    with open(log, "a") as fh:      # ... and moved to var/logs/*.gz
        panel_rotation(log, fh)
    with open(log, "a") as fh:
        fh.write(entry(3))
    got = []
    for rec in records:
        got.append(rec.message.splitlines()[0])
        if got[-1] == "line 3":
            stop.set()
    assert got[0] == "line -1" and got[1:3] == ["line 1", "line 2"]
    assert got[3].startswith("log continued, archive ispmgr.log.") and got[4:] == ["line 3"]


def test_follow_waits_for_the_file_and_sees_a_deleted_one_come_back(tmp_path: Path) -> None:
    path = tmp_path / "ispmgr.log"
    reader = Collector(path, start=0)     # a file that appears is read from its start
    reader.start()
    path.write_text(entry(1))
    reader.wait_for(1)
    path.unlink()
    path.write_text(entry(2))   # the follower holds the old file open: the new one is a new inode
    assert first_lines(reader.finish(2)) == ["line 1", "line 2"]


def test_idle_follow_sleeps_and_still_wakes_at_once(log: Path) -> None:
    reader = Collector(log)         # from the end: the history is not followed
    reader.start()
    wait_for(lambda: watched_by_inotify(log), what=f"an inotify watch on {log}")
    time.sleep(3.0)                 # the idle period under test (not a wait for another side)
    t0 = time.monotonic()
    with open(log, "a") as fh:
        fh.write(entry(7))
    reader.wait_for(1, timeout=2)
    latency = time.monotonic() - t0
    reader.finish(1)
    print(f"idle follow: {reader.cpu * 1000:.1f} ms CPU over ~3 s; new line after {latency * 1000:.0f} ms")
    assert first_lines(reader.got.items()) == ["line 7"]
    assert reader.cpu < 0.1
    assert latency < 0.6            # inotify wake-up + flush_after (0.3 s), not a 1 s poll


def test_logs_yields_the_last_records_then_follows(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    path = logreader.log_path(layout)
    path.parent.mkdir(parents=True)
    path.write_text("".join(entry(i) for i in range(20)) + "Nov 21 10:00:59 [1:1] core INFO half")
    stop = threading.Event()
    got: Feed[str] = Feed()

    def run() -> None:
        for rec in logs.records(path, LogQuery(n=2, follow=True, level="INFO"), stop=stop):
            got.append(rec.text())

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    got.wait_until(lambda text: "line 19" in "".join(text), what="the last two records")
    with open(path, "a") as fh:     # finishes the half-written line, then one more record
        fh.write(" a line\n" + entry(21))
    got.wait_until(lambda text: "line 21" in "".join(text), what="the appended records")
    stop.set()
    runner.join(5)
    assert not runner.is_alive()
    lines = [x for x in "\n".join(got.items()).splitlines() if not x.startswith("  <elem")]
    assert [x.split(" ", 5)[5] for x in lines] == ["line 18", "line 19", "half a line", "line 21"]


# ---------------------------------------------------------------- the CLI renders the records

def run_logs_cli(root: Path, *args: str, tty: bool = False, no_color: bool = False) -> tuple[int, str]:
    """``mgr-agent logs ARGS --root ROOT`` as a process; stdout on a pipe or on a terminal."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | ({"NO_COLOR": "1"} if no_color else {})
    argv = [sys.executable, "-m", "mgr_agent", "logs", *args, "--root", str(root)]
    if not tty:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
        return done.returncode, done.stdout
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:         # EIO: the terminal's other end was closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(60), b"".join(chunks).decode().replace("\r\n", "\n")


def test_the_cli_prints_records_as_text_json_and_colour_on_a_terminal(tmp_path: Path) -> None:
    path = logreader.log_path(Layout.at(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_text("Nov 21 10:00:01 [7:1] core_module ERR bad\n  <doc/>\n"
                    "Nov 21 10:00:02 [7:2] core_module WARN careful\nNov 21 10:00:03 [7:3] core INFO fine\n")
    year = logrecords.parse_line("Nov 21 10:00:01 x INFO y").time.year  # type: ignore[union-attr]
    expected = [f"{year}-11-21 10:00:01 7:1 core_module ERR bad", "  <doc/>",
                f"{year}-11-21 10:00:02 7:2 core_module WARN careful",
                f"{year}-11-21 10:00:03 7:3 core INFO fine"]
    code, out = run_logs_cli(tmp_path, "-n", "3")
    assert code == 0 and out.splitlines() == expected
    code, out = run_logs_cli(tmp_path, "-n", "2", "--json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(d["level"], d["message"], d["pid"], d["thread"]) for d in docs] == [
        ("WARN", "careful", 7, "2"), ("INFO", "fine", 7, "3")]
    code, out = run_logs_cli(tmp_path, "-n", "3", tty=True)
    lines = out.splitlines()
    assert code == 0 and lines[:2] == [f"\x1b[31m{expected[0]}", f"{expected[1]}\x1b[0m"]
    assert lines[2].startswith("\x1b[33m") and "\x1b" not in lines[3]
    code, out = run_logs_cli(tmp_path, "-n", "3", tty=True, no_color=True)
    assert code == 0 and out.splitlines() == expected
