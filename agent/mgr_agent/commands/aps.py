"""``aps``: ispmanager's APS web scripts; its sub-commands live in ``aps/command.py``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypedDict

from mgr_agent.commands.spec import Args, Command, Context, Paint, Parents

if TYPE_CHECKING:
    from mgr_agent.findings import FindingDict
    from mgr_agent.result import Result


class Diff(TypedDict):
    path: str
    before: str
    after: str


class Repository(TypedDict):
    url: str
    line: int


class ScriptRules(TypedDict):
    name: str
    available: list[str]
    allowed: list[str]
    default: str | None
    update_rule: str
    default_rule: str
    rule_applied: bool
    changed: bool
    notes: list[str]


class ApsData(TypedDict, total=False):
    """The ``data`` of the ``aps`` sub-commands: ``repositories`` (``repo list``; the URLs
    after a ``repo add/remove``), ``file``/``findings`` (``check``), ``source``/``scripts``
    (``resolve``), ``diff`` (a change)."""

    repositories: list[Repository] | list[str]
    file: str
    findings: list[FindingDict]
    source: str
    scripts: list[ScriptRules]
    diff: Diff


def _configure(parser: argparse.ArgumentParser, parents: Parents) -> None:
    from mgr_agent.aps import command  # noqa: PLC0415

    command.add_arguments(parser, parents)


def _run(ctx: Context, args: Args) -> Result:
    from mgr_agent.aps import command  # noqa: PLC0415

    return command.dispatch(ctx, args)


def _render(result: Result, paint: Paint) -> str:
    from mgr_agent.aps import command  # noqa: PLC0415

    return command.render(result, paint)


APS = Command(
    "aps", "ispmanager APS web scripts: repositories, update and default-version rules, "
           "images (docs/aps.md)",
    description="ispmanager APS web scripts (docs/aps.md)",
    run=_run, render=_render, options="all", configure=_configure, shape=ApsData)
