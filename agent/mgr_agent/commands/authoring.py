"""For plugin authors, in the calling process: a skeleton (``new``) and a zip (``pack``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from mgr_agent.commands import render
from mgr_agent.commands.shared import PANEL_DETECTED, PANELS
from mgr_agent.commands.spec import Arg, Args, Command, Context

if TYPE_CHECKING:
    from mgr_agent.findings import FindingDict
    from mgr_agent.result import Result


class NewData(TypedDict):
    path: str
    files: list[str]


class PackData(TypedDict):
    path: str
    files: int
    sha256: str
    findings: list[FindingDict]


def _new(_ctx: Context, args: Args) -> Result:
    from mgr_agent import scaffold  # noqa: PLC0415

    return scaffold.create(args.need("name"), args.text("panel"), args.path("dir"))


NEW = Command(
    "new", "create a plugin skeleton that passes check --strict (runs locally)",
    args=(Arg("name", "Plesk extension id (my-tool) or ispmanager plugin name (mytool)"),
          Arg("panel", "the panel it is for (required)", ("--panel",), choices=PANELS),
          Arg("dir", "where to create it (default ./NAME)", ("--dir",), type=Path, metavar="DIR")),
    run=_new, render=render.change, shape=NewData)


def _pack(ctx: Context, args: Args) -> Result:
    from mgr_agent import pack  # noqa: PLC0415

    return pack.pack(Path(args.need("dir")), args.path("dest"), ctx.engine(),
                     panel=args.text("panel"), strict=args.flag("strict"))


PACK = Command(
    "pack", "build a reproducible zip from a source tree, after check (runs locally)",
    args=(Arg("dir", "the source tree (a repository works too)", type=Path, metavar="DIR"),
          Arg("dest", "where to write the zip (default .)", ("-d", "--dest"), type=Path,
              metavar="DEST"),
          PANEL_DETECTED,
          Arg("strict", "refuse on check warnings too", ("--strict",), action="store_true")),
    run=_pack, render=render.change, shape=PackData)
