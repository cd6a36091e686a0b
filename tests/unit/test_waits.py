"""The test waits themselves: they wake on the event, and fail saying what they waited for."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from tests.waits import Feed, LineReader, wait_for, wait_for_file


def test_feed_wakes_on_the_append_from_another_thread() -> None:
    feed: Feed[int] = Feed()
    go = threading.Event()

    def produce() -> None:
        go.wait()
        for i in range(5):
            feed.append(i)

    threading.Thread(target=produce).start()
    go.set()
    assert feed.wait_for_item(lambda i: i == 3, what="3", timeout=10) == 3
    assert feed.wait_until(lambda items: len(items) == 5, what="all five", timeout=10)
    assert list(feed) == [0, 1, 2, 3, 4]


def test_feed_fails_naming_what_it_waited_for_and_what_it_saw() -> None:
    feed: Feed[str] = Feed()
    feed.append("READY=1")
    timed_out = r"waiting for STOPPING=1: timed out after 0.05 s; seen: \['READY=1'\]"
    with pytest.raises(AssertionError, match=timed_out):
        feed.wait_for_item(lambda m: m == "STOPPING=1", what="STOPPING=1", timeout=0.05)
    feed.close()
    with pytest.raises(AssertionError, match="the process it depends on ended"):
        feed.wait_for_item(lambda m: m == "STOPPING=1", what="STOPPING=1", timeout=30)


def test_stays_without_returns_false_as_soon_as_the_event_happens() -> None:
    feed: Feed[str] = Feed()
    threading.Thread(target=feed.append, args=("WATCHDOG=1",)).start()
    t0 = time.monotonic()
    assert not feed.stays_without(lambda m: m == "WATCHDOG=1", within=30)
    assert time.monotonic() - t0 < 10
    assert feed.stays_without(lambda m: m == "other", within=0.05)


def test_line_reader_finds_a_line_and_keeps_the_rest() -> None:
    reader = LineReader(io.StringIO("starting\nrunning post-install hook\ndone\n"))
    assert reader.wait_for_line(r"post-\w+ hook") == "running post-install hook"
    assert reader.text() == "starting\nrunning post-install hook\ndone\n"
    with pytest.raises(AssertionError, match=r"a line matching 'never'.*ended"):
        reader.wait_for_line("never")


def test_wait_for_file_wakes_when_a_missing_directory_and_the_file_appear(tmp_path: Path) -> None:
    target = tmp_path / "a/b/marker"

    def write() -> None:
        target.parent.mkdir(parents=True)
        target.write_bytes(b"12")
        with open(target, "ab") as fh:
            fh.write(b"34\n")

    writer = threading.Timer(0.05, write)    # the writer's own pace; the wait must not care
    writer.start()
    assert wait_for_file(target, lambda text: text.endswith(b"\n"), timeout=10) == b"1234\n"
    writer.join()


def test_wait_for_file_fails_with_the_content_it_saw(tmp_path: Path) -> None:
    target = tmp_path / "lock"
    target.write_bytes(b'{"pid": 1,')
    with pytest.raises(AssertionError, match=r"pid 2.*timed out after 0.05 s; seen: b'\{\"pid\": 1,'"):
        wait_for_file(target, lambda text: b'"pid": 2,' in text, what="pid 2", timeout=0.05)
    with pytest.raises(AssertionError, match="ended"):
        wait_for_file(tmp_path / "never", alive=lambda: False)


def test_wait_for_polls_until_true_and_returns_the_value() -> None:
    calls = iter([None, 0, "found"])
    assert wait_for(lambda: next(calls), what="a value", interval=0.001) == "found"
    with pytest.raises(AssertionError, match="waiting for nothing: timed out"):
        wait_for(lambda: False, what="nothing", timeout=0.01, interval=0.001)
