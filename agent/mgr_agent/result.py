"""Typed results of commands, rendered by the CLI as text or as one JSON document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mgr_agent.errors import AgentError

SCHEMA = 1


@dataclass
class Result:
    """The outcome of one command; ``to_json`` is the ``--json`` document."""

    action: str
    changed: bool = False
    name: str | None = None
    panel: str | None = None
    version: str | None = None
    previous_version: str | None = None
    warnings: list[str] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    tx: str | None = None
    plan: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    data: Any = None
    error: AgentError | None = None

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
