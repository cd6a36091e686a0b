"""Durable file operations and path-safety checks.

Durability discipline: data is fsynced before a rename makes it visible, and the
directory is fsynced after the rename so that the new name survives power loss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from mgr_agent import libc
from mgr_agent.digests import CHUNK
from mgr_agent.errors import Conflict

if TYPE_CHECKING:
    from mgr_agent.writeback import Closer


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path, mode: int = 0o755) -> None:
    """``mkdir -p`` where each directory created is made durable in its parent."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            continue
        fsync_dir(directory.parent)


def makedirs_private(path: Path) -> None:
    """``makedirs_durable``, the last directory (when created here) 0750: the agent's state
    holds hook output and plugin contents, for root and the mgr-agent group only."""
    if path.is_dir():
        return
    makedirs_durable(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o750)
        os.chmod(path, 0o750)  # noqa: S103 - whatever the umask; group mgr-agent may read
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory.
    Missing parent directories are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (data,), mode)


Sync = Literal["now", "deferred"]


_COPY_MAX = 1 << 30  # bytes a kernel copy is asked for at a time


_KERNEL_COPIES: tuple[Callable[[int, int, int], int], ...] = (
    lambda src, dst, count: os.copy_file_range(src, dst, min(count, _COPY_MAX)),
    lambda src, dst, count: os.sendfile(dst, src, None, min(count, _COPY_MAX)),
)
# a kernel copy this pair of files cannot have: another filesystem (EXDEV), a file the
# call does not take (EINVAL), a kernel or filesystem without it
_NO_KERNEL_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class AtomicWriter:
    """Replace ``path`` with what is written inside the ``with`` block, atomically.

    A temp file in the same directory (created with ``O_EXCL``, so never through a
    symlink), the chunks written to it, its mode (and owner) set, then ``fsync``, rename
    over ``path``, ``fsync`` of the directory. Readers see the old file or the new one,
    never a mix. ``sync="deferred"`` skips both fsyncs for a caller who makes a whole
    batch durable later with :func:`sync_filesystems` before relying on it. On any
    exception in the block (or while finishing) the temp file is removed and ``path``
    is left as it was. The directory is opened once; every step is relative to it.

    Like borg's ``SaveFile`` and pip's ``adjacent_tmp_file``.
    """

    def __init__(self, path: str | Path, mode: int = 0o644, *, sync: Sync = "now",
                 owner: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.mode = mode
        self.sync = sync
        self.owner = owner
        self.tmp_name = ""
        self._dir_fd = -1
        self._fd = -1

    def __enter__(self) -> AtomicWriter:
        self._dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            while True:
                self.tmp_name = f".{self.path.name}.{os.urandom(4).hex()}.tmp"
                try:
                    self._fd = os.open(self.tmp_name, _CREATE_NEW, 0o600, dir_fd=self._dir_fd)
                    break
                except FileExistsError:
                    continue
        except BaseException:
            os.close(self._dir_fd)
            raise
        return self

    def write(self, data: bytes | memoryview) -> None:
        """Write all of ``data`` (looping over short writes)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def copy_from(self, src: int) -> None:
        """Write the rest of the open regular file ``src``, up to the size it has now (what
        is appended meanwhile is not copied).  ``copy_file_range`` first: on xfs and btrfs
        the blocks are then shared (a reflink: nothing is written, and either file changed
        later is copied on write), on ext4 the kernel copies them.  Else ``sendfile``
        (across filesystems on older kernels), else a read and write loop; each goes on
        from where the one before stopped.  A file that shrank meanwhile raises EIO."""
        end = os.fstat(src).st_size
        copiers = (*_KERNEL_COPIES, self._read_write)
        for copy in copiers:
            try:
                while (left := end - os.lseek(src, 0, os.SEEK_CUR)) > 0 and copy(src, self._fd, left):
                    pass
            except OSError as exc:
                if copy is copiers[-1] or exc.errno not in _NO_KERNEL_COPY:
                    raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            if os.lseek(src, 0, os.SEEK_CUR) >= end:
                return
        raise OSError(errno.EIO, "the file copied shrank while it was being copied", str(self.path))

    def _read_write(self, src: int, _dst: int, count: int) -> int:
        """The last copier: up to ``count`` bytes of ``src`` read and written; how many."""
        data = os.read(src, min(count, CHUNK))
        self.write(data)
        return len(data)

    def fileno(self) -> int:
        """The temp file's descriptor, for a writer that needs a real (seekable) file, e.g.
        ``open(out.fileno(), "wb", closefd=False)``; close that before the block ends."""
        return self._fd

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._commit()
        except BaseException:
            self._discard()
            raise
        else:
            if exc_type is not None:
                self._discard()
        finally:
            os.close(self._dir_fd)

    def _commit(self) -> None:
        fd, self._fd = self._fd, -1
        try:
            if self.owner is not None and self.owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *self.owner)
            os.fchmod(fd, self.mode)
            if self.sync == "now":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp_name, self.path.name,
                   src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self.tmp_name = ""
        if self.sync == "now":
            os.fsync(self._dir_fd)

    def _discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.tmp_name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp_name, dir_fd=self._dir_fd)
            self.tmp_name = ""


_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(path: str | Path, chunks: Iterable[bytes], mode: int = 0o644, *,
                 sync: Sync = "now", owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with the concatenation of ``chunks`` (streamed, never all in memory)
    through an :class:`AtomicWriter`."""
    with AtomicWriter(path, mode, sync=sync, owner=owner) as out:
        out.writelines(chunks)


def write_new(path: str | Path, chunks: Iterable[bytes], mode: int, *, sync: bool = True,
              owner: tuple[int, int] | None = None,
              closer: Closer | None = None) -> os.stat_result:
    """Create ``path`` (must not exist, never through a symlink), write, fsync if ``sync``;
    returns the new file's stat.

    Without ``sync`` the caller makes the data durable later with :func:`sync_filesystems`,
    or, handing the file to a ``closer`` (which starts its write-back and closes it), with
    :func:`mgr_agent.writeback.fsync_all`.
    """
    # created with its mode: a chmod (5,000 files: ~20 ms) only where the umask (the daemon's,
    # for an instant) or a chown to another owner changed it, as the fstat made anyway tells
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError as exc:
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            os.fchown(fd, *owner)
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
            st = os.fstat(fd)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    if closer is None:
        os.close(fd)
    else:
        closer.take(fd, path)
    return st


def rename_within_mount(src: str | Path, dst: str | Path) -> bool:
    """Rename ``src`` to ``dst``; False, with nothing changed, where they are on different
    mounts (``EXDEV``: another filesystem, or one filesystem bind-mounted apart, as the
    daemon's unit does with the panels' and the state's directories)."""
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise
    return True


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` atomically, failing with EEXIST if ``dst`` exists.

    ``renameat2(RENAME_NOREPLACE)``; where the filesystem lacks it, ``link`` + ``unlink``
    (which also refuses an existing ``dst``).
    """
    try:
        libc.renameat2(src, dst, libc.RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        os.link(src, dst, follow_symlinks=False)
        os.unlink(src)


def rename_exchange(a: str, b: str) -> None:
    """Swap the entries ``a`` and ``b`` (files or directories, on one filesystem)
    atomically: ``renameat2(RENAME_EXCHANGE)``.  There is no fallback: a filesystem
    without it fails with EINVAL (or ENOSYS, EOPNOTSUPP) and the caller switches file by
    file instead."""
    libc.renameat2(a, b, libc.RENAME_EXCHANGE)


UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def sync_filesystems(paths: Iterable[Path]) -> None:
    """Make all data and metadata on the filesystems holding ``paths`` durable.

    One ``syncfs(2)`` per filesystem instead of one fsync per file: the same guarantee
    at the point that matters (before the journal says "staged" or "switched"),
    with one journal commit instead of thousands.
    """
    seen: set[int] = set()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            dev = os.fstat(fd).st_dev
            if dev not in seen:
                seen.add(dev)
                libc.syncfs(fd)
        finally:
            os.close(fd)


def unlink_if_exists(path: str | Path) -> bool:
    """Remove ``path`` if it is there; a missing file is not an error, even on a read-only
    mount (where unlink of a missing name fails with EROFS, not ENOENT)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError:
        if not os.path.lexists(path):
            return False
        raise
    return True


def rmdir_if_empty(path: str | Path) -> bool:
    try:
        os.rmdir(path)
    except (FileNotFoundError, OSError):
        return False
    return True


def lexists(path: Path) -> bool:
    return os.path.lexists(path)


def check_no_symlink(anchor: Path, target: str | Path,
                     verified: set[str] | None = None) -> os.stat_result | None:
    """Refuse when ``target`` or any directory between ``anchor`` and it is a symlink.

    The agent must never follow a link planted in a panel tree out of that tree.
    ``verified`` caches directories already found to be real, across calls.  Returns the
    ``lstat`` of ``target`` itself, None when it does not exist.
    """
    top, full = str(anchor).rstrip("/"), str(target)  # an anchor of "/" is top ""
    if not full.startswith(top + "/"):
        raise Conflict(f"{target}: lies outside {anchor}", path=full)
    # components below the anchor, as strings (this runs once per file of a package)
    parts = full[len(top) + 1 :].split("/")
    current = top
    for index, part in enumerate(parts):
        current = f"{current}/{part}"
        last = index == len(parts) - 1
        if not last and verified is not None and current in verified:
            continue
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode) and verified is not None:
            verified.add(current)
        if stat.S_ISLNK(st.st_mode):
            raise Conflict(
                f"{current}: is a symbolic link; refusing to write through it",
                hint="remove the link or replace it with a real directory or file",
                path=str(current),
            )
        if not last and not stat.S_ISDIR(st.st_mode):
            raise Conflict(
                f"{current}: exists and is not a directory, but {target} needs it to be one",
                path=str(current),
            )
    return st


def missing_dirs(path: Path, stop: Path) -> list[Path]:
    """Directories between ``stop`` (exclusive) and ``path`` (inclusive) that don't exist,
    outermost first."""
    missing: list[Path] = []
    current = path
    while current != stop and not current.exists():
        missing.append(current)
        current = current.parent
    missing.reverse()
    return missing


@contextlib.contextmanager
def open_nofollow(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)
