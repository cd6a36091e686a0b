"""The benchmark's rows: medians, ratios and targets, rendered as a Markdown table."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

Samples = dict[str, list[float]]


@dataclass
class Row:
    key: str
    case: str
    baseline: str
    target: str
    status: str = "skipped"
    baseline_median: float | None = None   # seconds
    agent_median: float | None = None      # seconds
    ratio: float | None = None             # agent / baseline
    value: float | None = None             # what the target is checked against
    unit: str = "x"                        # x (ratio), s (wall), ms (over baseline), max/min
    target_value: float | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _judge(row: Row) -> None:
    if row.value is None or row.target_value is None:
        return
    row.status = "met" if row.value <= row.target_value else "missed"


def ratio_row(key: str, case: str, baseline: str, target: float, target_text: str, samples: Samples,
              base: str, agent: str, *, skip: str | None = None, note: str = "") -> Row:
    """``agent`` median over ``base`` median, checked against ``target``."""
    row = Row(key, case, baseline, target_text, target_value=target, note=note)
    if skip:
        row.status = f"skipped: {skip}"
        return row
    row.samples = {"baseline": samples.get(base, []), "agent": samples.get(agent, [])}
    row.baseline_median = median(samples.get(base))
    row.agent_median = median(samples.get(agent))
    if row.baseline_median and row.agent_median is not None:
        row.ratio = row.value = row.agent_median / row.baseline_median
        _judge(row)
    return row


def wall_row(key: str, case: str, target: float, samples: Samples, agent: str, note: str = "") -> Row:
    row = Row(key, case, "—", f"≤ {target:g} s wall", unit="s", target_value=target, note=note)
    row.samples = {"agent": samples.get(agent, [])}
    row.agent_median = row.value = median(samples.get(agent))
    _judge(row)
    return row


def over_row(key: str, case: str, target_ms: float, samples: Samples, base: str, agent: str) -> Row:
    """Startup: the agent's median minus the bare interpreter's, in ms."""
    row = Row(key, case, "`python -c pass`", f"≤ {target_ms:g} ms over the interpreter's own start",
              unit="ms", target_value=target_ms)
    row.samples = {"baseline": samples.get(base, []), "agent": samples.get(agent, [])}
    row.baseline_median = median(samples.get(base))
    row.agent_median = median(samples.get(agent))
    if row.baseline_median is not None and row.agent_median is not None:
        row.value = (row.agent_median - row.baseline_median) * 1000
        row.ratio = row.agent_median / row.baseline_median
        _judge(row)
    return row


def scaling_row(samples: Samples, files: dict[int, int], measure: str, target: float = 1.5) -> Row:
    """Time per file of fresh installs at each size; max/min must stay within ``target``."""
    sizes = sorted(files)
    case = "scaling " + " → ".join(f"{n:,}" for n in sizes) + " files (fresh install)"
    row = Row("scaling", case, "—", f"time per file flat within {target:g}×", unit="max/min",
              target_value=target)
    per_file: dict[int, float] = {}
    for n in sizes:
        m = median(samples.get(measure.format(n=n)))
        if m is not None:
            per_file[n] = m / files[n]
            row.samples[str(n)] = samples[measure.format(n=n)]
    row.note = "per file: " + ", ".join(f"{n:,}: {v * 1000:.3f} ms" for n, v in per_file.items())
    if len(per_file) < 2:
        row.status = "skipped: one size only"
        return row
    # The cost of one more file, between consecutive sizes: flat when the install is
    # linear, whatever its fixed cost (interpreter start, imports, two hook runs).
    done = [(n, per_file[n] * files[n]) for n in sizes if n in per_file]
    row.note += "; marginal: " + ", ".join(
        f"{a:,}→{b:,}: {(tb - ta) / (files[b] - files[a]) * 1000:.3f} ms"
        for (a, ta), (b, tb) in itertools.pairwise(done))
    row.value = row.ratio = max(per_file.values()) / min(per_file.values())
    _judge(row)
    return row


def cpu_row(key: str, case: str, samples: Samples, name: str) -> Row:
    """CPU seconds used, informational."""
    row = Row(key, case, "—", "— (informational; no busy polling)", unit="s", status="info")
    row.samples = {"agent": samples.get(name, [])}
    row.agent_median = row.value = median(samples.get(name))
    return row


def daemon_row(case: str, samples: Samples) -> Row:
    """Idle daemon: RSS and CPU, both against the issue's bounds."""
    rss, cpu = median(samples.get("daemon/rss-mib")), median(samples.get("daemon/idle-cpu"))
    row = Row("daemon-idle", case, "—", "≤ 40 MB RSS, ≤ 0.5 s CPU in total", unit="s",
              target_value=0.5, value=cpu, agent_median=cpu,
              note=f"RSS {rss:.1f} MiB, CPU {cpu:.3f} s" if rss is not None and cpu is not None else "")
    row.samples = {"rss-mib": samples.get("daemon/rss-mib", []),
                   "cpu": samples.get("daemon/idle-cpu", [])}
    if rss is not None and cpu is not None:
        row.status = "met" if rss <= 40 * 1.048576 and cpu <= 0.5 else "missed"
    return row


def _t(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _value(row: Row) -> str:
    if row.value is None:
        return "—"
    if row.unit == "ms":
        return f"+{row.value:.0f} ms"
    if row.unit == "s":
        return "—"
    if row.unit == "max/min":
        return f"{row.value:.2f}× max/min"
    return f"{row.value:.2f}×"


def _agent(row: Row) -> str:
    if row.unit == "max/min":
        return row.note.removeprefix("per file: ").partition("; ")[0] or "—"
    return _t(row.agent_median)


def markdown(rows: list[Row]) -> str:
    """The table, then the rows' notes as a list."""
    lines = ["| case | baseline | baseline median | mgr-agent median | ratio | target | result |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.case} | {row.baseline} | {_t(row.baseline_median)} | {_agent(row)} | "
                     f"{_value(row)} | {row.target} | {row.status} |")
    notes = [f"- {row.case}: {row.note}" for row in rows
             if row.note and row.status in ("met", "missed", "info")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
