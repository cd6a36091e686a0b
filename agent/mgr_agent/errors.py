"""The error hierarchy: every refusal carries a stable code, a hint and an exit code.

Only the CLI's top level turns these into exit codes; everything below raises.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AgentError(Exception):
    """Base of every error the agent reports to a user."""

    code: ClassVar[str] = "internal-error"
    exit_code: ClassVar[int] = 1
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details: dict[str, Any] = details
        self.subject: tuple[str, str] | None = None  # (name, panel) the error concerns, if known

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the JSON result."""
        out: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.details:
            out["details"] = self.details
        return out


class UsageError(AgentError):
    code = "usage"
    exit_code = 2


class InvalidPackage(AgentError):
    """The archive or its metadata breaks a rule; nothing was written."""

    code = "invalid-package"
    exit_code = 3
    default_hint = "fix the package and try again; `mgr-agent check PATH` validates without installing"


class UnsafeArchive(InvalidPackage):
    code = "unsafe-archive"
    default_hint = "the archive was rejected before anything was written; rebuild it without that entry"


class InvalidXML(InvalidPackage):
    code = "invalid-xml"


class ChecksumMismatch(InvalidPackage):
    code = "checksum-mismatch"
    exit_code = 12
    default_hint = "the file is not the one you meant to install; download it again"


class NotInstalled(AgentError):
    code = "not-installed"
    exit_code = 4
    default_hint = "`mgr-agent list` shows what is installed"


class NotFound(AgentError):
    code = "not-found"
    exit_code = 4


class Conflict(AgentError):
    """Two owners for one path, or a path the package may not write."""

    code = "file-conflict"
    exit_code = 5


class Refused(AgentError):
    """A policy refusal: downgrade, panel version, operating system."""

    code = "refused"
    exit_code = 6


class DowngradeRefused(Refused):
    code = "downgrade-refused"
    default_hint = "pass --allow-downgrade to install an older version on purpose"


class IncompatiblePanel(Refused):
    code = "incompatible-panel"
    default_hint = "this package is not made for this panel or its version"


class HookFailed(AgentError):
    """A hook exited non-zero or timed out before anything changed."""

    code = "hook-failed"
    exit_code = 7


class RolledBack(AgentError):
    """A failure after staging; the previous state was restored."""

    code = "rolled-back"
    exit_code = 8

    def __init__(self, message: str, *, cause: AgentError | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.cause = cause


class HealthCheckFailed(AgentError):
    """The panel did not come back, or logged errors for the plugin, after the change."""

    code = "health-check-failed"
    exit_code = 8
    default_hint = "the log lines are in details.log_lines; `mgr-agent logs --plugin NAME` shows more"


class HandlerError(AgentError):
    """A plugin handler did not answer the panel's protocol (see docs/call.md)."""

    code = "invalid-handler-answer"
    exit_code = 13
    default_hint = ("the panel would show \"plugin terminated with an error or returned an invalid "
                    "XML\"; run `mgr-agent call FUNC` to see its output")


class LockBusy(AgentError):
    code = "lock-busy"
    exit_code = 9
    default_hint = "another mgr-agent operation is running; pass --wait SECONDS to wait for it"


class PreflightFailed(AgentError):
    code = "preflight-failed"
    exit_code = 10


class StageFailed(PreflightFailed):
    """The new files could not be written next to their targets; nothing was switched."""

    code = "stage-failed"
    default_hint = "free space or fix permissions on the panel's filesystem; nothing was changed"


class SwitchFailed(AgentError):
    """A file could not be put in place (EPERM, EBUSY, EROFS, ENOSPC, ...)."""

    code = "switch-failed"
    exit_code = 8


class RecoveryError(AgentError):
    code = "recovery-failed"
    exit_code = 11
    default_hint = "inspect var/lib/mgr-agent/journal and run `mgr-agent recover` again"


class StateCorrupt(RecoveryError):
    code = "state-corrupt"


class Interrupted(AgentError):
    """SIGTERM/SIGHUP/SIGINT turned into an exception so that undo runs."""

    code = "interrupted"
    exit_code = 130


class NotAuthorised(AgentError):
    """The daemon refused a caller that is neither root nor in the ``mgr-agent`` group."""

    code = "not-authorised"
    exit_code = 14
    default_hint = "run as root, or add the user to the mgr-agent group (then log in again)"


class DaemonBusy(AgentError):
    """The daemon is serving as many connections as it allows; the client retries."""

    code = "daemon-busy"
    exit_code = 9
    default_hint = "something holds many connections to the API socket; try again"


class DownloadFailed(AgentError):
    """An ``install URL`` could not be fetched (network, HTTP status, size limit)."""

    code = "download-failed"
    exit_code = 15
    default_hint = "check the URL and the network, then try again; nothing was changed"
