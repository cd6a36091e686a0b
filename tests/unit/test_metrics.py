"""``mgr-agent metrics`` pieces: the rollback causes, and the metrics of a root where the
agent never ran (all zero, nothing created). The counts after real transactions are checked
in tests/integration/test_ansible.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgr_agent import metrics
from mgr_agent.layout import Layout

parser = pytest.importorskip("prometheus_client.parser")


@pytest.mark.parametrize(("row", "cause"), [
    ({"op": "install", "status": "rolled_back",
      "error": {"code": "rolled-back", "details": {"cause_code": "health-check-failed"}}},
     "health-check-failed"),
    ({"op": "install", "status": "rolled_back", "error": {"code": "switch-failed"}}, "switch-failed"),
    ({"op": "install", "status": "rolled_back_by_recovery"}, "interrupted"),
    ({"op": "rollback", "status": "committed"}, "requested"),
    ({"op": "install", "status": "committed"}, None),
    ({"op": "uninstall", "status": "failed", "error": {"code": "hook-failed"}}, None),
])
def test_rollback_causes(row: dict[str, object], cause: str | None) -> None:
    assert metrics.rollback_cause(row) == cause


def test_a_root_without_state_gives_zeros_and_stays_empty(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    text = metrics.render(layout).decode()
    samples = {s.name: s.value for f in parser.text_string_to_metric_families(text) for s in f.samples}
    assert samples == {"mgr_agent_last_transaction_timestamp_seconds": 0.0,
                       "mgr_agent_interrupted_transaction_pending": 0.0,
                       "mgr_agent_plugins_installed": 0.0}
    assert list(tmp_path.iterdir()) == []
    assert metrics.textfile_path(layout, "/var/lib/node-exporter/m.prom") == \
        tmp_path / "var/lib/node-exporter/m.prom"
