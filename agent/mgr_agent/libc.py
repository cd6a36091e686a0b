"""The C library, loaded once, for the few system calls Python's ``os`` module lacks.

Every wrapper here raises ``OSError(errno, strerror[, filename])`` on failure, like the
``os`` functions do; nothing else in the package loads libc or calls ``ctypes``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import select
import struct
import threading
from typing import Any, NamedTuple

AT_FDCWD = -100

# renameat2(2) flags
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

# sync_file_range(2) flags
SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4

# prctl(2) option
PR_SET_NAME = 15

# statx(2): flags, and the inode attributes it reports (the same bits as FS_IOC_GETFLAGS)
AT_SYMLINK_NOFOLLOW = 0x100
STATX_TYPE = 0x1
STATX_ATTR_IMMUTABLE = 0x10
STATX_ATTR_APPEND = 0x20
STATX_SIZE = 256  # struct statx
STATX_BASIC_STATS = 0x7FF
_STATX_FIELDS = struct.Struct("<8xQ12xH26xQ")  # stx_attributes, stx_mode, stx_attributes_mask
# stx_mask, stx_attributes, stx_uid, stx_gid, stx_mode, stx_ino, stx_size,
# stx_attributes_mask, stx_mtime (seconds, nanoseconds)
_STATX_STAT = struct.Struct("<I4xQ4xIIH2xQQ8xQ48xqI")

# inotify(7) flags for inotify_init1
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_c_int, _c_uint, _c_char_p, _c_int64 = ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_int64
_SIGNATURES: dict[str, tuple[list[type[ctypes._SimpleCData[int]] | type[ctypes.c_char_p]], type]] = {
    "syncfs": ([_c_int], _c_int),
    "renameat2": ([_c_int, _c_char_p, _c_int, _c_char_p, _c_uint], _c_int),
    "sync_file_range": ([_c_int, _c_int64, _c_int64, _c_uint], _c_int),
    "inotify_init1": ([_c_int], _c_int),
    "inotify_add_watch": ([_c_int, _c_char_p, ctypes.c_uint32], _c_int),
    "inotify_rm_watch": ([_c_int, _c_int], _c_int),
}


@functools.cache
def load() -> ctypes.CDLL:
    """libc with ``use_errno``: the process's own symbols (CPython links libc dynamically),
    else the library ``find_library("c")`` names. Loaded on first use, then shared."""
    lib = ctypes.CDLL(None, use_errno=True)
    if not hasattr(lib, "syncfs"):
        from ctypes.util import find_library  # noqa: PLC0415 - it imports subprocess, shutil

        lib = ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)
    for name, (argtypes, restype) in _SIGNATURES.items():
        func = getattr(lib, name, None)
        if func is not None:
            func.argtypes = argtypes
            func.restype = restype
    return lib


def _check(result: int, filename: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        if filename is None:
            raise OSError(err, os.strerror(err))
        raise OSError(err, os.strerror(err), filename)
    return result


def syncfs(fd: int) -> None:
    """Commit the whole filesystem holding the open file ``fd`` to disk."""
    _check(load().syncfs(fd))


def renameat2(src: str | bytes | os.PathLike[str], dst: str | bytes | os.PathLike[str],
              flags: int = 0, *, src_dir_fd: int = AT_FDCWD, dst_dir_fd: int = AT_FDCWD) -> None:
    """``renameat2(2)``: ``flags`` is 0, ``RENAME_NOREPLACE`` (EEXIST when ``dst`` exists) or
    ``RENAME_EXCHANGE`` (swap two existing names atomically). A filesystem without the
    flag gives EINVAL; a kernel without the call, ENOSYS."""
    result = load().renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), flags)
    _check(result, os.fsdecode(dst))


def sync_file_range(fd: int, offset: int = 0, nbytes: int = 0,
                    flags: int = SYNC_FILE_RANGE_WRITE) -> None:
    """``sync_file_range(2)``: by default start writeback of the whole file without waiting
    (``nbytes`` 0 means to the end). It makes nothing durable by itself: no metadata, no
    disk cache flush; ``fsync`` or ``syncfs`` still has to follow."""
    _check(load().sync_file_range(fd, offset, nbytes, flags))


def set_process_name(name: str) -> None:
    """``prctl(PR_SET_NAME)``: ``/proc/self/comm`` (at most 15 bytes) becomes ``name``."""
    _check(load().prctl(PR_SET_NAME, name.encode(), 0, 0, 0))


def inotify_init1(flags: int = IN_NONBLOCK | IN_CLOEXEC) -> int:
    """A new inotify descriptor (non-blocking, close-on-exec by default)."""
    return _check(load().inotify_init1(flags))


def inotify_add_watch(fd: int, path: str | bytes | os.PathLike[str], mask: int) -> int:
    """Watch ``path`` for the events in ``mask``; returns the watch descriptor."""
    return _check(load().inotify_add_watch(fd, os.fsencode(path), mask), os.fsdecode(path))


def inotify_rm_watch(fd: int, wd: int) -> None:
    _check(load().inotify_rm_watch(fd, wd))


class Inotify:
    """An inotify descriptor and a poller on it: only used to sleep until something changes
    (following a log, waiting for a directory to empty)."""

    MODIFY, ATTRIB, MOVED_FROM, MOVED_TO, CREATE, DELETE = 0x2, 0x4, 0x40, 0x80, 0x100, 0x200
    DELETE_SELF, MOVE_SELF = 0x400, 0x800
    DIR_MASK = CREATE | MOVED_TO | MOVED_FROM | DELETE
    FILE_MASK = MODIFY | ATTRIB | DELETE_SELF | MOVE_SELF

    def __init__(self) -> None:
        fd = inotify_init1()       # non-blocking, close-on-exec
        self.fd = fd
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def add(self, path: str | os.PathLike[str], mask: int) -> int:
        return inotify_add_watch(self.fd, path, mask)

    def remove(self, wd: int) -> None:
        with contextlib.suppress(OSError):      # fails harmlessly if the inode is gone
            inotify_rm_watch(self.fd, wd)

    def wait(self, timeout: float) -> None:
        if self.poller.poll(max(0, int(timeout * 1000))):
            with contextlib.suppress(BlockingIOError):
                while os.read(self.fd, 65536):
                    pass

    def close(self) -> None:
        os.close(self.fd)


@functools.cache
def _statx() -> tuple[Any, threading.local]:
    """libc's ``statx``, and a buffer per thread to call it with.  Without ``argtypes``:
    its arguments are always an int, bytes, two ints and the buffer, which ctypes passes
    as they are, where the conversion ``argtypes`` asks for cost more than the system
    call (3.4 against 2.9 µs a call; ``os.lstat``: 2.5).  ENOSYS where libc has none."""
    func = getattr(load(), "statx", None)
    if func is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    return func, threading.local()


def _statx_into(name: bytes, mask: int, path: str) -> ctypes.Array[ctypes.c_char]:
    """``statx(2)`` of ``name``, not following a final link, asking for ``mask``: the
    thread's buffer, filled (``path`` names the file in an error)."""
    func, local = _statx()
    buf = getattr(local, "buf", None)
    if buf is None:
        buf = local.buf = ctypes.create_string_buffer(STATX_SIZE)
    if func(AT_FDCWD, name, AT_SYMLINK_NOFOLLOW, mask, buf) < 0:
        _check(-1, path)
    return buf


class Lstat(NamedTuple):
    """A file's ``statx``: the fields of ``os.stat_result`` the planner reads, named as
    there, with the inode attributes (``stx_attributes``) and those the filesystem reports
    at all (``stx_attributes_mask``)."""

    st_mode: int
    st_ino: int
    st_size: int
    st_mtime_ns: int
    st_uid: int
    st_gid: int
    attributes: int
    reported: int


def lstat(path: str) -> Lstat | os.stat_result:
    """``lstat`` of ``path`` with its inode attributes, in one ``statx`` (ENOENT raises
    ``FileNotFoundError``).  ``os.lstat``'s result where libc has no ``statx`` or the
    filesystem did not fill in every basic field."""
    try:  # (os.fsencode's own call costs more than the encode)
        buf = _statx_into(path.encode("utf-8", "surrogateescape"), STATX_BASIC_STATS, path)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        return os.lstat(path)
    got, attributes, uid, gid, mode, ino, size, reported, sec, nsec = _STATX_STAT.unpack_from(buf)
    if got & STATX_BASIC_STATS != STATX_BASIC_STATS:
        return os.lstat(path)
    return Lstat(mode, ino, size, sec * 1_000_000_000 + nsec, uid, gid, attributes, reported)


def statx_attributes(path: str | bytes | os.PathLike[str]) -> tuple[int, int, int]:
    """``statx(2)`` of ``path``, not following a final link, asking for its type: its mode,
    its inode attributes (``STATX_ATTR_IMMUTABLE`` ...) and the attributes its filesystem
    reports at all (``stx_attributes_mask``).  One call where ``FS_IOC_GETFLAGS`` needs an
    open, an ioctl and a close; ENOSYS where libc has no ``statx``."""
    name = os.fsencode(path)
    buf = _statx_into(name, STATX_TYPE, os.fsdecode(name))
    attributes, mode, mask = _STATX_FIELDS.unpack_from(buf)
    return mode, attributes, mask
