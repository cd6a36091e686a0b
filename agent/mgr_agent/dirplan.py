"""Which directories a transaction switches whole: the rule (:func:`choose`), and the
plan's record of each (:class:`DirOp`).  The switching itself is :mod:`mgr_agent.dirswitch`;
the rule is documented in docs/transactions.md#whole-directory-switches."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mgr_agent.layout import Layout

if TYPE_CHECKING:
    from mgr_agent.plan import Plan

How = Literal["exchange", "create", "remove"]


@dataclass
class DirOp:
    """One directory switched whole; ``links``: its unchanged files, relative to it."""

    k: int
    path: str
    how: How
    links: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {"k": self.k, "path": self.path, "how": self.how, "links": self.links}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DirOp:
        return cls(k=int(record["k"]), path=str(record["path"]), how=record["how"],
                   links=list(record.get("links", [])))


def mounts_in(path: str) -> list[str]:
    """Mount points at or below directory ``path`` (this process's /proc/self/mountinfo):
    a directory holding one cannot be moved as a whole without moving the mount with it."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == real or point.startswith(real + "/"):
            found.append(point)
    return found


def known_tree(top: str, prefix: str, known: Collection[str]) -> int | None:
    """How many files of the old version the live directory ``top`` (root-relative
    ``prefix``) holds, or None when it holds anything else: a file no version shipped, a
    link, a directory with none of them below it."""
    count = 0
    with os.scandir(top) as it:
        entries = list(it)
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            below = known_tree(entry.path, rel + "/", known)
            if not below:
                return None
            count += below
        elif entry.is_file(follow_symlinks=False) and rel in known:
            count += 1
        else:
            return None
    return count


def choose(layout: Layout, plan: Plan, candidates: Iterable[str], known: set[str],
           diverted: set[str]) -> None:
    """Pick the directories of ``candidates`` (root-relative, owned whole by the package)
    to switch whole, into ``plan.dirs``.  A directory qualifies when the plan changes
    something under it, it holds nothing but files of the installed version (``known``),
    no panel file is diverted in it, and one rename plus hard links costs fewer metadata
    operations than switching its files one by one."""
    for top in candidates:
        prefix = top + "/"
        ops = [op for op in plan.ops if op.path.startswith(prefix)]
        if not ops or any(op.divert or op.path in diverted for op in ops):
            continue
        live = layout.under(top)
        links = [u[len(prefix):] for u in plan.unchanged if u.startswith(prefix)]
        count = {"add": 0, "replace": 0, "remove": 0}
        for op in ops:
            count[op.action] += 1
        try:
            st = os.lstat(live)
        except FileNotFoundError:
            if count["replace"] or count["remove"] or links:
                continue
            plan.dirs.append(DirOp(len(plan.dirs), top, "create"))
            continue
        if not stat.S_ISDIR(st.st_mode) or os.lstat(live.parent).st_dev != st.st_dev:
            continue  # a mount point cannot be renamed: its files are switched one by one
        how: How = "exchange" if count["add"] or count["replace"] or links else "remove"
        # file by file: link + rename + unlink per replaced file, rename + unlink per removed
        # one, a rename per added one; whole: a link per unchanged file and one unlink per
        # file of the old tree after the commit
        per_file = 3 * count["replace"] + 2 * count["remove"] + count["add"]
        whole = 2 * len(links) + count["replace"] + count["remove"] + 1
        if whole > per_file:
            continue  # decided before walking the live tree: a small upgrade stays cheap
        if known_tree(str(live), prefix, known) is None or mounts_in(str(live)):
            continue
        plan.dirs.append(DirOp(len(plan.dirs), top, how, sorted(links) if how == "exchange" else []))
