"""A stand-in for Plesk's ``extension`` utility (``PSA/bin/extension``), for tests and the demo.

It models the part of Plesk the agent uses: the list of registered extensions (Plesk
keeps it in its database; the stand-in in ``PSA/var/standin-extensions.json``).
``--register ID`` reads ``PSA/admin/plib/modules/ID/meta.xml`` and records the
extension; ``--unregister ID`` removes it; ``--list`` prints one line per extension.
A command named in ``PSA/var/standin-extension-fail`` (one per line: ``register``,
``unregister``, ``list``) fails with exit 1, so tests can make Plesk refuse.
See docs/standin.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mgr_agent import xmlsafe
from mgr_agent.errors import AgentError
from mgr_agent.fsutil import atomic_write

REGISTRY = "var/standin-extensions.json"
FAIL = "var/standin-extension-fail"


def registry(psa: Path) -> dict[str, dict[str, str]]:
    """The registered extensions: ID -> name, version, release."""
    try:
        data = json.loads((psa / REGISTRY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): dict(v) for k, v in data.items()}


def _save(psa: Path, entries: dict[str, dict[str, str]]) -> None:
    """Write the registry atomically; an empty one is no file (as before the first)."""
    if not entries:
        (psa / REGISTRY).unlink(missing_ok=True)
        return
    text = json.dumps(entries, indent=1, sort_keys=True) + "\n"
    atomic_write(psa / REGISTRY, text.encode(), 0o644)


def _fails(psa: Path, command: str) -> bool:
    try:
        wanted = (psa / FAIL).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return False
    return command in wanted


def _register(psa: Path, ext: str) -> int:
    meta = psa / "admin/plib/modules" / ext / "meta.xml"
    try:
        root = xmlsafe.parse(meta.read_bytes(), str(meta))
    except FileNotFoundError:
        print(f"Unable to register the extension {ext}: {meta} not found", file=sys.stderr)
        return 1
    except AgentError as exc:
        print(f"Unable to register the extension {ext}: {exc.message}", file=sys.stderr)
        return 1
    if xmlsafe.text_of(root, "id") != ext:
        print(f"Unable to register the extension {ext}: meta.xml names "
              f"{xmlsafe.text_of(root, 'id')!r}", file=sys.stderr)
        return 1
    entries = registry(psa)
    entries[ext] = {field: xmlsafe.text_of(root, field) or "" for field in ("name", "version", "release")}
    _save(psa, entries)
    print(f"The extension {ext} was successfully registered.")
    return 0


def _unregister(psa: Path, ext: str) -> int:
    entries = registry(psa)
    if ext not in entries:
        print(f"Unable to unregister the extension {ext}: it is not registered", file=sys.stderr)
        return 1
    del entries[ext]
    _save(psa, entries)
    print(f"The extension {ext} was successfully unregistered.")
    return 0


def main(argv: list[str] | None = None, *, mgr: str | None = None) -> int:
    """``extension --register ID | --unregister ID | --list``; ``mgr`` is PSA here (the
    directory above ``bin/``, as the shared stand-in launcher passes it)."""
    parser = argparse.ArgumentParser(prog="extension",
                                     description="Plesk stand-in extension utility (mgr-agent)")
    parser.add_argument("--mgr", default=mgr, help=argparse.SUPPRESS)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--register", "-r", metavar="ID")
    group.add_argument("--unregister", metavar="ID")
    group.add_argument("--list", "-l", action="store_true")
    args = parser.parse_args(argv)
    if not args.mgr:
        parser.error("--mgr is required")
    psa = Path(args.mgr).absolute()
    command = "register" if args.register else "unregister" if args.unregister else "list"
    if _fails(psa, command):
        print(f"stand-in: {command} fails on demand ({psa / FAIL})", file=sys.stderr)
        return 1
    # no lock of its own: the agent calls it under its lock
    if args.register:
        return _register(psa, args.register)
    if args.unregister:
        return _unregister(psa, args.unregister)
    for ext, row in sorted(registry(psa).items()):
        print(f"{ext}  {row['version']}-{row['release']}  {row['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
