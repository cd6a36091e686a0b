"""The entries of a large package that are not kept in memory, hashed (and scanned for
secrets) by a helper process while the agent hashes the others: the second CPU.

Threads do not give it: the inflating and hashing of each entry hold the GIL for its
Python between the short zlib and hashlib calls, so two threads beside the main one add
no CPU (docs/performance.md).  The helper is ``python -m mgr_agent.hashproc``, started
by :meth:`mgr_agent.proc.Runner.start` (its own process group, clean environment, killed
with the agent).  It reads the request on stdin — the archive's descriptor (the agent's
own, passed down) and, per entry, its name, its central directory record
(:data:`mgr_agent.zipread.Member`), its declared size and whether to scan it — and writes
one result per entry on stdout as it goes: the name, the sha256 (None when the entry
could not be read whole and sound) and the scan's hits.

The helper decides nothing: every entry it could not answer for (damaged, or the helper
gone) is read again in the agent by ``fallback``, which raises the refusal the threads
would have raised, with its rule and message.  Reading only, it changes nothing on disk.
"""

from __future__ import annotations

import hashlib
import marshal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent import zipread
from mgr_agent.digests import sha256_fd
from mgr_agent.secretscan import secret_hits

if TYPE_CHECKING:  # the helper itself imports no more than it reads with
    from mgr_agent.proc import Runner

WAIT_SECONDS = 600.0
"""How long the agent waits for the helper's last answer before it kills it and reads the
entries left itself."""

Request = tuple[str, int, int, int, int, bytes, int, bool]
"""name, the four numbers and the raw name of its :data:`zipread.Member`, declared size,
scan."""


def _answer(fd: int, entry: Request) -> tuple[str, str | None, Any]:
    name, offset, csize, method, crc, raw, size, scan = entry
    digest = hashlib.sha256()
    parts: list[bytes] = []
    seen = 0
    try:
        for chunk in zipread.chunks(fd, (offset, csize, method, crc, raw)):
            seen += len(chunk)
            if seen > size:
                return name, None, None
            digest.update(chunk)
            if scan:
                parts.append(chunk)
    except Exception:  # the agent reads it again, and names what is wrong
        return name, None, None
    if seen != size:
        return name, None, None
    return name, digest.hexdigest(), secret_hits(b"".join(parts)) if scan else None


def main() -> int:
    """The helper: the request from stdin, one answer per entry on stdout, then the
    archive's own sha256 if asked (as the name None).  The archive is read through the
    agent's own descriptor, passed down: the very bytes the agent stages, even if the
    file at its path were replaced meanwhile."""
    fd, entries, whole = marshal.load(sys.stdin.buffer)  # noqa: S302 - the agent's own request
    out = sys.stdout.buffer
    try:
        for entry in entries:
            marshal.dump(_answer(fd, entry), out)
        out.flush()
        if whole:
            marshal.dump((None, sha256_fd(fd), None), out)
            out.flush()
    except BrokenPipeError:  # the agent is gone, or no longer needs the answers
        return 1
    return 0


def warn(message: str) -> None:
    """A warning in the agent's log (the journal under the daemon): the helper's trouble
    costs time, never a result, so it is said there, not to the caller."""
    import logging  # noqa: PLC0415 - the agent's side only: the helper never logs

    logging.getLogger("mgr_agent").warning("%s", message)


class Helper:
    """The agent's side: hashes of ``names`` (and the scan's results for those of
    :attr:`names`) computed by the helper; the same interface as the hashing threads
    (:class:`mgr_agent.hashing.Threads`: ``names``, :meth:`results`, :meth:`result`, :meth:`cancel`)."""

    def __init__(self, runner: Runner, fd: int, entries: list[Request],
                 done: dict[str, str], fallback: Callable[[str, bool], tuple[str, bytes | None]],
                 scan: Callable[[bytes], object] | None) -> None:
        """``fd``: the agent's descriptor of the archive (read-only, read with ``pread``),
        passed to the helper; ``entries``: what to ask (``Request``);
        ``done``: the hashes known before, which :meth:`result` merges (the caller may
        complete it until then); ``fallback(name, keep)``: the entry's sha256 read in the
        agent, and its bytes when ``keep``; ``scan``: what the helper runs
        (:func:`secret_hits`), run on a fallback's bytes.  The helper also hashes the
        archive itself: :attr:`digest` (computed here if the helper does not say it)."""
        self.names = frozenset(e[0] for e in entries if e[7])
        self._fd = fd
        self.digest: Future[str] = Future()
        """The archive's sha256."""
        self._all = [e[0] for e in entries]
        self._done = done
        self._fallback = fallback
        self._scan = scan
        self._hashes: dict[str, str] = {}
        self._results: dict[str, object] = {}
        self._runner = runner
        self._settled = False
        self._cancelled = False
        package_dir = str(Path(__file__).resolve().parent.parent)  # the same agent's code
        self._proc = runner.start([sys.executable, "-m", "mgr_agent.hashproc"], cwd=Path("/"),
                                  env={"PYTHONPATH": package_dir}, pass_fds=(fd,))
        request = marshal.dumps((fd, entries, True))
        self._feeder = threading.Thread(target=self._feed, args=(request,), name="mga-helper-in",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read, name="mga-helper-out", daemon=True)
        self._feeder.start()
        self._reader.start()

    def _feed(self, request: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(request)
            stdin.close()
        except OSError:  # the helper is gone: its entries are read by the fallback
            pass

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while True:
                name, digest, hits = marshal.load(stdout)  # noqa: S302 - its own helper's
                if name is None:
                    self.digest.set_result(digest)
                elif digest is not None:
                    self._hashes[name] = digest
                    if name in self.names:
                        self._results[name] = hits
        except (EOFError, ValueError, TypeError, OSError):  # the end, or a helper cut short
            pass
        finally:
            if not self.digest.done():  # the helper gone first: hashed here, unless cancelled
                try:
                    if self._cancelled:
                        raise RuntimeError("the package was closed")
                    warn(f"the hashing helper ended before its last answer (exit status "
                          f"{self._proc.wait()}): the agent reads what it left")
                    self.digest.set_result(sha256_fd(self._fd))
                except Exception as exc:  # handed to whoever waits for it
                    self.digest.set_exception(exc)

    def _settle(self) -> None:
        """Wait for the helper; read in the agent what it did not answer for (raising
        what reading a damaged entry raises)."""
        if self._settled:
            return
        self._reader.join(WAIT_SECONDS)
        if self._reader.is_alive():
            self._runner.stop(self._proc)
            self._reader.join()
        self._proc.wait()
        self._close_pipes()
        for name in self._all:
            if name not in self._hashes:
                keep = name in self.names
                digest, data = self._fallback(name, keep)
                self._hashes[name] = digest
                if keep and self._scan is not None and data is not None:
                    self._results[name] = self._scan(data)
        self._settled = True

    def _close_pipes(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()

    def results(self) -> dict[str, object]:
        """The scan's result for each entry of :attr:`names`."""
        self._settle()
        return self._results

    def result(self) -> dict[str, str]:
        """Every entry's hash (those known before, and the helper's)."""
        self._settle()
        return dict(self._done) | self._hashes

    def cancel(self) -> None:
        """Stop the helper and wait for it."""
        self._cancelled = True
        if not self._settled:
            self._runner.stop(self._proc)
            self._reader.join()
            self._close_pipes()
            self._settled = True


if __name__ == "__main__":
    sys.exit(main())
