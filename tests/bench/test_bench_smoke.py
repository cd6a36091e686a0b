"""The benchmark keeps working: ``--quick`` runs end to end at a tiny size, reports every
row, writes its JSON, and ``tests.bench.report`` turns that JSON into the performance page
and its plot.  It runs on the journaled ext4 image as ``make bench`` does (2 GiB with
``--quick``, written in full: about two seconds to make and remove) where it can be mounted.

Timing is never asserted: a missed target is a result, not a failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import trialfs
from tests.helpers import REPO

ROWS = {
    "fresh-vs-dpkg", "fresh-vs-unzip", "fresh-vs-unzip-syncfs", "fresh-vs-unzip-fsync",
    "upgrade-vs-dpkg", "upgrade-1pct", "rollback", "manual-rollback",
    "uninstall-vs-dpkg", "noop", "scaling", "logs-n100", "startup-list", "startup-version", "peak-rss",
    "logs-follow-idle", "daemon-idle", "isp-fresh-vs-dpkg", "isp-fresh-vs-unzip", "isp-upgrade-vs-dpkg",
    "isp-upgrade-1pct", "isp-rollback", "isp-manual-rollback", "isp-uninstall-vs-dpkg", "isp-noop",
}
DPKG_ROWS = {"fresh-vs-dpkg", "upgrade-vs-dpkg", "uninstall-vs-dpkg", "isp-fresh-vs-dpkg",
             "isp-upgrade-vs-dpkg", "isp-uninstall-vs-dpkg"}
STATUSES = {"met", "missed", "info", "skipped: one size only", "skipped: dpkg not found",
            "skipped: unzip not found"}
SIZE = 100


@pytest.mark.slow
def test_quick_bench_reports_every_row_and_regenerates_the_page(tmp_path: Path) -> None:
    out = tmp_path / "results/latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--quick", "--reps", "1", "--sizes", str(SIZE),
         "--json-out", str(out), "--work", str(tmp_path / "work"), "--python", "current"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    doc = json.loads(out.read_text())
    assert doc["schema"] == 2
    assert doc["settings"]["headline_size"] == SIZE
    assert doc["settings"]["reps"] == 1
    rows = {row["key"]: row for row in doc["rows"]}
    assert set(rows) == ROWS
    have_dpkg = shutil.which("dpkg") is not None and shutil.which("dpkg-deb") is not None
    for key, row in rows.items():
        assert row["status"] in STATUSES, (key, row["status"])
        assert row["target"] and row["case"], row
        if key in DPKG_ROWS and not have_dpkg:
            assert row["status"] == "skipped: dpkg not found"
        if row["status"] in ("met", "missed"):
            assert isinstance(row["value"], float), row
            assert isinstance(row["target_value"], (int, float)), row
            assert row["samples"] and all(len(v) >= 1 for v in row["samples"].values()), row
    assert rows["scaling"]["status"] == "skipped: one size only"
    assert rows["logs-n100"]["status"] in ("met", "missed")
    assert rows["peak-rss"]["status"] in ("met", "missed")
    assert 10 < rows["peak-rss"]["value"] < 10_000, "peak RSS in MB of a Python process"
    rss = rows["peak-rss"]["samples"]
    assert len(rss["install"]) == len(rss["install-wait4"]) == 1
    assert rss["install"][0] <= rss["install-wait4"][0] * 1.01, "the agent alone ≤ the agent and its hooks"
    assert "`wait4` of the command (the hooks and the bench's size at the fork included)" in \
        rows["peak-rss"]["note"]
    # the scaling row's fixed cost is measured even at one size: the 1-file package
    assert len(doc["measures"]["scaling/agent-fixed"]["samples"]) == 1
    assert doc["scaling"]["fixed"]["files"] == doc["payloads"]["plesk-1-v1.zip"]["files"] == 12

    # where the trials ran, and dpkg's configuration
    machine = doc["machine"]
    trial = machine["trial_filesystem"]
    if trialfs.TrialFilesystem(tmp_path).why_not() is None:
        assert (trial["kind"], trial["type"], trial["journal"]) == ("image", "ext4", True), trial
        assert trial["size_bytes"] == 2 << 30 and trial["filled"]
        assert 0 < trial["peak_used_bytes"] < 2 << 30  # a repetition's trees, then deleted
        assert not any("journaled" in note for note in doc["notes"])
    else:
        assert trial["kind"] == "here"
        assert any("not on a journaled ext4 image" in note for note in doc["notes"])
    assert machine["dpkg_config"]["bench_overrides"] == ["--no-force-unsafe-io"]
    assert "--no-force-unsafe-io" in machine["dpkg_config"]["bench_flags"]
    assert rows["logs-follow-idle"]["status"] == "info"
    for key in ("fresh-vs-unzip-syncfs", "fresh-vs-unzip-fsync"):  # the floor under the unzip row
        if shutil.which("unzip"):
            assert rows[key]["status"] == "info" and rows[key]["value"] > 0, rows[key]
            assert "alone: " in rows[key]["note"] and "× `unzip -o`" in rows[key]["note"], rows[key]
    assert 0 <= rows["logs-follow-idle"]["value"] < 1.0, "logs -f must not busy-poll"
    assert rows["daemon-idle"]["status"] in ("met", "missed")
    assert "daemon/pings" in doc["measures"]

    # the live-server phase: every accepted durability mode, and dpkg, with the writer's figures
    durability = doc["durability"]
    assert durability["modes"][0] == doc["agent"]["durability_default"]
    assert {"syncfs", "fsync"} <= set(durability["modes"])
    installers = {e["mode"]: e for e in durability["entries"]}
    assert set(installers) == set(durability["modes"]) | ({"dpkg"} if have_dpkg else set())
    for entry in installers.values():
        assert entry["idle"] > 0 and entry["live"] > 0, entry
        assert entry["writer_mbps"] > 0, "the background writer ran during the install"
    assert durability["writer_alone_mbps"] > 0

    # the printed tables are the JSON's
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(ROWS) + 1 + len(installers) + 1  # headers, rows, the writer alone
    assert doc["table"] in done.stdout
    assert doc["durability_table"] in done.stdout
    # the trial roots, the writer's ring and the image are gone, the payload cache stays
    assert not (tmp_path / "work/trials").exists()
    assert not (tmp_path / "work" / trialfs.MOUNT).exists()
    assert not (tmp_path / "work" / trialfs.IMAGE).exists()
    assert not (tmp_path / "work/live").exists() or not list((tmp_path / "work/live").iterdir())
    assert (tmp_path / f"work/payloads/plesk-{SIZE}-v1.zip").is_file()

    # the page and its plot, regenerated from that JSON
    page, svg = tmp_path / "docs/performance.md", tmp_path / "docs/performance-scaling.svg"
    page.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.report", "--json", str(out), "--out", str(page)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    assert doc["table"] in text
    assert doc["durability_table"] in text
    assert "![time per file against payload size](performance-scaling.svg)" in text
    assert "{{" not in text
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
