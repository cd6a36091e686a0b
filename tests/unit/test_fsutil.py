"""The durable writer and the libc wrappers, on real files in a temp directory."""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mgr_agent import libc
from mgr_agent.digests import same_bytes
from mgr_agent.fsutil import (
    AtomicWriter,
    atomic_write,
    rename_noreplace,
    write_atomic,
    write_new,
)
from mgr_agent.writeback import Closer, fsync_all


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_write_atomic_streams_chunks_sets_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    chunks = [b"x" * 100_000, b"", b"y" * 3, memoryview(b"end").tobytes()]
    write_atomic(target, iter(chunks), 0o640)
    assert target.read_bytes() == b"".join(chunks)
    assert target.stat().st_mode & 0o777 == 0o640
    assert _entries(tmp_path) == ["state.json"]


def test_replace_is_a_new_inode_so_an_open_reader_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with open(target, "rb") as reader:
        atomic_write(target, b"new", 0o600)
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_error_mid_stream_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_bytes(b"old content\n")

    def chunks() -> Iterator[bytes]:
        yield b"partial "
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        write_atomic(target, chunks())
    assert target.read_bytes() == b"old content\n"
    assert _entries(tmp_path) == ["conf"]


def test_interrupt_inside_the_block_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), AtomicWriter(target) as out:
        out.write(b"half")
        assert len(_entries(tmp_path)) == 2          # the temp file exists meanwhile
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["conf"]


def test_a_failing_write_names_the_path_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """A real write error: EFBIG past RLIMIT_FSIZE (SIGXFSZ ignored for the test)."""
    target = tmp_path / "big"
    target.write_bytes(b"old")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        with pytest.raises(OSError) as caught:
            write_atomic(target, [b"a" * 3000, b"b" * 3000])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG
    assert caught.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["big"]


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep me")
    (tmp_path / "dir").mkdir()
    link = tmp_path / "dir/link"
    link.symlink_to(outside)
    atomic_write(link, b"mine")
    assert not link.is_symlink()
    assert link.read_bytes() == b"mine"
    assert outside.read_bytes() == b"keep me"


def test_deferred_sync_writes_the_same_bytes(tmp_path: Path) -> None:
    target = tmp_path / "data"
    write_atomic(target, [b"a", b"b"], 0o600, sync="deferred")
    assert target.read_bytes() == b"ab"
    assert _entries(tmp_path) == ["data"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_owner_is_set_on_the_new_file(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    write_atomic(target, [b"x"], 0o640, owner=(1, 2))
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (1, 2)


def test_atomic_write_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a/b/c.txt"
    atomic_write(target, b"deep")
    assert target.read_bytes() == b"deep"


def test_missing_directory_fails_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope/f", [b"x"])
    assert _entries(tmp_path) == []


# ---------------------------------------------------------------- libc

def test_rename_noreplace_refuses_an_existing_target(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"s")
    dst.write_bytes(b"d")
    with pytest.raises(FileExistsError) as caught:
        rename_noreplace(str(src), str(dst))
    assert caught.value.filename == str(dst)
    assert (src.read_bytes(), dst.read_bytes()) == (b"s", b"d")
    dst.unlink()
    rename_noreplace(str(src), str(dst))
    assert dst.read_bytes() == b"s"
    assert not src.exists()


def test_renameat2_exchange_swaps_two_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.write_bytes(b"file")
    libc.renameat2(a, b, libc.RENAME_EXCHANGE)
    assert a.read_bytes() == b"file"
    assert b.is_dir()


def test_renameat2_errors_carry_errno_and_the_target(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        libc.renameat2(tmp_path / "missing", tmp_path / "there", libc.RENAME_NOREPLACE)
    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == str(tmp_path / "there")


def test_syncfs_and_sync_file_range(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"z" * 10_000)
    fd = os.open(target, os.O_RDWR)
    try:
        libc.syncfs(fd)
        libc.sync_file_range(fd)
        libc.sync_file_range(fd, 0, 0, libc.SYNC_FILE_RANGE_WAIT_BEFORE
                             | libc.SYNC_FILE_RANGE_WRITE | libc.SYNC_FILE_RANGE_WAIT_AFTER)
    finally:
        os.close(fd)
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError) as caught:
            libc.sync_file_range(read_end)
        assert caught.value.errno == errno.ESPIPE
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(OSError) as bad:
        libc.syncfs(read_end)                        # closed by now
    assert bad.value.errno == errno.EBADF


def test_set_process_name_renames_the_calling_thread() -> None:
    seen: list[str] = []

    def rename() -> None:
        libc.set_process_name("mgr-test-thread-long-name")
        seen.append(Path("/proc/thread-self/comm").read_text().strip())

    thread = threading.Thread(target=rename)
    thread.start()
    thread.join()
    assert seen == ["mgr-test-thread"]               # the kernel keeps 15 bytes


def test_inotify_reports_a_created_file(tmp_path: Path) -> None:
    fd = libc.inotify_init1()
    try:
        in_create = 0x100
        wd = libc.inotify_add_watch(fd, tmp_path, in_create)
        (tmp_path / "new").write_bytes(b"")
        assert select.select([fd], [], [], 5)[0] == [fd]
        data = os.read(fd, 4096)
        event_wd, mask, _cookie, length = struct.unpack_from("iIII", data)
        name = data[16 : 16 + length].rstrip(b"\0")
        assert (event_wd, mask & in_create, name) == (wd, in_create, b"new")
        libc.inotify_rm_watch(fd, wd)
        with pytest.raises(OSError) as gone:
            libc.inotify_rm_watch(fd, wd)
        assert gone.value.errno == errno.EINVAL
        with pytest.raises(FileNotFoundError) as missing:
            libc.inotify_add_watch(fd, tmp_path / "absent", in_create)
        assert missing.value.filename == str(tmp_path / "absent")
    finally:
        os.close(fd)


def _open_under(directory: Path) -> list[str]:
    """This process's open files under ``directory``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor
            continue
        if target.startswith(f"{directory}/"):
            found.append(target)
    return found


def test_closer_closes_every_file_handed_over_and_the_bytes_are_there(tmp_path: Path) -> None:
    closer = Closer()
    stats = [write_new(tmp_path / f"f{i}", (b"x" * i,), 0o640, sync=False, closer=closer)
             for i in range(200)]
    closer.finish()
    assert [st.st_size for st in stats] == list(range(200))
    assert (tmp_path / "f199").read_bytes() == b"x" * 199
    assert (tmp_path / "f7").stat().st_mode & 0o777 == 0o640
    fsync_all(sorted(tmp_path.iterdir()))  # the second pass of the writeback mode
    assert not _open_under(tmp_path)


def test_closer_names_the_file_it_failed_to_close_and_abandon_swallows(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)  # already closed: closing it again fails with EBADF
    closer = Closer()
    closer.take(fd, tmp_path / "gone")
    with pytest.raises(OSError) as caught:
        closer.finish()
    assert caught.value.errno == errno.EBADF and caught.value.filename == str(tmp_path / "gone")
    closer.finish()  # reported once; nothing left running
    again = Closer()
    again.take(fd, tmp_path / "gone")
    again.abandon()


def test_write_new_closes_its_file_itself_when_the_write_fails(tmp_path: Path) -> None:
    closer = Closer()

    def chunks() -> Iterator[bytes]:
        yield b"part"
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError):
        write_new(tmp_path / "f", chunks(), 0o644, sync=False, closer=closer)
    closer.finish()
    assert not _open_under(tmp_path)


def test_write_new_gives_the_exact_mode_whatever_the_umask(tmp_path: Path) -> None:
    """The file is created with its mode; where the umask narrowed it (the daemon's, while
    it binds its socket), it is set again: the mode returned and on disk is the one asked."""
    old = os.umask(0o077)
    try:
        narrowed = write_new(tmp_path / "narrowed", (b"#!/bin/sh\n",), 0o755)
    finally:
        os.umask(old)
    plain = write_new(tmp_path / "plain", (b"x",), 0o644)
    for name, st, mode in (("narrowed", narrowed, 0o755), ("plain", plain, 0o644)):
        assert stat.S_IMODE(st.st_mode) == mode
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_same_bytes_compares_whole_files(tmp_path: Path) -> None:
    """``same_bytes`` (the no-op test's comparison with the stored archive): equal files,
    a difference in the first chunk, in the last partial one, and files of other lengths."""
    data = os.urandom(3 * 1024 + 100)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    b.write_bytes(data)
    assert same_bytes(a, b, chunk=1024)
    for at in (0, len(data) - 1):
        changed = bytearray(data)
        changed[at] ^= 1
        b.write_bytes(bytes(changed))
        assert not same_bytes(a, b, chunk=1024), at
    b.write_bytes(data[:-1])
    assert not same_bytes(a, b, chunk=1024)
    b.write_bytes(data + b"x")
    assert not same_bytes(a, b, chunk=1024)
    (tmp_path / "e1").write_bytes(b"")
    (tmp_path / "e2").write_bytes(b"")
    assert same_bytes(tmp_path / "e1", tmp_path / "e2")


def _copied(src: Path, dest: Path, skip: int) -> bytes:
    with open(src, "rb") as fh:
        fh.seek(skip)
        with AtomicWriter(dest) as out:
            out.copy_from(fh.fileno())
    return dest.read_bytes()


def test_copy_from_writes_the_rest_of_the_source_from_its_offset(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    (tmp_path / "src").write_bytes(data)
    assert _copied(tmp_path / "src", tmp_path / "whole", 0) == data
    assert _copied(tmp_path / "src", tmp_path / "rest", 1000) == data[1000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rest", "src", "whole"]


@pytest.mark.skipif(not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
                    reason="needs /dev/shm on a filesystem of its own")
def test_copy_from_another_filesystem_goes_on_where_copy_file_range_cannot(tmp_path: Path) -> None:
    """tmpfs to the test directory's filesystem: a kernel that refuses copy_file_range
    across filesystems (EXDEV) has the copy made by sendfile, with the same bytes."""
    data = os.urandom(1 << 20)
    fd, name = tempfile.mkstemp(dir="/dev/shm")
    try:
        os.write(fd, data)
        os.close(fd)
        assert _copied(Path(name), tmp_path / "copy", 4096) == data[4096:]
    finally:
        os.unlink(name)


def _fstat_saying(size: int) -> Callable[[int], os.stat_result]:
    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        return os.stat_result((*st[:6], size, *st[7:10]))
    return fstat


def test_copy_from_copies_the_size_the_source_had_when_it_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes appended to the source after the copy began are not copied (here the size
    read at the start is told smaller than the file)."""
    (tmp_path / "src").write_bytes(b"a" * 100_000 + b"appended")
    monkeypatch.setattr(os, "fstat", _fstat_saying(100_000))
    assert _copied(tmp_path / "src", tmp_path / "copy", 0) == b"a" * 100_000


def test_copy_from_a_source_that_shrank_is_an_error_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").write_bytes(b"a" * 100_000)
    monkeypatch.setattr(os, "fstat", _fstat_saying(150_000))  # the size before it shrank
    with pytest.raises(OSError) as caught:
        _copied(tmp_path / "src", tmp_path / "copy", 0)
    assert caught.value.errno == errno.EIO and caught.value.filename == str(tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
