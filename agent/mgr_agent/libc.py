"""The C library, loaded once, for the few system calls Python's ``os`` module lacks.

Every wrapper here raises ``OSError(errno, strerror[, filename])`` on failure, like the
``os`` functions do; nothing else in the package loads libc or calls ``ctypes``.
"""

from __future__ import annotations

import ctypes
import functools
import os

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
