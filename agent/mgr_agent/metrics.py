"""``mgr-agent metrics``: Prometheus metrics of one server, from the agent's state.

Made with ``prometheus-client`` (the ``metrics`` extra): a custom collector reads the state
database read-only (no recovery, nothing created) on every scrape and yields

- ``mgr_agent_plugin_info{name,panel,version}`` 1 per installed plugin;
- ``mgr_agent_transactions_total{op,result}`` by operation and history status;
- ``mgr_agent_rollbacks_total{cause}``: automatic rollbacks by the error that caused them
  (``hook-failed``, ``health-check-failed``, ``switch-failed``, ``interrupted``…) and
  ``requested`` for ``mgr-agent rollback``;
- ``mgr_agent_last_transaction_timestamp_seconds``;
- ``mgr_agent_interrupted_transaction_pending`` 1 when a journal is left (a transaction runs
  or a crash interrupted one).

``write_textfile`` writes them atomically for node_exporter's textfile collector; the daemon
and the CLI call ``after_transaction`` so that ``[metrics] textfile`` is kept current.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent.errors import UsageError
from mgr_agent.fsutil import atomic_write, makedirs_durable
from mgr_agent.layout import Layout
from mgr_agent.state import State

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from mgr_agent.config import Config

log = logging.getLogger("mgr_agent.metrics")

HISTORY_LIMIT = 1_000_000
ROLLED_BACK = ("rolled_back", "rolled_back_by_recovery")


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise UsageError("metrics need the prometheus-client package",
                         hint="pip install 'mgr-agent[metrics]' (or prometheus-client) into the "
                              "agent's venv") from None
    return prometheus_client


def rollback_cause(row: dict[str, Any]) -> str | None:
    """Why a history row is a rollback, or None when it is not one."""
    if row.get("status") == "rolled_back_by_recovery":
        return "interrupted"
    if row.get("status") == "rolled_back":
        details = (row.get("error") or {}).get("details") or {}
        return str(details.get("cause_code") or (row.get("error") or {}).get("code") or "unknown")
    if row.get("op") == "rollback" and row.get("status") == "committed":
        return "requested"
    return None


class StateCollector:
    """Reads ``layout``'s state on every ``collect``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _read(self) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
        db = self.layout.db_file
        state = State(db if db.exists() else None)
        try:
            with state.guard():
                plugins = [(p.name, p.panel, p.label) for p in state.packages()]
                history = state.history(None, HISTORY_LIMIT)
        finally:
            state.close()
        return plugins, history

    def pending(self) -> bool:
        directory = self.layout.journal_dir
        return directory.is_dir() and any(directory.glob("*.log"))

    def collect(self) -> Iterator[Metric]:
        core = _prometheus().metrics_core
        plugins, history = self._read()
        info = core.InfoMetricFamily("mgr_agent_plugin", "An installed plugin or extension",
                                     labels=["name", "panel", "version"])
        for name, panel, version in sorted(plugins):
            info.add_metric([name, panel, version], {})
        yield info
        txs = core.CounterMetricFamily("mgr_agent_transactions", "Transactions by operation and result",
                                       labels=["op", "result"])
        for (op, status), count in sorted(Counter((r["op"], r["status"]) for r in history).items()):
            txs.add_metric([op, status], count)
        yield txs
        rollbacks = core.CounterMetricFamily("mgr_agent_rollbacks", "Rollbacks by cause",
                                             labels=["cause"])
        causes = Counter(c for c in (rollback_cause(r) for r in history) if c)
        for cause, count in sorted(causes.items()):
            rollbacks.add_metric([cause], count)
        yield rollbacks
        last = core.GaugeMetricFamily("mgr_agent_last_transaction_timestamp_seconds",
                                      "Unix time the newest transaction ended (0: none yet)")
        last.add_metric([], max((r.get("ended") or r["started"] for r in history), default=0.0))
        yield last
        yield core.GaugeMetricFamily("mgr_agent_interrupted_transaction_pending",
                                     "1 while a transaction's journal is left (running or interrupted)",
                                     value=1 if self.pending() else 0)
        yield core.GaugeMetricFamily("mgr_agent_plugins_installed", "Installed plugins and extensions",
                                     value=len(plugins))


def render(layout: Layout) -> bytes:
    """The metrics in the Prometheus text format."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(layout))
    data: bytes = prom.generate_latest(registry)
    return data


def textfile_path(layout: Layout, configured: str) -> Path:
    """A configured textfile path, resolved under the root like every other path."""
    return layout.under(configured.lstrip("/"))


def write_textfile(layout: Layout, path: Path) -> None:
    """Write the metrics to ``path`` atomically (temp file, fsync, rename)."""
    data = render(layout)
    makedirs_durable(path.parent)
    atomic_write(path, data, 0o644)


def after_transaction(layout: Layout, config: Config) -> None:
    """Rewrite ``[metrics] textfile`` when it is set; a failure is logged, never raised
    (metrics must not fail a transaction that already happened)."""
    if not config.metrics_textfile:
        return
    path = textfile_path(layout, config.metrics_textfile)
    try:
        write_textfile(layout, path)
    except Exception as exc:
        log.error(f"cannot write the metrics textfile {path}: {exc}")
