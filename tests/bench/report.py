"""The benchmark's rows (medians, ratios, targets), their Markdown, and docs/performance.md.

    python -m tests.bench.report [--json tests/bench/results/latest.json]
                                 [--out docs/performance.md] [--plot docs/performance-scaling.svg]

regenerates the page from the JSON of the last ``python -m tests.bench.run`` (``make bench``
does both): the prose comes from ``tests/bench/performance_template.md``, the tables, the
figures quoted in the text and the plot (made with matplotlib, ``pip install -e '.[bench]'``)
from the JSON.  Edit the template, never the generated page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tests.bench import trialfs

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("performance_template.md")
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
    ratio: float | None = None             # agent / baseline (ratio rows: see paired_ratio)
    value: float | None = None             # what the target is checked against
    unit: str = "x"                        # x (ratio), s (wall), ms (over baseline), MB, max/min, cpu
    target_value: float | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    ratio_of_medians: float | None = None  # ratio rows: agent median / baseline median

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def paired_ratio(base: list[float], agent: list[float]) -> float | None:
    """The median of the per-repetition ratios ``agent[i] / base[i]``.  Repetition ``i``
    runs the two commands back to back (alternating which goes first), while the machine's
    speed drifts between repetitions by up to a third here: each pair shares its
    repetition's conditions, where the ratio of the two medians may divide a slow
    repetition's sample by a fast one's.  Groups run in fewer repetitions are the first
    ones, so index ``i`` is the same repetition on both sides."""
    pairs = [a / b for a, b in zip(agent, base, strict=False) if b > 0]
    return statistics.median(pairs) if pairs else None


def _judge(row: Row) -> None:
    if row.value is None or row.target_value is None:
        return
    row.status = "met" if row.value <= row.target_value else "missed"


def _pair(row: Row, samples: Samples, base: str, agent: str) -> None:
    """Fill in ``row``'s samples, medians and ratios of ``agent`` over ``base``."""
    row.samples = {"baseline": samples.get(base, []), "agent": samples.get(agent, [])}
    row.baseline_median = median(samples.get(base))
    row.agent_median = median(samples.get(agent))
    if row.baseline_median and row.agent_median is not None:
        row.ratio_of_medians = row.agent_median / row.baseline_median
        row.ratio = row.value = paired_ratio(row.samples["baseline"], row.samples["agent"])


def ratio_row(key: str, case: str, baseline: str, target: float, samples: Samples,
              base: str, agent: str, *, skip: str | None = None, note: str = "") -> Row:
    """``agent`` median over ``base`` median, checked against ``target`` (≤)."""
    short = baseline.strip("`").split()[0] if baseline.startswith("`") else "install"
    row = Row(key, case, baseline, f"≤ {target:.1f}× {short}", target_value=target, note=note)
    if skip:
        row.status = f"skipped: {skip}"
        return row
    _pair(row, samples, base, agent)
    if row.ratio_of_medians is not None:
        _judge(row)
        if (row.ratio_of_medians <= target) != (row.status == "met"):
            row.note = "; ".join(filter(None, [row.note, (
                f"the ratio of the medians, {row.ratio_of_medians:.2f}×, would have "
                f"{'met' if row.ratio_of_medians <= target else 'missed'} the target")]))
    return row


def floor_row(key: str, case: str, baseline: str, samples: Samples, base: str, agent: str,
              *, plain: str, skip: str | None = None) -> Row:
    """Informational: the agent against a baseline that does part of its work (``unzip``
    whose files are then made durable); the note gives that baseline over ``plain`` (bare
    ``unzip``), the floor under the row that compares with ``plain``."""
    row = Row(key, case, baseline, "— (informational: the floor under the unzip row)",
              status="info")
    if skip:
        row.status = f"skipped: {skip}"
        return row
    _pair(row, samples, base, agent)
    floor = paired_ratio(samples.get(plain, []), samples.get(base, []))
    if floor is not None:
        row.note = f"{baseline} alone: {floor:.2f}× `unzip -o`"
    return row


def wall_row(key: str, case: str, target: float, samples: Samples, agent: str, note: str = "") -> Row:
    row = Row(key, case, "—", f"≤ {fmt_time(target)} wall", unit="s", target_value=target, note=note)
    row.samples = {"agent": samples.get(agent, [])}
    row.agent_median = row.value = median(samples.get(agent))
    _judge(row)
    return row


def over_row(key: str, case: str, target_ms: float, samples: Samples, base: str, agent: str,
             note: str = "") -> Row:
    """A whole command against the bare interpreter: the difference of the medians, in ms."""
    row = Row(key, case, "`python -c pass`", f"≤ +{target_ms:g} ms over `python -c pass`",
              unit="ms", target_value=target_ms, note=note)
    row.samples = {"baseline": samples.get(base, []), "agent": samples.get(agent, [])}
    row.baseline_median = median(samples.get(base))
    row.agent_median = median(samples.get(agent))
    if row.baseline_median is not None and row.agent_median is not None:
        row.value = (row.agent_median - row.baseline_median) * 1000
        row.ratio = row.agent_median / row.baseline_median
        _judge(row)
    return row


def rss_row(key: str, case: str, target_mb: float, samples: Samples, install: str, upgrade: str) -> Row:
    """Peak RSS of the agent process alone during the install (``install``: its own
    ``VmHWM`` at exit, see ``tests.bench.agent_rss``), the largest of the repetitions.  The
    note gives the upgrade's, and both as ``wait4`` sees the whole command (``install-wait4``,
    ``upgrade-wait4``: the agent, a hook it waited for, or the bench at the fork)."""
    row = Row(key, case, "—", f"≤ {target_mb:g} MB", unit="MB", target_value=target_mb)

    def peak(name: str) -> float | None:
        return max(samples[name]) if samples.get(name) else None

    row.samples = {"install": samples.get(install, []), "upgrade": samples.get(upgrade, []),
                   "install-wait4": samples.get(install + "-wait4", []),
                   "upgrade-wait4": samples.get(upgrade + "-wait4", [])}
    row.value = peak(install)
    row.note = ("the agent process alone (`VmHWM`), the largest of the repetitions; `wait4` of the "
                f"command (the hooks and the bench's size at the fork included): "
                f"{_mb(peak(install + '-wait4'))}; upgrade, every file "
                f"changed: {_mb(peak(upgrade))} alone, {_mb(peak(upgrade + '-wait4'))} with its hooks")
    _judge(row)
    return row


def _point(values: list[float], files: int) -> dict[str, float]:
    return {"files": files, "median": statistics.median(values), "min": min(values), "max": max(values),
            "reps": len(values)}


def scaling_series(samples: Samples, files: dict[int, int], fixed: str | None = None,
                   fixed_files: int | None = None) -> dict[str, Any]:
    """Time per file at each payload size for the agent, unzip and dpkg; the agent's fixed
    cost (the ``fixed`` measure: a fresh install of ``fixed_files`` files) and its time per
    file without it, ``(median - fixed) / (files - fixed_files)``."""
    series: dict[str, dict[str, dict[str, float]]] = {}
    for tool, name in (("agent", "agent-install"), ("unzip", "unzip"), ("dpkg", "dpkg-install")):
        points: dict[str, dict[str, float]] = {}
        for n in sorted(files):
            values = samples.get(f"plesk-{n}/{name}")
            if values:
                points[str(n)] = _point(values, files[n])
        if points:
            series[tool] = points
    out: dict[str, Any] = {"sizes": sorted(files), "series": series, "fixed": None, "per_file": {}}
    values = samples.get(fixed) if fixed else None
    if values and fixed_files is not None:
        out["fixed"] = _point(values, fixed_files)
        out["per_file"] = {n: (p["median"] - out["fixed"]["median"]) / (p["files"] - fixed_files)
                           for n, p in series.get("agent", {}).items() if p["files"] > fixed_files}
    return out


def scaling_row(samples: Samples, files: dict[int, int], measure: str, fixed: str, fixed_files: int,
                target: float = 1.5) -> Row:
    """Time per file of fresh installs at each size, without the fixed cost.

    The fixed cost (interpreter start, imports, the two hooks, lock, journal: what every
    install pays once, whatever its size) is measured directly: ``fixed`` is a fresh
    install of the same kind of package with a single payload file (``fixed_files`` files
    with its meta.xml and hooks), run in every repetition beside the sizes.  The time per
    file at size N is ``(median(N) - median(fixed)) / (files(N) - fixed_files)``, the cost
    of each file the bigger package adds; the row is max / min of those, which stays at 1.0
    when the cost of a file does not depend on how many there are.  The note also gives the
    time per file with the fixed cost in (``median ÷ files``) and its spread.
    """
    sizes = sorted(files)
    case = "time per file, " + " → ".join(f"{n:,}" for n in sizes) + " files (fresh install)"
    row = Row("scaling", case, "—", f"flat within {target:g}× (fixed cost apart)", unit="max/min",
              target_value=target)
    medians: dict[int, float] = {}
    for n in sizes:
        m = median(samples.get(measure.format(n=n)))
        if m is not None and files[n] > fixed_files:
            medians[n] = m
            row.samples[str(n)] = samples[measure.format(n=n)]
    raw = {n: m / files[n] for n, m in medians.items()}
    with_fixed = "per file with the fixed cost: " + ", ".join(
        f"{n:,}: {v * 1000:.3f} ms" for n, v in raw.items())
    if len(raw) >= 2:
        with_fixed += f" (spread {max(raw.values()) / min(raw.values()):.2f}×)"
    row.note = with_fixed
    t_fixed = median(samples.get(fixed))
    row.agent_median = t_fixed
    if samples.get(fixed):
        row.samples["fixed"] = samples[fixed]
    if len(medians) < 2:
        row.status = "skipped: one size only"
        return row
    if t_fixed is None:
        row.status = "skipped: no fixed-cost measurement"
        return row
    adjusted = {n: (m - t_fixed) / (files[n] - fixed_files) for n, m in medians.items()}
    row.note = (f"fixed cost {fmt_time(t_fixed)} (a fresh install of the same kind of package with "
                f"one payload file: {fixed_files} files with its meta.xml and hooks); per file without "
                "it, (median − fixed) ÷ the files added: "
                + ", ".join(f"{n:,}: {v * 1000:.3f} ms" for n, v in adjusted.items())
                + "; " + with_fixed)
    if min(adjusted.values()) <= 0:
        row.status = "missed"
        row.note += "; a size took no more than the fixed cost"
        return row
    row.value = row.ratio = max(adjusted.values()) / min(adjusted.values())
    _judge(row)
    return row


def cpu_row(key: str, case: str, samples: Samples, name: str) -> Row:
    """CPU seconds used, informational."""
    row = Row(key, case, "—", "— (informational; no busy polling)", unit="cpu", status="info")
    row.samples = {"agent": samples.get(name, [])}
    row.agent_median = row.value = median(samples.get(name))
    return row


def daemon_row(case: str, samples: Samples) -> Row:
    """Idle daemon: RSS and CPU, both against the issue's bounds."""
    rss, cpu = median(samples.get("daemon/rss-mib")), median(samples.get("daemon/idle-cpu"))
    pings = median(samples.get("daemon/pings"))
    row = Row("daemon-idle", case, "—", "≤ 40 MB RSS, ≤ 0.5 s CPU in total", unit="cpu",
              target_value=0.5, value=cpu, agent_median=cpu)
    if rss is not None and cpu is not None:
        row.note = f"RSS {rss * 1.048576:.1f} MB ({rss:.1f} MiB), CPU {cpu:.3f} s"
        if pings is not None:
            row.note += f", {pings:.0f} watchdog pings received (the bench drains the notify socket)"
        row.status = "met" if rss <= 40 / 1.048576 and cpu <= 0.5 else "missed"
    row.samples = {"rss-mib": samples.get("daemon/rss-mib", []),
                   "cpu": samples.get("daemon/idle-cpu", [])}
    return row


# ------------------------------------------------------------------ Markdown

def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} MB"


def _value(row: Row) -> str:
    if row.value is None:
        return "—"
    if row.unit == "ms":
        return f"{row.value:+.0f} ms"
    if row.unit == "s":
        return fmt_time(row.value)
    if row.unit == "cpu":
        return f"{row.value:.3f} s CPU"
    if row.unit == "MB":
        return _mb(row.value)
    if row.unit == "max/min":
        return f"{row.value:.2f}× max/min"
    return f"{row.value:.2f}×"


def _agent(row: Row) -> str:
    if row.unit == "max/min":
        return f"fixed {fmt_time(row.agent_median)}" if row.agent_median is not None else "—"
    if row.unit == "MB":
        return _mb(row.value)
    if row.unit == "cpu":
        return f"{row.agent_median:.3f} s CPU" if row.agent_median is not None else "—"
    return fmt_time(row.agent_median)


def markdown(rows: list[Row]) -> str:
    """The table, then the rows' notes as a list."""
    lines = ["| case | baseline | baseline median | mgr-agent | value | target | result |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.case} | {row.baseline} | {fmt_time(row.baseline_median)} | {_agent(row)} | "
                     f"{_value(row)} | {row.target} | {row.status} |")
    notes = [f"- {row.case}: {row.note}" for row in rows if row.note and not row.status.startswith("skipped")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def durability_markdown(durability: dict[str, Any]) -> str:
    """Each durability mode and dpkg: install time on an idle and on a live filesystem, and
    what the background writer managed meanwhile."""
    rate = durability.get("writer_rate_mb", 0)
    lines = ["| installer | idle filesystem | live filesystem | live ÷ idle | "
             f"other writer's rate (asks {rate:g} MB/s) | its slowest 1 MiB write | "
             "its slowest commit (4 KiB + fdatasync) |",
             "|---|---|---|---|---|---|---|"]

    def opt(value: float | None) -> str:
        return "—" if value is None else fmt_time(value)

    for entry in durability.get("entries", []):
        mode = entry["mode"]
        name = "`dpkg -i`" if mode == "dpkg" else f'mgr-agent, `mode = "{mode}"`'
        if entry.get("default"):
            name += " (default)"
        idle, busy = entry.get("idle"), entry.get("live")
        ratio = f"{busy / idle:.2f}×" if idle and busy else "—"
        mbps = entry.get("writer_mbps")
        lines.append(f"| {name} | {fmt_time(idle)} | {fmt_time(busy)} | {ratio} | "
                     f"{'—' if mbps is None else f'{mbps:.1f} MB/s'} | "
                     f"{opt(entry.get('writer_stall'))} | {opt(entry.get('writer_commit'))} |")
    alone = durability.get("writer_alone_mbps")
    if alone is not None:
        lines.append(f"| (nothing: the writer alone) | — | — | — | {alone:.1f} MB/s | "
                     f"{opt(durability.get('writer_alone_stall'))} | "
                     f"{opt(durability.get('writer_alone_commit'))} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ plot

def plot(scaling: dict[str, Any], dest: Path) -> None:
    """Time per file against payload size for the agent, unzip and dpkg (SVG or PNG by suffix)."""
    import matplotlib  # noqa: PLC0415 - only the report needs it (the `bench` extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams["svg.hashsalt"] = "mgr-agent-bench"  # the same data gives the same file
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    styles = {"agent": ("mgr-agent install", "tab:blue", "o"), "unzip": ("unzip -o", "tab:gray", "s"),
              "dpkg": ("dpkg -i", "tab:orange", "^")}
    for tool, points in scaling.get("series", {}).items():
        label, color, marker = styles[tool]
        xs = [int(p["files"]) for p in points.values()]
        med = [p["median"] / p["files"] * 1000 for p in points.values()]
        low = [m - p["min"] / p["files"] * 1000 for m, p in zip(med, points.values(), strict=True)]
        high = [p["max"] / p["files"] * 1000 - m for m, p in zip(med, points.values(), strict=True)]
        ax.errorbar(xs, med, yerr=[low, high], label=label, color=color, marker=marker, capsize=3)
    fixed = scaling.get("fixed")
    agent = scaling.get("series", {}).get("agent", {})
    per_file = scaling.get("per_file", {})
    if fixed and per_file:
        xs = [int(agent[n]["files"]) for n in per_file]
        ax.plot(xs, [v * 1000 for v in per_file.values()], color="tab:blue", linestyle="--", marker="o",
                markerfacecolor="none",
                label=f"mgr-agent without its fixed cost ({fmt_time(fixed['median'])}, measured)")
    ax.set_xscale("log")
    sizes = sorted({int(p["files"]) for points in scaling.get("series", {}).values()
                    for p in points.values()})
    if sizes:
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
    ax.set_xlabel("payload size, files (log scale)")
    ax.set_ylabel("time per file, ms (median; bars: min–max)")
    ax.set_ylim(bottom=0)
    ax.set_title("Fresh install: time per file against payload size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, metadata={"Date": None} if dest.suffix == ".svg" else None)
    plt.close(fig)


# ------------------------------------------------------------------ the page

def _settings(doc: dict[str, Any]) -> str:
    st, m, agent = doc["settings"], doc["machine"], doc["agent"]
    sizes = ", ".join(f"{n:,}" for n in st["sizes"])
    when = doc["generated_at"].replace("T", " ").removesuffix("+00:00") + " UTC"
    reps = f"{st['reps']} repetition{'s' if st['reps'] != 1 else ''}"
    if len(st["sizes"]) > 1 and st.get("big_reps", st["reps"]) < st["reps"]:
        reps += f" ({st['big_reps']} at {st['sizes'][-1]:,} files)"
    dirty = m.get("dirty", {})
    return "\n".join([
        f"- run: {when}, `{' '.join(['python -m tests.bench.run', *doc['command']])}`",
        f"- {reps}, medians; payload sizes {sizes} files; headline size {st['headline_size']:,}"
        + (f"; took {st['wall_seconds'] / 60:.1f} min" if st.get("wall_seconds") else ""),
        f"- machine: {m['platform']}, {m['cpus']} CPUs, {m.get('memory', '?')} RAM, load "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_at_start', []))} at the start; "
        f"work directory's filesystem {m['filesystem']}",
        *_trial_lines(m),
        f"- Python {m['python']}, {m['dpkg']}, {m['unzip']}",
        f"- mgr-agent {agent['version']}, default durability `{agent['durability_default']}`, "
        f"modes accepted: {', '.join(f'`{x}`' for x in agent.get('durability_modes', []))}",
        f"- page cache write-back: vm.dirty_background_ratio {dirty.get('dirty_background_ratio', '?')}, "
        f"dirty_ratio {dirty.get('dirty_ratio', '?')}, dirty_expire_centisecs "
        f"{dirty.get('dirty_expire_centisecs', '?')}",
        *(f"- note: {note}" for note in doc.get("notes", [])),
    ])


def _trial_lines(m: dict[str, Any]) -> list[str]:
    """Where the trials ran, and what dpkg's configuration forces and the bench overrides."""
    lines = []
    trial = m.get("trial_filesystem")
    if trial:
        lines.append(f"- trial roots on: {trialfs.summary(trial)}")
    dpkg = m.get("dpkg_config")
    if dpkg:
        forces = "; ".join(f"`{', '.join(opts)}` in {path}" for path, opts in dpkg["config_forces"].items())
        lines.append(f"- dpkg configuration forces: {forces or 'nothing'}; the bench passes "
                     + ", ".join(f"`{flag}`" for flag in dpkg["bench_overrides"])
                     + " (dpkg fsyncs every file before its rename, as a stock Debian server's does)")
    return lines


def _summary(rows: list[Row]) -> str:
    met = sum(r.status == "met" for r in rows)
    missed = sum(r.status == "missed" for r in rows)
    skipped = sum(r.status.startswith("skipped") for r in rows)
    text = f"**{met} of {met + missed} targets met, {missed} missed**"
    if skipped:
        text += f" ({skipped} row{'s' if skipped != 1 else ''} skipped)"
    return text + "."


def render(doc: dict[str, Any], plot_name: str, source: str, template: str | None = None) -> str:
    rows = [Row.from_dict(r) for r in doc["rows"]]
    durability = doc.get("durability", {})
    scaling = doc.get("scaling", {})
    fixed = scaling.get("fixed") or {}
    per_file = scaling.get("per_file") or {}
    values = {
        "settings": _settings(doc),
        "summary": _summary(rows),
        "table": markdown(rows),
        "durability_table": durability_markdown(durability),
        "plot": f"![time per file against payload size]({plot_name})",
        "fixed_cost": fmt_time(fixed.get("median")),
        "fixed_files": f"{fixed['files']:,}" if fixed else "—",
        "per_file": ", ".join(f"{v * 1000:.3f} ms at {int(n):,}" for n, v in per_file.items()) or "—",
        "writer_rate": f"{durability.get('writer_rate_mb', 0):g}",
        "backlog": f"{durability.get('backlog_seconds', 0):g}",
        "live_reps": f"{durability.get('reps', 0)} round{'s' if durability.get('reps') != 1 else ''}",
        "json": source,
    }
    text = TEMPLATE.read_text() if template is None else template
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError(f"unknown placeholder in the template: {text[text.index('{{'):][:40]}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=REPO / "tests/bench/results/latest.json")
    parser.add_argument("--out", type=Path, default=REPO / "docs/performance.md")
    parser.add_argument("--plot", type=Path, default=None,
                        help="the plot (.svg or .png; default performance-scaling.svg next to --out)")
    args = parser.parse_args(argv)
    doc = json.loads(args.json.read_text())
    if doc.get("schema") != 2:
        parser.error(f"{args.json}: schema {doc.get('schema')}, expected 2 (run the bench again)")
    dest = args.plot or args.out.with_name("performance-scaling.svg")
    plot(doc.get("scaling", {}), dest)
    source = args.json.resolve()
    shown = str(source.relative_to(REPO)) if source.is_relative_to(REPO) else str(source)
    args.out.write_text(render(doc, dest.name if dest.parent == args.out.parent else str(dest), shown))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
    print(f"[report {stamp}] wrote {args.out} and {dest} from {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
