"""What a folder or archive holds: files no package installs, and where its plugin lies.

Two rules shared by ``install``/``check`` (through :mod:`mgr_agent.package`) and by the
tools that build packages:

- :func:`is_junk`: version-control and editor files (``.git/``, ``.gitignore``,
  ``*.swp`` ...) are never part of a package, whatever the panel or the source.
- :func:`detect_layout`: which panel a tree is for and under which folder it lies; when
  the top holds no plugin, :func:`find_plugins` looks a few levels down so that the error
  names the folder(s) and the command that installs one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mgr_agent.errors import InvalidPackage

if TYPE_CHECKING:
    from mgr_agent.panels.base import Panel

JUNK_DIRS = frozenset({".git", ".svn", ".hg", "CVS", ".bzr", "__MACOSX"})
JUNK_FILES = frozenset({".gitignore", ".gitattributes", ".gitmodules", ".gitkeep", ".hgignore",
                        ".hgtags", ".DS_Store", "Thumbs.db", "desktop.ini"})
JUNK_SUFFIXES = ("~", ".swp", ".swo")
JUNK_RULE = ("VCS and editor files: " + ", ".join(f"{d}/" for d in sorted(JUNK_DIRS)) + ", "
             + ", ".join(sorted(JUNK_FILES)) + ", " + ", ".join(f"*{s}" for s in JUNK_SUFFIXES))

SEARCH_DEPTH = 3
"""How many folders down :func:`find_plugins` looks for a misplaced plugin."""


def is_junk(name: str) -> bool:
    """Whether a package entry (POSIX path, files or folders) is VCS or editor junk."""
    parts = name.rstrip("/").split("/")
    if not JUNK_DIRS.isdisjoint(parts[:-1]):
        return True
    last = parts[-1]
    return last in JUNK_DIRS or last in JUNK_FILES or last.endswith(JUNK_SUFFIXES)


_JUNK_WORDS = (*JUNK_DIRS, *JUNK_FILES, *JUNK_SUFFIXES)


def without_junk(names: list[str]) -> list[str]:
    """``names`` without the junk ones (:func:`is_junk`).  A junk name holds one of the
    rule's words, so when none occurs anywhere in them, one search per word tells."""
    joined = "\n".join(names)
    if not any(word in joined for word in _JUNK_WORDS):
        return names
    return [n for n in names if not is_junk(n)]


def junk_root(name: str) -> str:
    """The outermost junk path of an entry: ``repo/.git/objects/ab`` → ``repo/.git/``."""
    parts = name.rstrip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part in JUNK_DIRS:
            return "/".join(parts[: i + 1]) + "/"
    return name


def summarize(paths: Iterable[str], what: str, *, verb: str = "skipped", limit: int = 5) -> str:
    """One line for a list of paths: the count and the first few (all of them in --json)."""
    items = sorted(paths)
    shown = ", ".join(items[:limit]) + (", …; all listed in --json" if len(items) > limit else "")
    return f"{verb} {len(items)} {what}: {shown}"


def wrapping_prefix(names: set[str]) -> str:
    """The single wrapping folder of an archive from a code host (``repo-main/``), or ""."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop() + "/"
    return ""


def _under(names: set[str], prefix: str) -> set[str]:
    return {n[len(prefix):] for n in names if n.startswith(prefix)}


@dataclass(frozen=True)
class Found:
    """A plugin found in a tree: its folder (``""`` for the top, else ending in ``/``)."""

    prefix: str
    panel: str


def find_plugins(names: set[str], panels: list[Panel], depth: int = SEARCH_DEPTH) -> list[Found]:
    """Folders (up to ``depth`` levels down) whose content a panel recognises, outermost first.

    A folder inside one already found is not reported again (``plugin/`` hides
    ``plugin/usr/local/mgr5/``).
    """
    subs: dict[str, set[str]] = {"": set(names)}
    for name in names:  # each name under each of its folders, in one pass: O(names x depth)
        parts = name.split("/")
        for i in range(1, min(len(parts) - 1, depth) + 1):
            subs.setdefault("/".join(parts[:i]) + "/", set()).add("/".join(parts[i:]))
    found: list[Found] = []
    for prefix in sorted(subs, key=lambda p: (p.count("/"), p)):
        if any(prefix.startswith(f.prefix) for f in found):
            continue
        found += [Found(prefix, p.name) for p in panels if p.detect(subs[prefix])]
    return found


def detect_layout(names: set[str], panels: list[Panel], hint: str | None = None, *,
                  where: str = "the archive", install_path: str = "DIR") -> tuple[Panel, str]:
    """The panel a package is for (``hint`` forces one) and the folder it lies under.

    ``where`` names the source in messages ("the folder /src/x", "the archive x.zip");
    ``install_path`` is what to put before a sub-folder in the suggested command.
    """
    candidates = [""]
    wrapped = wrapping_prefix(names)
    if wrapped:
        candidates.append(wrapped)
    by_name = {p.name: p for p in panels}
    wanted = [by_name[hint]] if hint is not None else panels
    for prefix in candidates:
        sub = _under(names, prefix)
        found = [p for p in wanted if p.detect(sub)]
        if len(found) > 1:
            raise InvalidPackage(
                f"{where} looks like both " + " and ".join(p.name for p in found),
                hint="pass --panel to choose", rule="detection")
        if found:
            return found[0], prefix
    rules = "; ".join(f"{p.name}: {p.detection_rule}" for p in wanted)
    what = f"a {hint} package" if hint else "a plugin for either panel"
    deeper = [f for f in find_plugins(names, wanted) if f.prefix not in candidates]
    if not deeper:
        raise InvalidPackage(f"{where} does not hold {what} at its top ({rules})",
                             rule="detection",
                             hint="point mgr-agent at the folder or archive that holds the plugin")
    unpack = "" if where.startswith("the folder") else "unpack it, then "
    folders = ", ".join(f"{f.prefix} ({f.panel})" for f in deeper)
    if len(deeper) == 1:
        message = f"{where} holds no plugin at its top, but a {deeper[0].panel} package in {folders}"
        hint_text = f"{unpack}install that folder: mgr-agent install {install_path}/{deeper[0].prefix}"
    else:
        message = f"{where} holds {len(deeper)} plugins, one per folder: {folders}"
        hint_text = (f"{unpack}install them one at a time: mgr-agent install "
                     f"{install_path}/{deeper[0].prefix}, and so on")
    raise InvalidPackage(message, hint=hint_text, rule="detection",
                         found=[f.prefix for f in deeper])
