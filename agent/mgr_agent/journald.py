"""Logging of the daemon (and of transactions run by the CLI): to journald with structured
fields when journald is there, as plain lines on stderr otherwise.

Every transaction is one record with ``MGR_AGENT_TX``, ``MGR_AGENT_PLUGIN``,
``MGR_AGENT_VERSION``, ``MGR_AGENT_ACTION``, ``MGR_AGENT_RESULT`` (and ``MGR_AGENT_OP``,
``MGR_AGENT_PANEL``), so that ``journalctl -u mgr-agent MGR_AGENT_PLUGIN=NAME`` finds it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent.result import Result

if TYPE_CHECKING:
    from mgr_agent.api import PeerCred

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "mgr-agent"
FIELDS = ("MGR_AGENT_TX", "MGR_AGENT_PLUGIN", "MGR_AGENT_VERSION", "MGR_AGENT_ACTION",
          "MGR_AGENT_RESULT", "MGR_AGENT_OP", "MGR_AGENT_PANEL", "MGR_AGENT_UID", "MGR_AGENT_PID")


def journald_present() -> bool:
    """journald is listening and systemd-python can talk to it."""
    if os.environ.get("MGR_AGENT_NO_JOURNAL") or not JOURNAL_SOCKET.is_socket():
        return False
    try:
        from systemd import journal  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        return False
    return True


class FieldsFormatter(logging.Formatter):
    """``LEVEL message [FIELD=value ...]``: the structured fields stay visible on stderr."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) not in (None, "")]
        return f"{text} [{' '.join(fields)}]" if fields else text


def setup(verbose: int = 0, *, journal: bool | None = None) -> logging.Handler:
    """Route the ``mgr_agent`` logger to journald (``journal=None``: when present) or stderr."""
    logger = logging.getLogger("mgr_agent")
    for old in list(logger.handlers):
        if getattr(old, "_mgr_agent", False):
            logger.removeHandler(old)
    use_journal = journald_present() if journal is None else journal
    handler: logging.Handler
    if use_journal:
        from systemd.journal import JournalHandler  # noqa: PLC0415

        handler = JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(FieldsFormatter("%(levelname)s %(message)s"))
    handler._mgr_agent = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return handler


def actor(peer: PeerCred | None) -> str:
    """Who asked, as history records it: ``uid U pid P`` of the client, or ``cli``."""
    return "cli" if peer is None else f"uid {peer.uid} pid {peer.pid}"


def transaction_fields(result: Result, op: str, peer: PeerCred | None = None) -> dict[str, Any]:
    """The journal fields of one command's result; ``MGR_AGENT_UID`` is the client's uid
    (``cli`` for a command run in-process)."""
    return {
        "MGR_AGENT_UID": "cli" if peer is None else str(peer.uid),
        "MGR_AGENT_PID": str(os.getpid() if peer is None else peer.pid),
        "MGR_AGENT_TX": result.tx or "",
        "MGR_AGENT_PLUGIN": result.name or "",
        "MGR_AGENT_VERSION": result.version or result.previous_version or "",
        "MGR_AGENT_ACTION": result.action,
        "MGR_AGENT_RESULT": "ok" if result.error is None else result.error.code,
        "MGR_AGENT_OP": op,
        "MGR_AGENT_PANEL": result.panel or "",
    }


def describe(result: Result, op: str) -> str:
    """One line for a transaction: ``install demo 1.0: installed (tx ...)``."""
    subject = " ".join(x for x in (op, result.name or "", result.version or "") if x)
    text = f"{subject}: {result.action}"
    if result.tx:
        text += f" (tx {result.tx})"
    if result.error is not None:
        text += f": {result.error.code}: {result.error.message}"
    return text


def log_result(logger: logging.Logger, result: Result, op: str, *, peer: PeerCred | None = None) -> None:
    """Log a mutating command's result; recovered transactions get one record each."""
    level = logging.INFO if result.error is None else logging.ERROR
    text = describe(result, op) + ("" if peer is None else f" (asked by {actor(peer)})")
    logger.log(level, text, extra=transaction_fields(result, op, peer))
    if result.action == "recovered" and isinstance(result.data, dict):
        for t in result.data.get("transactions", []):
            logger.warning(
                f"recovered interrupted transaction {t.get('tx')} ({t.get('op', '?')} "
                f"{t.get('name') or ''}): {t.get('outcome')}",
                extra={"MGR_AGENT_TX": t.get("tx") or "", "MGR_AGENT_PLUGIN": t.get("name") or "",
                       "MGR_AGENT_VERSION": "", "MGR_AGENT_ACTION": "recovered",
                       "MGR_AGENT_RESULT": t.get("outcome") or "", "MGR_AGENT_OP": t.get("op") or "",
                       "MGR_AGENT_PANEL": ""})


def note_cli_result(result: Result, op: str) -> None:
    """The CLI's in-process transactions go to the journal too (never to its stderr)."""
    if not journald_present() or (result.tx is None and result.action != "recovered"):
        return
    logger = logging.getLogger("mgr_agent.cli-journal")
    if not logger.handlers:
        from systemd.journal import JournalHandler  # noqa: PLC0415

        logger.addHandler(JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    log_result(logger, result, op)
