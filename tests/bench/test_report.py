"""The bench's arithmetic and the page it renders, on known samples (fast; no commands run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import report

FILES = {500: 511, 5_000: 5_011, 20_000: 20_011}


def linear(fixed: float, per_file: float, bend: float = 1.0) -> dict[str, list[float]]:
    """Medians of ``fixed + per_file * files`` (times ``bend`` at the biggest size)."""
    samples = {}
    for n, files in FILES.items():
        t = fixed + per_file * files * (bend if n == 20_000 else 1.0)
        samples[f"plesk-{n}/agent-install"] = [t * 1.02, t, t * 0.97]
        samples[f"plesk-{n}/unzip"] = [0.1 + 0.0001 * files]
    return samples


def test_fit_recovers_the_fixed_cost_and_the_cost_per_file() -> None:
    fixed, per_file = report.fit([(511, 0.2 + 511e-4), (5011, 0.2 + 5011e-4), (20011, 0.2 + 20011e-4)])
    assert fixed == pytest.approx(0.2)
    assert per_file == pytest.approx(1e-4)
    assert report.fit([(500, 1.0)]) is None


def test_scaling_row_judges_time_per_file_without_the_fixed_cost() -> None:
    flat = report.scaling_row(linear(0.3, 2e-4), FILES, "plesk-{n}/agent-install")
    assert flat.status == "met"
    assert flat.value == pytest.approx(1.0)
    assert flat.agent_median == pytest.approx(0.3)        # the fixed cost, reported apart
    assert "fixed cost 300 ms + 0.200 ms per file" in flat.note
    assert "per file with the fixed cost: 500: 0.787 ms" in flat.note   # (0.3 + 0.1022) / 511

    # the 20,000-file install costs 3x per file: no fixed cost explains that
    bent = report.scaling_row(linear(0.3, 2e-4, bend=3.0), FILES, "plesk-{n}/agent-install")
    assert bent.status == "missed"
    assert bent.value is not None and bent.value > 1.5

    two = {k: v for k, v in linear(0.3, 2e-4).items() if "20000" not in k}
    assert report.scaling_row(two, {500: 511, 5_000: 5_011}, "plesk-{n}/agent-install").status \
        == "skipped: needs three sizes"
    one = {k: v for k, v in two.items() if k.startswith("plesk-500/")}
    assert report.scaling_row(one, {500: 511}, "plesk-{n}/agent-install").status == "skipped: one size only"


def test_rows_against_their_targets() -> None:
    samples = {"dpkg": [1.0, 1.2, 1.1], "agent": [0.9, 1.0, 0.95], "pass": [0.012, 0.013],
               "version": [0.050, 0.040], "rss": [80.0, 120.0], "rss-up": [90.0]}
    row = report.ratio_row("fresh-vs-dpkg", "fresh", "`dpkg -i`", 1.0, samples, "dpkg", "agent")
    assert (row.status, row.target) == ("met", "≤ 1.0× dpkg")
    assert row.value == pytest.approx(0.95 / 1.1)
    row = report.ratio_row("x", "x", "mgr-agent fresh install", 0.2, samples, "dpkg", "agent")
    assert (row.status, row.target) == ("missed", "≤ 0.2× install")
    row = report.over_row("startup-version", "v", 30, samples, "pass", "version")
    assert row.value == pytest.approx((0.045 - 0.0125) * 1000)
    assert row.status == "missed"
    row = report.rss_row("peak-rss", "rss", 100, samples, "rss", "rss-up")
    assert (row.value, row.status) == (120.0, "missed")        # the largest repetition counts
    assert "upgrade, every file changed: 90 MB" in row.note
    assert report.wall_row("noop", "noop", 0.150, {"n": [0.120]}, "n").status == "met"
    skipped = report.ratio_row("x", "x", "`dpkg -i`", 1.0, samples, "dpkg", "agent", skip="dpkg not found")
    assert skipped.status == "skipped: dpkg not found" and skipped.value is None


def test_the_page_and_the_plot_come_from_the_json(tmp_path: Path) -> None:
    samples = linear(0.3, 2e-4)
    rows = [report.scaling_row(samples, FILES, "plesk-{n}/agent-install"),
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
                       "unzip": "UnZip 6.00", "dirty": {}},
           "agent": {"version": "0.1.0", "durability_default": "syncfs",
                     "durability_modes": ["syncfs", "fsync"]},
           "rows": [r.to_dict() for r in rows], "durability": durability,
           "scaling": report.scaling_series(samples, FILES), "notes": ["a note"]}
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
    assert "**300 ms**, plus **0.200 ms**" in page          # the fit, quoted in the text
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
