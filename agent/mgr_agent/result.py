"""Typed results of commands, rendered by the CLI as text or as one JSON document."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mgr_agent.errors import AgentError, Interrupted, NotAuthorised
from mgr_agent.values import Value

SCHEMA = 1

Data = Mapping[str, object] | Sequence[Mapping[str, object]]
"""A command's ``data``: a JSON object or a list of them.  Each command declares its exact
shape (a TypedDict in ``mgr_agent/commands/``: ``Command.shape``); its renderer reads that
shape and ``--json`` writes it."""


class Result(Value):
    """The outcome of one command; ``to_json`` is the ``--json`` document.  (A
    :class:`~mgr_agent.values.Value` with a dataclass's constructor: ``list`` starts
    without importing ``dataclasses``.)"""

    _FIELDS = ("action", "changed", "name", "panel", "version", "previous_version", "warnings",
               "hooks", "tx", "plan", "notes", "data", "error")
    __slots__ = _FIELDS

    def __init__(self, action: str, changed: bool = False, name: str | None = None,
                 panel: str | None = None, version: str | None = None,
                 previous_version: str | None = None, warnings: list[str] | None = None,
                 hooks: list[dict[str, Any]] | None = None, tx: str | None = None,
                 plan: dict[str, Any] | None = None, notes: list[str] | None = None,
                 data: Data | None = None, error: AgentError | None = None) -> None:
        self.action = action
        self.changed = changed
        self.name = name
        self.panel = panel
        self.version = version
        self.previous_version = previous_version
        self.warnings: list[str] = [] if warnings is None else warnings
        self.hooks: list[dict[str, Any]] = [] if hooks is None else hooks
        self.tx = tx
        self.plan = plan
        self.notes: list[str] = [] if notes is None else notes
        self.data = data
        self.error = error

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "action": self.action,
            "changed": self.changed,
            "name": self.name,
            "panel": self.panel,
            "version": self.version,
            "previous_version": self.previous_version,
            "warnings": self.warnings,
            "hooks": self.hooks,
            "tx": self.tx,
        }
        if self.plan is not None:
            out["plan"] = self.plan
        if self.notes:
            out["notes"] = self.notes
        if self.data is not None:
            out["data"] = self.data
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code


def failure(exc: BaseException, command: str, *, name: str | None = None, panel: str | None = None,
            in_daemon: bool = False) -> Result:
    """The one place an exception becomes a result, in the CLI and in the daemon alike.

    An ``AgentError`` keeps its code (and the plugin it names, if it set ``subject``);
    SIGINT becomes ``interrupted``; a non-root user denied the state (root:mgr-agent 0750)
    is told so; anything else is an ``internal-error`` whose traceback goes to the log
    (the journal in the daemon, ``-v`` in the CLI)."""
    import logging  # noqa: PLC0415 - a quick read (``list``) starts without it

    log = logging.getLogger("mgr_agent.daemon" if in_daemon else "mgr_agent")
    if isinstance(exc, AgentError):
        log.debug("error", exc_info=exc)
        name, panel = exc.subject or (name, panel)
        return Result(action="failed", name=name, panel=panel, error=exc)
    if isinstance(exc, KeyboardInterrupt):
        return Result(action="failed", error=Interrupted("interrupted by SIGINT"))
    if isinstance(exc, PermissionError) and not in_daemon and os.geteuid() != 0:
        log.debug("permission denied", exc_info=exc)
        return Result(action="failed", name=name, error=NotAuthorised(
            f"{exc.filename or command}: permission denied: mgr-agent {command} needs root or "
            "the mgr-agent group",
            hint="run it as root, or as a member of the mgr-agent group while the daemon runs "
                 "(without --no-daemon)"))
    text = f"internal error in {command}: {exc.__class__.__name__}: {exc}"
    if in_daemon:
        log.error(text, exc_info=exc)
        hint = "the traceback is in `journalctl -u mgr-agent`; please report it"
    else:
        log.debug("internal error", exc_info=exc)
        hint = "run again with -v and report the traceback"
    return Result(action="failed", name=name, error=AgentError(text, hint=hint))
