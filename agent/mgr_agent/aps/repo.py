"""Repository descriptions (the XML an ``ApsExtRepository`` URL points at) and the
``--versions``/``--current`` files of ``aps resolve``.

A repository description is an APS catalog feed: an Atom ``<feed>`` whose ``<entry>``
elements carry the package's ``name``, ``version`` and ``release`` in the APS repository
namespace (``http://apstandard.com/ns/repo/1``), the title standing in for a missing name.
A package's version as the panel shows it is ``VERSION-RELEASE`` (``7.31-36``).  Only
the document given is read: paging links (``rel="next"``) are not followed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import requests

from mgr_agent import download, xmlsafe
from mgr_agent.aps import InvalidRepository
from mgr_agent.aps.resolve import Current
from mgr_agent.errors import InvalidXML, UsageError
from mgr_agent.layout import Layout

MAX_DESCRIPTION_BYTES = 16 * 1024 * 1024


def _local(tag: object) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1]


def packages(data: bytes, source: str) -> dict[str, list[str]]:
    """Script name -> versions, from a repository description (raises ``InvalidRepository``)."""
    try:
        root = xmlsafe.parse(data, source, max_bytes=MAX_DESCRIPTION_BYTES)
    except InvalidXML as exc:
        raise InvalidRepository(f"repository description {exc.message}",
                                hint="the panel could not read it either; check the URL") from exc
    out: dict[str, list[str]] = {}
    for entry in root.iter():
        if not isinstance(entry.tag, str) or _local(entry.tag) != "entry":
            continue
        fields: dict[str, str] = {}
        for child in entry:
            if isinstance(child.tag, str) and child.text and child.text.strip():
                fields.setdefault(_local(child.tag), child.text.strip())
        name = fields.get("name") or fields.get("title")
        version = fields.get("version")
        if not name or not version:
            continue
        release = fields.get("release")
        out.setdefault(name, []).append(f"{version}-{release}" if release else version)
    return out


def fetch(url: str, layout: Layout, *, insecure: bool, progress: Callable[[str], None] | None = None,
          session: requests.Session | None = None) -> dict[str, list[str]]:
    """Download and read a repository description (https, or http with ``insecure``)."""
    policy = download.Policy(max_bytes=MAX_DESCRIPTION_BYTES, connect_timeout=10.0, read_timeout=30.0,
                             retries=2, backoff=0.5, allow_http=insecure)
    data = download.fetch_bytes(url, layout, policy=policy, progress=progress, session=session,
                                http_hint="pass --insecure to fetch a repository over plain http")
    return packages(data, url)


def _json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: not valid JSON ({exc})") from exc


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UsageError(f"{where}: expected a list of version strings")
    return [v.strip() for v in value]


def versions_file(path: Path) -> dict[str, list[str]]:
    """``--versions FILE``: a repository description (XML), or JSON ``{"NAME": ["VERSION", …]}``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--versions {path}: no such file") from None
    if data.lstrip().startswith(b"<"):
        return packages(data, str(path))
    doc = _json(path, "--versions")
    if not isinstance(doc, dict):
        raise UsageError(f"--versions {path}: expected a JSON object of script name -> versions")
    return {str(k): _strings(v, f"--versions {path}: {k!r}") for k, v in doc.items()}


def current_file(path: Path) -> dict[str, Current]:
    """``--current FILE``: JSON ``{"NAME": ["VERSION", …]}`` or
    ``{"NAME": {"allowed": [...], "default": "VERSION"}}`` — what users have now."""
    doc = _json(path, "--current")
    if not isinstance(doc, dict):
        raise UsageError(f"--current {path}: expected a JSON object of script name -> versions")
    out = {}
    for name, value in doc.items():
        where = f"--current {path}: {name!r}"
        if isinstance(value, dict):
            unknown = set(value) - {"allowed", "default"}
            if unknown:
                raise UsageError(f"{where}: unknown keys {sorted(unknown)} (allowed, default)")
            default = value.get("default")
            if default is not None and not isinstance(default, str):
                raise UsageError(f"{where}: default must be a version string")
            out[str(name)] = Current(tuple(_strings(value.get("allowed", []), where)), default)
        else:
            out[str(name)] = Current(tuple(_strings(value, where)))
    return out
