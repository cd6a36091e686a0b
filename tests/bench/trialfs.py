"""The filesystem the trials run on: a journaled ext4 image, as on a server.

A server's root filesystem is ext4 with its journal (``data=ordered``).  The VMs the
bench runs on may not be: an ext4 without a journal has no journal commits at all (an
fsync costs less than on a server), and allocates inodes slowly in block groups with
many recently deleted ones (the kernel's ``recently_deleted`` scan runs only without a
journal).  So, when it runs as root and loop mounts work, the bench makes an image in
its work directory, formats it with ``mkfs.ext4 -q -E`` :data:`MKFS_EXTENDED` (the
defaults but the discard and the lazy initialisation: journal, ``data=ordered``),
mounts it with ``mount -o loop`` and puts every trial root under it: agent roots, dpkg
roots, unzip directories and the live-server writer's files.  At the end (also on an
error or Ctrl-C) it unmounts it (``umount -l`` if busy) and deletes it.

The image is written in full (zeros) before ``mkfs`` (whose discard would punch the
zeros out again): a sparse one makes the host allocate a block under every first write
to it, a cost no server's disk has, which varies with the host (38 MB written and
fsynced into never-written regions: 150-200 ms at one time, against 20-40 ms where the
blocks had been written) and which grew through a run as the trials reached new regions.
Its inode tables and journal are written by ``mkfs`` (``lazy_itable_init=0``), not by the
kernel's ``ext4lazyinit`` thread in the background of the first minutes of the trials, as
no server's long-made filesystem does (six no-op reinstalls, each just after a large
upgrade: 86-116 ms with the thread running, 89-104 ms without it).

Where that is not possible (not root, no loop device, no ``mkfs.ext4``), or with
``--fs here``, the trials run in the work directory, and :attr:`TrialFilesystem.note`
says so for the results' notes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

IMAGE = "trialfs.img"
MOUNT = "trialfs"
GIB = 1 << 30
TOOLS = ("mkfs.ext4", "mount", "umount", "losetup")
# mkfs.ext4 -E: no discard (it would punch the zeros out of the image again), and the inode
# tables and journal zeroed now rather than by ext4lazyinit while the trials run
MKFS_EXTENDED = "nodiscard,lazy_itable_init=0,lazy_journal_init=0"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _mount_entry(path: Path) -> tuple[str, str, str, str] | None:
    """(source, mount point, type, options) of the mount holding ``path``."""
    best: tuple[str, str, str, str] | None = None
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point = parts[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) \
                and (best is None or len(point) >= len(best[1])):
            best = (parts[0], point, parts[2], parts[3])
    return best


def _is_mount_point(path: Path) -> bool:
    entry = _mount_entry(path)
    return entry is not None and entry[1] == str(path.resolve())


def _journal(device: str, image: Path | None) -> tuple[bool | None, str]:
    """Whether the ext4 filesystem on ``device`` has a journal, and where that was read."""
    name = os.path.basename(device)
    task = Path(f"/sys/fs/ext4/{name}/journal_task")
    try:
        value = task.read_text().strip()
    except OSError:
        value = ""
    if value:
        return value != "<none>", f"{task}: {value}"
    dumpe2fs = shutil.which("dumpe2fs")
    source = str(image) if image is not None else device
    if dumpe2fs:
        done = subprocess.run([dumpe2fs, "-h", source], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("Filesystem features:"):
                return "has_journal" in line.split(), f"dumpe2fs -h {source}"
    return None, "unknown"


def describe(path: Path, image: Path | None = None) -> dict[str, Any]:
    """Type, device, mount options (those of /proc/fs/ext4 too) and journal of ``path``'s filesystem."""
    entry = _mount_entry(path)
    if entry is None:
        return {"type": "?", "mount": "?", "options": "?", "journal": None}
    source, point, kind, options = entry
    info: dict[str, Any] = {"type": kind, "device": source, "mount": point, "options": options}
    if kind == "ext4":
        ext4 = Path(f"/proc/fs/ext4/{os.path.basename(source)}/options")
        try:
            effective = ext4.read_text().split()
        except OSError:
            effective = []
        data = [o for o in effective if o.startswith(("data=", "commit="))]
        if data:
            info["ext4_options"] = ",".join(data)
        info["journal"], info["journal_source"] = _journal(source, image)
    else:
        info["journal"] = None
    return info


def summary(info: dict[str, Any]) -> str:
    """One line for the page: ``ext4 (rw,relatime; data=ordered,commit=5), journal, on …``."""
    journals: dict[bool | None, str] = {True: "with a journal", False: "without a journal"}
    journal = journals.get(info.get("journal"), "journal unknown")
    opts = info.get("options", "?") + (f"; {info['ext4_options']}" if info.get("ext4_options") else "")
    size = info.get("size_bytes", 0) / GIB
    mkfs = info.get("mkfs_extended", "nodiscard")  # (nodiscard alone: in JSON of 2026-11-28 before the night)
    made = (f"an image of {size:g} GiB written in full, `mkfs.ext4 -q -E {mkfs}`"
            if info.get("filled") else f"a {size:g} GiB sparse image, `mkfs.ext4 -q`")  # (before 2026-11-28)
    where = (f"{made}, `mount -o loop` ({info.get('device', '?')})" if info.get("kind") == "image"
             else f"{info.get('device', '?')} on {info.get('mount', '?')}")
    peak = info.get("peak_used_bytes")
    used = (f"; each repetition's trees deleted after it, at most {peak / GIB:.1f} GiB in use"
            if peak else "")
    return f"{info.get('type', '?')} {journal} ({opts}), {where}{used}"


def fill(path: Path, size: int) -> None:
    """Write ``size`` zero bytes to a new file at ``path``, so that every block of it is
    allocated on the host (see the module's docstring): with ``O_DIRECT`` where the
    filesystem takes it (8 GiB in about 6 s, not through the page cache), else buffered,
    then ``fsync``."""
    chunk = 8 << 20
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_DIRECT, 0o600)
    except OSError:
        fd = os.open(path, flags, 0o600)
    # page-aligned zeros, as O_DIRECT needs
    with mmap.mmap(-1, chunk) as zeros, memoryview(zeros) as whole:
        try:
            done = 0
            while done < size:
                with whole[:min(chunk, size - done)] as view:
                    try:
                        done += os.write(fd, view)
                    except OSError as exc:  # EINVAL: O_DIRECT refused (alignment): buffered
                        now = fcntl.fcntl(fd, fcntl.F_GETFL)
                        if exc.errno != errno.EINVAL or not now & os.O_DIRECT:
                            raise
                        fcntl.fcntl(fd, fcntl.F_SETFL, now & ~os.O_DIRECT)
            os.fsync(fd)
        finally:
            os.close(fd)


class TrialFilesystem:
    """Where the trial roots go (:attr:`root`); a context manager that unmounts at the end.

    ``mode`` is ``"image"`` (a journaled ext4 image when possible, else the work directory)
    or ``"here"`` (the work directory).  :attr:`info` describes the filesystem for the
    results' ``machine``; :attr:`note`, when set, says why the trials did not run on an image.
    """

    def __init__(self, work: Path, mode: str = "image", size_bytes: int = 8 * GIB, *,
                 keep: bool = False, name: str = MOUNT) -> None:
        self.work = work
        self.mode = mode
        self.size = size_bytes
        self.keep = keep
        self.image = work / f"{name}.img"   # IMAGE by default
        self.mount = work / name
        self.root = work
        self.mounted = False
        self.note: str | None = None
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------ set-up
    def why_not(self) -> str | None:
        """Why no image can be mounted here, or None."""
        if self.mode == "here":
            return "--fs here"
        if os.geteuid() != 0:
            return "not running as root (a loop mount needs it)"
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            return "not found: " + ", ".join(missing)
        if not Path("/dev/loop-control").exists() and not any(Path("/dev").glob("loop[0-9]*")):
            return "no loop devices (/dev/loop-control)"
        return None

    def __enter__(self) -> TrialFilesystem:
        self.work.mkdir(parents=True, exist_ok=True)
        self.release()  # left mounted by an interrupted or --keep run
        problem = self.why_not()
        if problem is None:
            problem = self._mount_image()
        if problem is None:
            self.root = self.mount
            self.info = {"kind": "image", "image": str(self.image), "size_bytes": self.size, "filled": True,
                         "mkfs_extended": MKFS_EXTENDED, **describe(self.mount, self.image)}
            log(f"trials on {summary(self.info)}")
            return self
        self.root = self.work
        self.info = {"kind": "here", "why": problem, **describe(self.work)}
        self.note = (f"trials ran in the work directory, not on a journaled ext4 image ({problem}): "
                     f"{summary(self.info)}")
        log(self.note)
        return self

    def _run(self, argv: list[str]) -> str | None:
        """Run a set-up command; its error message, or None."""
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            return f"`{' '.join(argv)}` exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
        return None

    def _mount_image(self) -> str | None:
        log(f"making a {self.size / GIB:g} GiB ext4 image for the trials, written in full: {self.image}")
        try:
            fill(self.image, self.size)
        except OSError as exc:  # no room for it on the host
            self.release()
            return f"cannot write the {self.size / GIB:g} GiB image {self.image}: {exc.strerror}"
        self.mount.mkdir(exist_ok=True)
        problem = self._run(["mkfs.ext4", "-q", "-F", "-E", MKFS_EXTENDED, str(self.image)]) \
            or self._run(["mount", "-o", "loop", str(self.image), str(self.mount)])
        if problem is not None:
            self.release()
            return problem
        self.mounted = True
        return None

    # ------------------------------------------------------------ tear-down
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.keep and self.mounted:
            log(f"--keep: the trial image stays mounted on {self.mount} ({self.image}); "
                "the next run unmounts and deletes it")
            return
        self.release()

    def release(self) -> None:
        """Unmount the image (lazily if busy) and delete it and its mount point."""
        if self.mount.exists() and _is_mount_point(self.mount):
            log(f"unmounting {self.mount}")
            if self._run(["umount", str(self.mount)]) is not None:
                problem = self._run(["umount", "-l", str(self.mount)])
                log(f"umount failed (busy?): lazy unmount{' failed: ' + problem if problem else ''}")
        self.mounted = False
        self.image.unlink(missing_ok=True)
        try:
            self.mount.rmdir()
        except FileNotFoundError:
            pass
        except OSError as error:  # still mounted, or files written there without the image
            log(f"left {self.mount}: {error}")
