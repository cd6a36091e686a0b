"""Parsing ispmgr.log, level order, the plugin filter, last-N, since (with archives), and the
records `logs` yields."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mgr_agent.errors import NotFound, UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels.base import LogQuery
from mgr_agent.panels.ispmanager import logreader, logrecords, logs
from mgr_agent.panels.ispmanager.logreader import last, since
from mgr_agent.panels.ispmanager.logrecords import (
    Record,
    level_at_least,
    matches_plugin,
    parse_line,
    parse_lines,
)

NOW = datetime(2026, 11, 21, 23, 0, 0)
BASE = datetime(2026, 11, 21, 8, 0, 0)
ESC = "\x1b"


def stamp(t: datetime) -> str:
    return t.strftime("%b %d %H:%M:%S")


def entry(i: int, *, t: datetime | None = None, level: str = "INFO", module: str = "core_module",
          cont: int = 0, width: int = 20, colour: bool = False) -> str:
    """One record as the panel writes it: a head line and ``cont`` continuation lines."""
    t = t or BASE + timedelta(seconds=i)
    if colour:
        head = (f"{ESC}[1;30m{stamp(t)}{ESC}[0m [{1000 + i % 7}:{i % 5}] {ESC}[1;33m{module}{ESC}[0m "
                f"{ESC}[1;31m{level}{ESC}[0m record {i}")
    else:
        head = f"{stamp(t)} [{1000 + i % 7}:{i % 5}] {module} {level} record {i}"
    body = "".join(f"\n  <line n='{k}'>{'x' * width}</line>" for k in range(cont))
    return head + body + "\n"


def write(path: Path, entries: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(entries))
    return path


def rchar() -> int:
    """Bytes this process has read through read(2)/pread(2) so far."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize(("line", "want"), [
    ("Nov 21 10:15:32 [28641:1] core_module INFO Request [1.2.3.4][root] 'func=exampleplugin.settings'",
     (datetime(2026, 11, 21, 10, 15, 32), 28641, "1", "core_module", "INFO",
      "Request [1.2.3.4][root] 'func=exampleplugin.settings'")),
    # colour on (the panel's default): codes around every field
    (f"{ESC}[1;30mNov 21 10:15:33{ESC}[0m [28641:7] {ESC}[1;36mcore{ESC}[0m {ESC}[1;31mERR{ESC}[0m "
     f"Error: Type: 'xml' {ESC}[1mbad{ESC}[0m",
     (datetime(2026, 11, 21, 10, 15, 33), 28641, "7", "core", "ERR", "Error: Type: 'xml' bad")),
    # extra fields in the brackets, a year, ISO times, no module, padded day, fractions, weekday
    ("Nov 21 10:15:34 [28641:3:8f1a] libmgr WARN slow", (datetime(2026, 11, 21, 10, 15, 34), 28641,
                                                        "3:8f1a", "libmgr", "WARN", "slow")),
    ("Nov 21 2025 10:15:35 [1:1] core DEBUG old", (datetime(2025, 11, 21, 10, 15, 35), 1, "1",
                                                   "core", "DEBUG", "old")),
    ("2026-11-20 10:15:36 [12:2] rpc TRACE x=1", (datetime(2026, 11, 20, 10, 15, 36), 12, "2",
                                                  "rpc", "TRACE", "x=1")),
    ("2026-11-20T10:15:37.250 [12] ERROR no module here", (datetime(2026, 11, 20, 10, 15, 37, 250000),
                                                          12, None, None, "ERROR", "no module here")),
    ("Nov  2 01:02:03 [5:5] core_module EXTINFO padded", (datetime(2026, 11, 2, 1, 2, 3), 5, "5",
                                                         "core_module", "EXTINFO", "padded")),
    ("Sat Nov 21 10:15:38 [7:1] core NOTE weekday", (datetime(2026, 11, 21, 10, 15, 38), 7, "1",
                                                      "core", "NOTE", "weekday")),
    ("Nov 21 10:15:39 [main] core FATAL: colon", (datetime(2026, 11, 21, 10, 15, 39), None, "main",
                                                   "core", "FATAL", "colon")),
    # a timestamp, then something that is not the format: kept as the message
    ("Nov 21 10:15:40 something else entirely", (datetime(2026, 11, 21, 10, 15, 40), None, None,
                                                 None, None, "something else entirely")),
])
def test_parse_line(line: str, want: tuple[object, ...]) -> None:
    rec = parse_line(line + "\r\n", now=NOW)
    assert rec is not None
    assert (rec.time, rec.pid, rec.thread, rec.module, rec.level, rec.message) == want
    assert rec.raw == line


@pytest.mark.parametrize("line", ["  <doc><ok/></doc>", "Traceback (most recent call last):",
                                  "", "10:15:32 no date", "Nov 99 10:15:32 [1:1] core INFO bad day"])
def test_lines_without_a_timestamp_are_continuations(line: str) -> None:
    assert parse_line(line, now=NOW) is None


def test_year_is_the_current_one_or_the_previous_when_that_would_be_future() -> None:
    jan = datetime(2027, 1, 2, 9, 0, 0)
    dec = parse_line("Dec 31 23:59:59 [1:1] core INFO x", now=jan)
    assert dec is not None and dec.time == datetime(2026, 12, 31, 23, 59, 59)
    same_day = parse_line("Jan 02 08:00:00 [1:1] core INFO x", now=jan)
    assert same_day is not None and same_day.time == datetime(2027, 1, 2, 8, 0, 0)
    leap = parse_line("Feb 29 08:00:00 [1:1] core INFO x", now=jan)
    assert leap is not None and leap.time == datetime(2024, 2, 29, 8, 0, 0)


def test_continuation_lines_join_their_record_and_orphans_stay_raw() -> None:
    lines = [
        "written before the first record",          # no record to continue: kept as is
        "",
        f"{ESC}[32mNov 21 10:00:00{ESC}[0m [1:1] core_module DEBUG Request xml:",
        "<?xml version=\"1.0\"?>",
        f"  <doc>{ESC}[1m<ok/>{ESC}[0m</doc>",
        "",
        "Nov 21 10:00:01 [1:1] core INFO next",
    ]
    recs = parse_lines(lines, now=NOW)
    assert [r.message for r in recs] == [
        "written before the first record",
        'Request xml:\n<?xml version="1.0"?>\n  <doc><ok/></doc>\n', "next"]
    assert recs[0].time is None and recs[0].level is None and recs[0].raw == lines[0]
    assert recs[1].raw == "\n".join(lines[2:6])
    doc = recs[1].to_json()
    assert doc["time"] == "2026-11-21T10:00:00" and doc["level"] == "DEBUG" and doc["pid"] == 1
    json.dumps(doc)


# ---------------------------------------------------------------- levels and the plugin filter

def test_level_order() -> None:
    order = ["TRACE", "DEBUG", "EXTINFO", "INFO", "NOTE", "WARNING", "ERR", "FATAL"]
    ranks = [logrecords.level_rank(x) for x in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert logrecords.level_rank("WARN") == logrecords.level_rank("warning")
    assert logrecords.level_rank("ERR") == logrecords.level_rank("ERROR")
    rec = Record(level="WARN")
    assert level_at_least(rec, "INFO") and level_at_least(rec, "WARNING")
    assert not level_at_least(rec, "err")
    assert level_at_least(Record(level="ERROR"), "ERR") and level_at_least(Record(level="FATAL"), "ERR")
    # a record without a (known) level counts as INFO
    assert level_at_least(Record(message="raw"), "INFO") and not level_at_least(Record(), "NOTE")
    with pytest.raises(UsageError):
        level_at_least(rec, "LOUD")


def test_matches_plugin_by_whole_names() -> None:
    names = {"exampleplugin.settings", "exampleplugin.py", "ispmgr_mod_exampleplugin.xml"}

    def m(message: str, module: str | None = None) -> bool:
        return matches_plugin(Record(message=message, module=module), names)

    assert m("Request [1.2.3.4][root] 'func=exampleplugin.settings&sok=ok'")
    assert m("Run /usr/local/mgr5/addon/exampleplugin.py failed")
    assert m("XML parse error in /usr/local/mgr5/etc/xml/ispmgr_mod_exampleplugin.xml:3")
    assert m("line 1\n  exampleplugin.py: bad answer")          # in a continuation line
    assert not m("func=exampleplugin.settings2")
    assert not m("func=myexampleplugin.settings")
    assert not m("other_exampleplugin.py")
    assert not m("func=user.edit")
    assert matches_plugin(Record(module="exampleplugin.py"), names)
    assert not matches_plugin(Record(message="anything"), set())


# ---------------------------------------------------------------- last

def test_last_matches_a_full_parse_with_long_continuation_blocks(tmp_path: Path) -> None:
    entries = [entry(i, cont=(i * 7) % 13, width=200 if i % 50 else 30_000,
                     level=("INFO", "ERR", "DEBUG")[i % 3], colour=i % 2 == 0) for i in range(3000)]
    path = write(tmp_path / "ispmgr.log", entries)
    full = parse_lines(path.read_text().splitlines(), now=NOW)
    assert len(full) == 3000
    for n in (1, 2, 10, 100, 999, 3000, 5000):
        assert last(path, n, now=NOW) == full[-n:]
    errors = [r for r in full if r.level == "ERR"]
    assert last(path, 25, level="ERR", now=NOW) == errors[-25:]
    assert last(path, 0, now=NOW) == []


def test_last_without_a_trailing_newline_and_with_orphans_at_the_start(tmp_path: Path) -> None:
    path = tmp_path / "ispmgr.log"
    path.write_text("orphan one\norphan two\n" + entry(1) + entry(2, cont=2).rstrip("\n"))
    recs = last(path, 10, now=NOW)
    assert [r.message.splitlines()[0] for r in recs] == ["orphan one", "orphan two", "record 1", "record 2"]
    assert recs[-1].message.count("\n") == 2
    assert last(path, 3, now=NOW)[0].message == "orphan two"


def test_last_on_a_2gb_sparse_log_reads_only_its_tail(tmp_path: Path) -> None:
    path = tmp_path / "ispmgr.log"
    with open(path, "wb") as fh:
        fh.truncate(2 * 1024 ** 3)
        fh.seek(0, os.SEEK_END)
        fh.write("".join(entry(i, cont=i % 4, colour=True) for i in range(600)).encode())
    assert path.stat().st_size > 2 * 1024 ** 3
    before, t0 = rchar(), time.perf_counter()
    recs = last(path, 100, now=NOW)
    elapsed, read = time.perf_counter() - t0, rchar() - before
    assert [r.message.splitlines()[0] for r in recs] == [f"record {i}" for i in range(500, 600)]
    assert read < 256 * 1024, read          # 100 records of ~100-250 bytes: a few 64 KiB blocks
    assert elapsed < 2, elapsed
    # asking for more records than there are: the 2 GB hole is skipped, not read
    before = rchar()
    assert len(last(path, 10_000, now=NOW)) == 600
    assert rchar() - before < 1024 * 1024


def test_last_on_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=str(tmp_path / "nope.log")):
        last(tmp_path / "nope.log", 10)


# ---------------------------------------------------------------- since

def make_rotated(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three gzip/xz archives under var/logs (names not in time order) and a current file
    that the panel truncated in place, whose first line names the last archive."""
    var = tmp_path / "var"
    (var / "logs").mkdir(parents=True)
    every: list[str] = []
    chunks = [range(0, 400), range(400, 800), range(800, 1200)]
    names = ["ispmgr.log.2026-11-21_10-00-00.0.gz", "ispmgr.log.2026-11-21_08-06-40.0.xz",
             "ispmgr.log.zzz.gz"]
    order = [1, 0, 2]               # chunk k goes to names[order[k]]
    for k, chunk in enumerate(chunks):
        text = "".join(entry(i, t=BASE + timedelta(seconds=10 * i), cont=i % 3) for i in chunk)
        every.append(text)
        target = var / "logs" / names[order[k]]
        opener = lzma.open if target.name.endswith(".xz") else gzip.open
        with opener(target, "wt") as fh:
            fh.write(text)
    marker = (f"{stamp(BASE + timedelta(seconds=11_995))} [4242:1] core INFO "
              f"Log rotated, previous content in var/logs/{names[2]}\n")
    current = marker + "".join(entry(i, t=BASE + timedelta(seconds=10 * i)) for i in range(1200, 1500))
    every.append(current)
    return write(var / "ispmgr.log", [current]), every


def test_since_reads_the_archives_when_the_window_reaches_back(tmp_path: Path) -> None:
    path, every = make_rotated(tmp_path)
    full = parse_lines("".join(every).splitlines(), now=NOW)
    assert [p.name for _, p in logreader.archives(path, now=NOW)] == [
        "ispmgr.log.2026-11-21_08-06-40.0.xz", "ispmgr.log.2026-11-21_10-00-00.0.gz", "ispmgr.log.zzz.gz"]
    for seconds in (0, 3_000, 4_005, 7_990, 11_995, 12_000, 14_990, 20_000):
        when = BASE + timedelta(seconds=seconds)
        want = [r for r in full if r.time is not None and r.time >= when]
        assert since(path, when, now=NOW) == want, seconds
    when = BASE + timedelta(seconds=5_000)
    got = since(path, when, level="ERR", plugin_names={"record"}, now=NOW)
    assert got == [r for r in full if r.time and r.time >= when and r.level == "ERR"]
    assert since(path, when, use_archives=False, now=NOW) == full[1200:]


def test_since_bisects_a_large_current_file(tmp_path: Path) -> None:
    entries = [entry(i, t=BASE + timedelta(seconds=i // 3), cont=i % 5, width=100) for i in range(20_000)]
    path = write(tmp_path / "ispmgr.log", entries)
    full = parse_lines("".join(entries).splitlines(), now=NOW)
    for seconds in (0, 1, 2_500, 6_000, 6_666, 6_667, 7_000):
        when = BASE + timedelta(seconds=seconds)
        before = rchar()
        got = since(path, when, now=NOW)
        assert got == [r for r in full if r.time is not None and r.time >= when], seconds
        if seconds >= 6_600:     # the last few hundred records: most of the file is skipped
            assert rchar() - before < path.stat().st_size // 4


def test_parse_since() -> None:
    p = logreader.parse_since
    assert p("15m", now=NOW) == NOW - timedelta(minutes=15)
    assert p("2h", now=NOW) == NOW - timedelta(hours=2)
    assert p("1d", now=NOW) == NOW - timedelta(days=1)
    assert p("30s", now=NOW) == NOW - timedelta(seconds=30)
    assert p("10:00", now=NOW) == datetime(2026, 11, 21, 10, 0)
    assert p("23:30:15", now=NOW) == datetime(2026, 11, 20, 23, 30, 15)   # still ahead: yesterday
    assert p("2026-11-20 10:00", now=NOW) == datetime(2026, 11, 20, 10, 0)
    assert p("2026-11-20T10:00:05", now=NOW) == datetime(2026, 11, 20, 10, 0, 5)
    assert p("2026-11-20", now=NOW) == datetime(2026, 11, 20)
    assert p("yesterday", now=NOW) == datetime(2026, 11, 20)
    for bad in ("soon", "15x", "25:99", ""):
        with pytest.raises(UsageError):
            p(bad, now=NOW)


# ---------------------------------------------------------------- the command

def panel(tmp_path: Path, entries: list[str]) -> Layout:
    layout = Layout.at(tmp_path / "root")
    write(logreader.log_path(layout), entries)
    return layout


def shown(layout: Layout, colour: bool = False, **query: object) -> list[str]:
    """The lines ``mgr-agent logs`` prints for ``query`` (the CLI renders each record)."""
    found = logs.records(logreader.log_path(layout), LogQuery(**query), now=NOW)  # type: ignore[arg-type]
    return "\n".join(r.text(colour) for r in found).splitlines()


def test_logs_yields_the_last_records(tmp_path: Path) -> None:
    layout = panel(tmp_path, [entry(i, level="ERR" if i % 4 == 0 else "INFO", colour=True, cont=i % 2)
                              for i in range(50)])
    assert shown(layout, n=3) == [
        "2026-11-21 08:00:47 1005:2 core_module INFO record 47", "  <line n='0'>xxxxxxxxxxxxxxxxxxxx</line>",
        "2026-11-21 08:00:48 1006:3 core_module ERR record 48",
        "2026-11-21 08:00:49 1000:4 core_module INFO record 49", "  <line n='0'>xxxxxxxxxxxxxxxxxxxx</line>"]
    found = logs.records(logreader.log_path(layout), LogQuery(level="err"), now=NOW)
    docs = [r.to_json() for r in found]
    assert len(docs) == 10 and {d["level"] for d in docs} == {"ERR"} and docs[-1]["message"] == "record 48"
    assert docs[-1]["time"] == "2026-11-21T08:00:48" and docs[-1]["pid"] == 1006 and ESC in docs[-1]["raw"]
    lines = shown(layout, since="2026-11-21 08:00:45", plugin_names=frozenset({"record"}))
    assert len([x for x in lines if "record" in x]) == 5
    text = "\n".join(shown(layout, n=2, since="2026-11-21 08:00:10"))
    assert "record 48" in text and "record 47" not in text


def test_records_are_coloured_on_request_only(tmp_path: Path) -> None:
    layout = panel(tmp_path, [entry(1, level="ERR"), entry(2, level="WARN"), entry(3)])
    lines = shown(layout, colour=True)
    assert lines[0].startswith(f"{ESC}[31m") and lines[1].startswith(f"{ESC}[33m") and ESC not in lines[2]
    assert not any(ESC in line for line in shown(layout))


def test_logs_errors_come_before_the_first_record(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path / "empty")
    with pytest.raises(NotFound, match=r"usr/local/mgr5/var/ispmgr\.log"):
        logs.records(logreader.log_path(layout), LogQuery(n=10))
    layout = panel(tmp_path, [entry(1)])
    with pytest.raises(UsageError):
        logs.records(logreader.log_path(layout), LogQuery(level="LOUD"))
    with pytest.raises(UsageError):
        logs.records(logreader.log_path(layout), LogQuery(since="the other day"))
