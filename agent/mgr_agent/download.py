"""``install URL --sha256 HEX``: fetch a package over HTTPS into the agent's state dir.

A sha256 is required (the download is refused without one, and a mismatch is exit 12);
plain http is refused unless explicitly allowed; the size is bounded (Content-Length is
checked first, then every byte counted); connect/read timeouts; transient failures
(connection errors, timeouts, 429 and 5xx) are retried with exponential backoff, while
failures that cannot heal (no such host, an untrusted certificate, other 4xx) are not.
A failed download leaves nothing behind: no partial file, no folder it created.
The CLI and the daemon use this same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NameResolutionError

from mgr_agent.errors import ChecksumMismatch, DownloadFailed, UsageError
from mgr_agent.fsutil import write_atomic
from mgr_agent.layout import Layout

SHA256 = re.compile(r"[0-9a-fA-F]{64}")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ALLOW_HTTP_ENV = "MGR_AGENT_ALLOW_HTTP"


@dataclass(frozen=True)
class Policy:
    max_bytes: int = 4 * 1024**3
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0          # seconds before the 1st retry; doubled each time
    allow_http: bool = False
    chunk: int = 256 * 1024


def is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def downloads_dir(layout: Layout) -> Path:
    """Where downloads are kept until installed (not the engine's scratch dir, which its
    clean-up empties at the start of every transaction)."""
    return layout.state_dir / "downloads"


def _filename(url: str) -> str:
    base = os.path.basename(urlsplit(url).path) or "package"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", base)[:100].lstrip(".") or "package"


def _check(url: str, sha256: str | None, policy: Policy) -> str:
    if not sha256:
        raise UsageError(f"{url}: a download needs --sha256 HEX",
                         hint="the sha256 of the package is published next to it")
    if not SHA256.fullmatch(sha256):
        raise UsageError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    check_url(url, policy)
    return sha256.lower()


def check_url(url: str, policy: Policy,
              http_hint: str = f"plain http is allowed only with {ALLOW_HTTP_ENV}=1") -> None:
    """Refuse what is not https (http only when allowed) or has no host."""
    parts = urlsplit(url)
    allow_http = policy.allow_http or os.environ.get(ALLOW_HTTP_ENV) == "1"
    if parts.scheme != "https" and not (parts.scheme == "http" and allow_http):
        raise UsageError(f"{url}: only https:// URLs are downloaded", hint=http_hint)
    if not parts.hostname:
        raise UsageError(f"{url}: no host in the URL")


class _Transient(Exception):
    pass


def _causes(exc: BaseException) -> list[object]:
    """``exc``, what it wraps (urllib3's ``reason``) and its causes."""
    seen: list[object] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [getattr(item, "reason", None), getattr(item, "__cause__", None),
                 getattr(item, "__context__", None)]
        todo += [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
    return seen


def _unhealable(url: str, exc: BaseException) -> DownloadFailed | None:
    """A failure that retrying cannot heal (no such host, an untrusted certificate), or None."""
    host = urlsplit(url).hostname
    causes = _causes(exc)
    if any(isinstance(c, requests.exceptions.SSLError | ssl.SSLError) for c in causes):
        return DownloadFailed(
            f"{url}: TLS verification of {host} failed: {exc}",
            hint="the server's certificate is not trusted here (REQUESTS_CA_BUNDLE names a CA "
                 "bundle); nothing was changed")
    if any(isinstance(c, NameResolutionError | socket.gaierror) for c in causes):
        return DownloadFailed(f"{url}: cannot resolve the host name {host}",
                              hint="check the host name in the URL and the DNS settings; "
                                   "nothing was changed")
    return None


def _attempt(session: requests.Session, url: str, dest: Path, policy: Policy,
             progress: Callable[[str], None]) -> str:
    """One GET into ``dest``; returns the sha256 of what was written."""
    try:
        resp = session.get(url, stream=True, allow_redirects=True,
                           timeout=(policy.connect_timeout, policy.read_timeout))
    except (requests.ConnectionError, requests.Timeout) as exc:
        final = _unhealable(url, exc)
        if final is not None:
            raise final from exc
        raise _Transient(f"{exc.__class__.__name__}: {exc}") from exc
    except requests.RequestException as exc:
        raise DownloadFailed(f"{url}: {exc}") from exc
    with resp:
        if resp.url and urlsplit(resp.url).scheme != urlsplit(url).scheme == "https":
            raise DownloadFailed(f"{url}: redirected to a non-https URL {resp.url}")
        if resp.status_code in RETRY_STATUS:
            raise _Transient(f"HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise DownloadFailed(f"{url}: HTTP {resp.status_code} {resp.reason}")
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > policy.max_bytes:
            raise DownloadFailed(f"{url}: {int(length)} bytes is over the limit of {policy.max_bytes}")
        progress(f"downloading {url}" + (f" ({int(length)} bytes)" if length.isdigit() else ""))
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            size = 0
            try:
                for chunk in resp.iter_content(policy.chunk):
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise DownloadFailed(f"{url}: more than the limit of {policy.max_bytes} bytes")
                    digest.update(chunk)
                    yield chunk
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Transient(f"{exc.__class__.__name__} after {size} bytes: {exc}") from exc
            except requests.RequestException as exc:
                raise DownloadFailed(f"{url}: {exc}") from exc
            if length.isdigit() and size != int(length):
                raise _Transient(f"got {size} of {length} bytes")

        write_atomic(dest, body(), 0o600)   # a failed attempt leaves no partial file
        return digest.hexdigest()


def fetch(url: str, sha256: str | None, layout: Layout, *, policy: Policy | None = None,
          progress: Callable[[str], None] | None = None,
          session: requests.Session | None = None) -> Path:
    """Download ``url`` into the downloads dir and verify it; the caller removes the file."""
    policy = policy or Policy()
    want = _check(url, sha256, policy)
    say = progress or (lambda _msg: None)
    directory, made = _make_downloads_dir(layout)
    dest = directory / f"{want[:16]}-{os.getpid()}-{time.monotonic_ns()}-{_filename(url)}"
    try:
        got = _download(session, url, dest, policy, say)
        if got != want:
            raise ChecksumMismatch(f"{url}: sha256 is {got}, expected {want}", url=url)
    except BaseException:
        _remove(dest, made)
        raise
    return dest


def _make_downloads_dir(layout: Layout) -> tuple[Path, list[Path]]:
    """Create the downloads directory; returns it and the folders this call created."""
    directory = downloads_dir(layout)
    made = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory, made


def _remove(dest: Path, made: list[Path]) -> None:
    """A failed or finished-with download leaves nothing, not even the folders it made."""
    discard(dest)
    for path in made:
        with contextlib.suppress(OSError):
            path.rmdir()


def _download(session: requests.Session | None, url: str, dest: Path, policy: Policy,
              say: Callable[[str], None]) -> str:
    """GET ``url`` into ``dest`` with retries and backoff; returns the sha256 written."""
    own = session is None
    sess = session or requests.Session()
    sess.headers.setdefault("User-Agent", "mgr-agent")
    try:
        delay = policy.backoff
        for attempt in range(policy.retries + 1):
            try:
                return _attempt(sess, url, dest, policy, say)
            except _Transient as exc:
                if attempt >= policy.retries:
                    raise DownloadFailed(f"{url}: {exc} (gave up after {attempt + 1} attempts)") from None
                say(f"download failed ({exc}); retrying in {delay:g} s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")
    finally:
        if own:
            sess.close()


def fetch_bytes(url: str, layout: Layout, *, policy: Policy, http_hint: str | None = None,
                progress: Callable[[str], None] | None = None,
                session: requests.Session | None = None) -> bytes:
    """A small document (an APS repository description): same limits, timeouts and
    retries as :func:`fetch`, no checksum (there is none published to check)."""
    check_url(url, policy, *([http_hint] if http_hint else []))
    directory, made = _make_downloads_dir(layout)
    dest = directory / f"doc-{os.getpid()}-{time.monotonic_ns()}-{_filename(url)}"
    try:
        _download(session, url, dest, policy, progress or (lambda _msg: None))
        return dest.read_bytes()
    finally:
        _remove(dest, made)


def discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def clean(layout: Layout, older_than: float = 3600.0) -> None:
    """Remove downloads left by a process that died before installing them."""
    directory = downloads_dir(layout)
    if not directory.is_dir():
        return
    now = time.time()
    for child in directory.iterdir():
        with contextlib.suppress(OSError):
            if now - child.lstat().st_mtime > older_than:
                child.unlink()
