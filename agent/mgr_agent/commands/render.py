"""Text for people, shared by the commands: the one-line outcome of a change, and the
tail every result ends with (hooks, notes, warnings, the error and its hint)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgr_agent.commands.spec import Paint
    from mgr_agent.result import Result

VERBS = {"installed": "installed", "upgraded": "upgraded", "unchanged": "unchanged:",
         "removed": "removed", "rolled_back": "rolled back", "planned": "would change"}


def when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def who(result: Result) -> str:
    return f"{result.name} ({result.panel})" if result.name else ""


def tail(result: Result, paint: Paint, lines: list[str]) -> str:
    """``lines``, then the hooks' output, notes, warnings and the error."""
    for hook in result.hooks:
        out = hook["output"].rstrip().strip("\n")  # keeps each line's own indentation
        lines.append(f"  hook {hook['hook']}: exit {hook['exit_code']}")
        lines += [f"    {line}".rstrip() for line in out.splitlines()]
    for note in result.notes:
        lines.append(f"  {note}")
    for warning in result.warnings:
        lines.append(paint("warning: ", "33") + warning)
    if result.error is not None:
        head = "rolled back" if result.action == "rolled_back" else "error"
        lines.append(paint(f"{head}: ", "31;1") + result.error.message)
        if result.error.hint:
            lines.append(f"  hint: {result.error.hint}")
    return "\n".join(lines)


def change(result: Result, paint: Paint) -> str:
    """A change (or its plan): ``upgraded NAME (PANEL) OLD -> NEW`` and the file counts."""
    lines: list[str] = []
    if result.error is None:
        text = f"{VERBS.get(result.action, result.action)} {who(result)}"
        if result.action in ("upgraded", "rolled_back") or (
                result.action == "planned" and result.previous_version):
            text += f" {result.previous_version} -> {result.version or 'nothing'}"
        elif result.version:
            text += f" {result.version}"
        lines.append(paint(text, "32"))
        if result.plan:
            s = result.plan["summary"]
            lines.append(f"  files: {s['add']} added, {s['replace']} replaced, {s['remove']} removed, "
                         f"{s['unchanged']} unchanged, {s['kept']} data kept")
    return tail(result, paint, lines)


def failure_only(result: Result, paint: Paint) -> str:
    """A result with no text of its own on success (the tail only)."""
    return tail(result, paint, [])
