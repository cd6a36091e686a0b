"""The bench's arithmetic and the page it renders, on known samples (fast; no commands run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import report

FILES = {500: 511, 5_000: 5_011, 20_000: 20_011}
FIXED, FIXED_FILES = "scaling/agent-fixed", 12   # the 1-file package: 1 + the sample's 11
MEASURE = "plesk-{n}/agent-install"


def linear(fixed: float, per_file: float, bend: float = 1.0) -> dict[str, list[float]]:
    """Medians of ``fixed + per_file * (files - FIXED_FILES)`` (times ``bend`` at the biggest
    size), and the fixed cost measured as a 1-file install takes it."""
    samples = {FIXED: [fixed * 1.05, fixed, fixed * 0.98]}
    for n, files in FILES.items():
        t = fixed + per_file * (files - FIXED_FILES) * (bend if n == 20_000 else 1.0)
        samples[f"plesk-{n}/agent-install"] = [t * 1.02, t, t * 0.97]
        samples[f"plesk-{n}/unzip"] = [0.1 + 0.0001 * files]
    return samples


def test_scaling_row_takes_the_measured_fixed_cost_out_of_the_time_per_file() -> None:
    flat = report.scaling_row(linear(0.3, 2e-4), FILES, MEASURE, FIXED, FIXED_FILES)
    assert flat.status == "met"
    assert flat.value == pytest.approx(1.0)
    assert flat.agent_median == pytest.approx(0.3)        # the fixed cost, reported apart
    assert flat.samples["fixed"] == [0.3 * 1.05, 0.3, 0.3 * 0.98]
    assert "fixed cost 300 ms" in flat.note and "12 files" in flat.note
    assert "500: 0.200 ms, 5,000: 0.200 ms, 20,000: 0.200 ms" in flat.note
    assert "per file with the fixed cost: 500: 0.782 ms" in flat.note   # (0.3 + 0.0998) / 511

    # the 20,000-file install costs 3x per file: no fixed cost explains that
    bent = report.scaling_row(linear(0.3, 2e-4, bend=3.0), FILES, MEASURE, FIXED, FIXED_FILES)
    assert bent.status == "missed"
    assert bent.value == pytest.approx(3.0)

    # a fixed cost that a least-squares line would put below zero does not matter here:
    # each size is taken against the 1-file install of the same repetitions
    convex = linear(0.3, 2e-4)
    convex["plesk-500/agent-install"] = [0.3 + 499 * 4e-4]            # small payloads dearer
    row = report.scaling_row(convex, FILES, MEASURE, FIXED, FIXED_FILES)
    assert row.agent_median == pytest.approx(0.3)
    assert row.value == pytest.approx(2.0) and row.status == "missed"

    # two sizes are enough now that the fixed cost is measured, not fitted
    two = {k: v for k, v in linear(0.3, 2e-4).items() if "20000" not in k}
    row = report.scaling_row(two, {500: 511, 5_000: 5_011}, MEASURE, FIXED, FIXED_FILES)
    assert row.status == "met" and row.value == pytest.approx(1.0)
    one = {k: v for k, v in two.items() if not k.startswith("plesk-5000/")}
    row = report.scaling_row(one, {500: 511}, MEASURE, FIXED, FIXED_FILES)
    assert row.status == "skipped: one size only"
    assert row.agent_median == pytest.approx(0.3)         # measured all the same
    no_fixed = {k: v for k, v in two.items() if k != FIXED}
    row = report.scaling_row(no_fixed, {500: 511, 5_000: 5_011}, MEASURE, FIXED, FIXED_FILES)
    assert row.status == "skipped: no fixed-cost measurement" and row.value is None
    # a size installing no more than it took took no time per file: missed, said in the note
    fast = {**two, "plesk-500/agent-install": [0.25]}
    row = report.scaling_row(fast, {500: 511, 5_000: 5_011}, MEASURE, FIXED, FIXED_FILES)
    assert row.status == "missed" and "no more than the fixed cost" in row.note


def test_scaling_series_gives_the_plot_the_measured_fixed_cost() -> None:
    series = report.scaling_series(linear(0.3, 2e-4), FILES, FIXED, FIXED_FILES)
    assert series["fixed"] == {"files": 12, "median": 0.3, "min": 0.3 * 0.98, "max": 0.3 * 1.05, "reps": 3}
    assert set(series["per_file"]) == {"500", "5000", "20000"}
    assert all(v == pytest.approx(2e-4) for v in series["per_file"].values())
    assert set(series["series"]) == {"agent", "unzip"}
    assert report.scaling_series(linear(0.3, 2e-4), FILES)["fixed"] is None


def test_rows_against_their_targets() -> None:
    samples = {"dpkg": [1.0, 1.2, 1.1], "agent": [0.9, 1.0, 0.95], "pass": [0.012, 0.013],
               "version": [0.050, 0.040], "rss": [80.0, 120.0], "rss-up": [90.0],
               "rss-wait4": [81.0, 121.0], "rss-up-wait4": [95.0]}
    row = report.ratio_row("fresh-vs-dpkg", "fresh", "`dpkg -i`", 1.0, samples, "dpkg", "agent")
    assert (row.status, row.target) == ("met", "≤ 1.0× dpkg")
    assert row.value == pytest.approx(0.95 / 1.1)  # 0.9/1.0, 1.0/1.2, 0.95/1.1: the middle one
    assert row.ratio_of_medians == pytest.approx(0.95 / 1.1) and "medians" not in row.note
    drifting = {"dpkg": [1.0, 1.6, 1.05], "agent": [0.95, 1.5, 1.1]}  # a slow repetition between
    row = report.ratio_row("fresh-vs-dpkg", "fresh", "`dpkg -i`", 1.0, drifting, "dpkg", "agent")
    assert row.value == pytest.approx(0.95) and row.status == "met"
    assert row.ratio_of_medians == pytest.approx(1.1 / 1.05)
    assert "the ratio of the medians, 1.05×, would have missed the target" in row.note
    row = report.ratio_row("x", "x", "mgr-agent fresh install", 0.2, samples, "dpkg", "agent")
    assert (row.status, row.target) == ("missed", "≤ 0.2× install")
    row = report.over_row("startup-version", "v", 30, samples, "pass", "version")
    assert row.value == pytest.approx((0.045 - 0.0125) * 1000)
    assert row.status == "missed"
    row = report.rss_row("peak-rss", "rss", 100, samples, "rss", "rss-up")
    assert (row.value, row.status) == (120.0, "missed")        # the largest repetition counts
    assert "the agent process alone" in row.note
    assert "`wait4` of the command (the hooks and the bench's size at the fork included): 121 MB" in row.note
    assert "upgrade, every file changed: 90 MB alone, 95 MB with its hooks" in row.note
    assert row.samples["install-wait4"] == [81.0, 121.0]
    assert report.wall_row("noop", "noop", 0.150, {"n": [0.120]}, "n").status == "met"
    skipped = report.ratio_row("x", "x", "`dpkg -i`", 1.0, samples, "dpkg", "agent", skip="dpkg not found")
    assert skipped.status == "skipped: dpkg not found" and skipped.value is None


def test_the_page_and_the_plot_come_from_the_json(tmp_path: Path) -> None:
    samples = linear(0.3, 2e-4)
    rows = [report.scaling_row(samples, FILES, MEASURE, FIXED, FIXED_FILES),
            report.ratio_row("fresh-vs-unzip", "fresh install", "`unzip -o`", 1.5, samples,
                             "plesk-5000/unzip", "plesk-5000/agent-install")]
    durability = {"modes": ["syncfs", "fsync"], "default": "syncfs", "writer_rate_mb": 50.0,
                  "backlog_seconds": 6.0, "reps": 2, "files": 5000, "writer_alone_mbps": 50.2,
                  "writer_alone_stall": 0.001, "writer_alone_commit": 0.004,
                  "entries": [{"mode": "syncfs", "default": True, "idle": 1.3, "live": 4.1,
                               "writer_mbps": 31.0, "writer_stall": 0.8, "writer_commit": 2.5},
                              {"mode": "dpkg", "default": False, "idle": 0.9, "live": 1.2,
                               "writer_mbps": 49.5, "writer_stall": 0.01, "writer_commit": None}]}
    doc = {"schema": 2, "generated_at": "2026-11-27T16:00:00+00:00", "command": ["--reps", "5"],
           "settings": {"sizes": [500, 5000, 20000], "reps": 5, "big_reps": 3, "headline_size": 5000,
                        "wall_seconds": 540.0},
           "machine": {"platform": "Linux", "cpus": 2, "memory": "23.5 GiB", "load_at_start": [1.0, 2.0, 3.0],
                       "filesystem": "ext4 (rw) on /", "python": "3.11.7", "dpkg": "dpkg 1.21",
                       "unzip": "UnZip 6.00", "dirty": {},
                       "trial_filesystem": {"kind": "image", "size_bytes": 24 << 30, "type": "ext4",
                                            "device": "/dev/loop3", "options": "rw,relatime",
                                            "ext4_options": "data=ordered,commit=5", "journal": True},
                       "dpkg_config": {"config_forces": {"/etc/dpkg/dpkg.cfg.d/docker-apt-speedup":
                                                         ["force-unsafe-io"]},
                                       "config_forces_unsafe_io": True,
                                       "bench_overrides": ["--no-force-unsafe-io"]}},
           "agent": {"version": "0.1.0", "durability_default": "syncfs",
                     "durability_modes": ["syncfs", "fsync"]},
           "rows": [r.to_dict() for r in rows], "durability": durability,
           "scaling": report.scaling_series(samples, FILES, FIXED, FIXED_FILES), "notes": ["a note"]}
    source = tmp_path / "latest.json"
    source.write_text(json.dumps(doc))
    out, svg = tmp_path / "performance.md", tmp_path / "performance-scaling.svg"
    assert report.main(["--json", str(source), "--out", str(out)]) == 0
    page = out.read_text()
    assert report.markdown(rows) in page
    assert ('| mgr-agent, `mode = "syncfs"` (default) | 1.30 s | 4.10 s | 3.15× | 31.0 MB/s | 800 ms '
            '| 2.50 s |' in page)
    assert "| `dpkg -i` | 900 ms | 1.20 s | 1.33× | 49.5 MB/s | 10 ms | — |" in page
    assert "| (nothing: the writer alone) | — | — | — | 50.2 MB/s | 1 ms | 4 ms |" in page
    assert "**300 ms**" in page                             # the measured fixed cost, quoted
    assert "0.200 ms at 500, 0.200 ms at 5,000, 0.200 ms at 20,000" in page
    assert ("- trial roots on: ext4 with a journal (rw,relatime; data=ordered,commit=5), a 24 GiB sparse "
            "image, `mkfs.ext4 -q`, `mount -o loop` (/dev/loop3)") in page
    assert ("- dpkg configuration forces: `force-unsafe-io` in /etc/dpkg/dpkg.cfg.d/docker-apt-speedup; "
            "the bench passes `--no-force-unsafe-io`") in page
    assert "**1 of 2 targets met, 1 missed**" in page     # unzip: 1.30 s / 0.60 s
    assert "5 repetitions (3 at 20,000 files)" in page
    assert "- note: a note" in page
    assert "{{" not in page
    first = svg.read_bytes()
    assert b"<svg" in first
    assert report.main(["--json", str(source), "--out", str(out)]) == 0
    assert svg.read_bytes() == first, "the same JSON gives the same plot"
    with pytest.raises(ValueError, match="unknown placeholder"):
        report.render(doc, "x.svg", "latest.json", template="{{nothing}}")
