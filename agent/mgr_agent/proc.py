"""The one place that starts subprocesses: argv lists, clean environment, own process
group, no inherited descriptors, a timeout that kills the whole group, bounded output."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str
    timed_out: bool
    truncated: bool
    seconds: float
    stderr: str = ""  # only with ``separate_stderr=True``; ``output`` is then stdout alone
    stdout_bytes: bytes = b""  # the raw stdout, only with ``separate_stderr=True``


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: PATH, LANG, HOME, plus ``extra``."""
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = "/"
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home}
    if extra:
        env.update(extra)
    return env


class _Capture:
    """Reads a pipe in a thread, keeping the head and the tail of the output."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        half = self.limit // 2
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            room = half - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                if len(self.tail) > half:
                    self.dropped += len(self.tail) - half
                    del self.tail[: len(self.tail) - half]

    def data(self) -> bytes:
        """The captured bytes (head, a note of what was dropped, tail)."""
        data = bytes(self.head)
        if self.dropped:
            data += f"\n[... {self.dropped} bytes of output dropped ...]\n".encode()
        return data + bytes(self.tail)

    def text(self) -> tuple[str, bool]:
        return self.data().decode("utf-8", "replace"), self.dropped > 0


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError):  # BrokenPipeError: the command did not read it all
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _exited_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether ``proc`` exits within ``timeout`` seconds, woken by its exit (a pidfd) rather
    than by ``Popen.wait``'s polling, which sleeps up to 50 ms past a short hook's end."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # a kernel without pidfd_open (before 5.3): Popen's polling
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(min(timeout, 86400.0) * 1000))))
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Runner:
    """Runs commands; one instance is shared by everything that needs a subprocess."""

    def __init__(self, *, output_limit: int = 64 * 1024, drain_seconds: float = 1.0) -> None:
        self.output_limit = output_limit
        self.drain_seconds = drain_seconds

    @functools.cached_property
    def pdeathsig(self) -> str:
        """``setpriv``, which kills a command when the agent dies; looked up at the first run
        (shutil imports bz2 and lzma: a read-only command that builds the engine runs nothing)."""
        import shutil  # noqa: PLC0415

        return shutil.which("setpriv", path=SAFE_PATH) or ""

    def run(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float,
        stdin: bytes | None = None,
        separate_stderr: bool = False,
    ) -> Completed:
        """Run ``argv`` to completion or timeout.

        stdout and stderr are merged into ``output`` unless ``separate_stderr``: then
        ``output`` is stdout alone (``stdout_bytes`` its raw bytes, ``truncated`` about it)
        and ``stderr`` is captured on its own, each bounded by ``output_limit``.
        """
        start = time.monotonic()
        if self.pdeathsig:
            # The command dies with the agent (SIGKILLed mid-hook), so that recovery never
            # races a hook still writing under the panel tree.
            argv = [self.pdeathsig, "--pdeathsig", "KILL", "--", *argv]
        read_fd, write_fd = os.pipe()
        err_read, err_write = os.pipe() if separate_stderr else (read_fd, write_fd)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=clean_env(env),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=write_fd,
                stderr=err_write,
                close_fds=True,
                start_new_session=True,
            )
        except OSError:
            os.close(read_fd)
            if separate_stderr:
                os.close(err_read)
            raise
        finally:
            os.close(write_fd)
            if separate_stderr:
                os.close(err_write)
        captures = [_Capture(read_fd, self.output_limit)]
        if separate_stderr:
            captures.append(_Capture(err_read, self.output_limit))
        timed_out = False
        try:
            if stdin is not None and proc.stdin is not None:
                # fed from a thread: a command that never reads a large input must not
                # block us past the timeout
                threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
            if not _exited_within(proc, timeout):
                timed_out = True
                _kill_group(proc.pid)
            proc.wait()
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            # Descendants left in the hook's group (daemons that kept our pipe) are ended,
            # so that a hook can neither hang the agent nor outlive its transaction.
            for capture in captures:
                capture.thread.join(self.drain_seconds)
            if any(c.thread.is_alive() for c in captures):
                _kill_group(proc.pid)
                for capture in captures:
                    capture.thread.join(self.drain_seconds)
            _kill_group(proc.pid)
            for capture in captures:
                capture.thread.join(self.drain_seconds)
                if not capture.thread.is_alive():
                    os.close(capture.fd)
        output, truncated = captures[0].text()
        # with separate streams, ``truncated`` is about stdout (stderr carries its own note)
        stderr = captures[1].text()[0] if separate_stderr else ""
        if self.pdeathsig:
            argv = argv[4:]
        return Completed(
            argv=tuple(argv),
            returncode=proc.returncode if not timed_out else -signal.SIGKILL,
            output=output,
            timed_out=timed_out,
            truncated=truncated,
            seconds=time.monotonic() - start,
            stderr=stderr,
            stdout_bytes=captures[0].data() if separate_stderr else b"",
        )

    def start(self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        """Start ``argv`` with pipes on its stdin and stdout (stderr on /dev/null), in its own
        process group, clean environment, no inherited descriptor but ``pass_fds``, dying
        with the agent (as :meth:`run`'s commands); the caller talks to it, then waits for
        it or ends it with :meth:`stop`."""
        if self.pdeathsig:
            argv = [self.pdeathsig, "--pdeathsig", "KILL", "--", *argv]
        return subprocess.Popen(argv, cwd=cwd, env=clean_env(env), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                close_fds=True, pass_fds=pass_fds, start_new_session=True)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        """Kill a process :meth:`start` started, with its group, and reap it."""
        _kill_group(proc.pid)
        proc.wait()

    def spawn(self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> int:
        """Start ``argv`` detached, to outlive the caller: its own session (so that no
        process-group kill of the caller's command reaches it), clean environment, stdin,
        stdout and stderr on /dev/null, no inherited descriptors, no parent-death signal.
        Returns its pid; the caller does not wait for it: a daemon thread reaps it when it
        ends, so that a long-lived caller (the daemon) keeps no zombie, and it is
        reparented when the caller exits first."""
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        threading.Thread(target=proc.wait, name="mga-reap", daemon=True).start()
        return proc.pid
