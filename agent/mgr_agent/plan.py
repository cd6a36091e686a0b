"""What a transaction will do to files: its :class:`Plan` of :class:`Op` s, fixed before
anything is written (made by :mod:`mgr_agent.planner`, applied by
:mod:`mgr_agent.transaction`, recorded in the journal's ``begin`` record)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mgr_agent.dirplan import DirOp

Action = Literal["add", "replace", "remove"]
ChunkSource = Callable[[], Iterator[bytes]]


@dataclass(slots=True)
class Op:
    """One file change; ``divert`` keeps a copy of the replaced original for restoring;
    ``owner`` (uid, gid) is given to the new file (the replaced file's owner); ``save``
    keeps a copy of a file the admin edited, under ``saved/NAME/TX/PATH``."""

    i: int
    action: Action
    path: str
    mode: int = 0o644
    divert: bool = False
    owner: tuple[int, int] | None = None
    save: bool = False


OP_FIELDS = ("i", "action", "path", "mode", "divert", "owner", "save")


def _op_fields(op: list[Any] | dict[str, Any]) -> dict[str, Any]:
    fields = dict(zip(OP_FIELDS, op, strict=True)) if isinstance(op, list) else dict(op)
    fields["owner"] = tuple(fields["owner"]) if fields.get("owner") else None
    return fields


@dataclass
class Plan:
    """Everything a transaction will do to files, fixed before anything is written."""

    ops: list[Op] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    preserved: list[str] = field(default_factory=list)  # data files left as they are ("kept" in JSON)
    mkdirs: list[str] = field(default_factory=list)
    prune: list[str] = field(default_factory=list)
    sources: dict[int, ChunkSource] = field(default_factory=dict, repr=False)
    sizes: dict[int, int] = field(default_factory=dict, repr=False)  # of the sources, if known
    name: str = ""  # the package: saved copies go to saved/NAME/TX/
    dirs: list[DirOp] = field(default_factory=list)  # directories switched whole
    flags_clear: set[str] = field(default_factory=set, repr=False)
    """Targets (full paths) whose lstat showed them neither immutable nor append-only:
    preflight does not read their flags a second time (not journalled)."""

    def to_record(self) -> dict[str, Any]:
        """The journal's form: each op a list in :data:`OP_FIELDS` order (a 5,000-file plan
        encodes in 6 ms where objects with named keys took 16)."""
        ops = [[op.i, op.action, op.path, op.mode, op.divert, op.owner, op.save] for op in self.ops]
        return {"ops": ops, "mkdirs": self.mkdirs, "prune": self.prune, "name": self.name,
                "dirs": [d.to_record() for d in self.dirs]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Plan:
        """The plan of a journal's ``begin`` record; ops as lists, or as objects (journals
        written by an agent before 2026-11-28)."""
        ops = [Op(**_op_fields(op)) for op in record["ops"]]
        return cls(ops=ops, mkdirs=list(record["mkdirs"]),
                   prune=list(record["prune"]), name=str(record.get("name", "")),
                   dirs=[DirOp.from_record(d) for d in record.get("dirs", [])])

    def summary(self) -> dict[str, int]:
        counts = {"add": 0, "replace": 0, "remove": 0}
        for op in self.ops:
            counts[op.action] += 1
        counts["unchanged"] = len(self.unchanged)
        counts["kept"] = len(self.preserved)
        return counts
