"""The reliability runner: every way this project tries to break the agent, and the figures.

    python -m tests.reliability [--trials N] [--quick] [--seed S] [--keep]

1. Random kills (``random_kill.py``): upgrades of a package with a few hundred files, each
   SIGKILLed at a random instant, recovered and checked byte for byte: ``--trials`` (default
   200, 20 with ``--quick``) with the delay uniform over the measured no-fault run time, and
   ``--tx-trials`` (default 100, 10 with ``--quick``) with the delay uniform over the time
   from taking the lock to exiting, so that most land inside the transaction.
2. The pytest suites, in one pytest run with a JUnit report: kill at every fault point
   (test_crash; test_retained for a rollback taking a retained tree; test_reclaim after an
   uninstall's commit), hostile inputs
   (test_hostile_input), real faults and fuzzing (test_faults, test_fuzz, when present),
   concurrency, durability order, torn state.  Without
   ``--quick`` they run with ``RELIABILITY_FULL=1`` (more cases where a suite has a
   reduced default for ``make test``).

Prints the figures as a Markdown table, writes them to
``tests/reliability/results/latest.json`` and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.helpers import REPO
from tests.reliability import random_kill

RESULTS = REPO / "tests/reliability/results"

# (category, test file): the suites the runner gathers, in the order of the table
SUITES = (
    ("kill at every step", "tests/integration/test_crash.py"),
    ("retained trees", "tests/integration/test_retained.py"),
    ("reclaimed trees", "tests/integration/test_reclaim.py"),
    ("hostile input", "tests/integration/test_hostile_input.py"),
    ("real faults", "tests/integration/test_faults.py"),
    ("fuzzing", "tests/integration/test_fuzz.py"),
    ("concurrency", "tests/integration/test_concurrency.py"),
    ("durability order", "tests/integration/test_durability_order.py"),
    ("torn state", "tests/integration/test_torn_state.py"),
)


def _machine() -> dict[str, Any]:
    return {"host": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "filesystem": _fs_type(Path(tempfile.gettempdir()))}


def _fs_type(path: Path) -> str:
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "?"


# ---------------------------------------------------------------- 1. random kills
ANCHORS = {"start": "uniform over the whole run", "lock": "uniform over the transaction"}


def random_kills(work: Path, trials: dict[str, int], seed: int) -> dict[str, dict[str, Any]]:
    """Random-kill trials per anchor ("start": from the process start, over its measured
    run time; "lock": from the moment it holds the lock, over the rest of its run)."""
    print(f"== random kills: {trials['start']} over the whole run, {trials['lock']} over the "
          "transaction (a Plesk extension and an ispmanager plugin, about 300 files each)", flush=True)
    fixtures = random_kill.build_all(work / "random-kill")
    for fx in fixtures:
        print(f"   {fx.panel}: {fx.files} files change; no-fault run {fx.span * 1000:.0f} ms "
              f"(median of {[round(x * 1000) for x in fx.spans]}), of which "
              f"{fx.tx_span * 1000:.0f} ms after taking the lock", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for anchor, count in trials.items():
        if count <= 0:
            continue
        step = max(count // 5, 1)

        def progress(t: random_kill.Trial, s: random_kill.Summary, count: int = count,
                     step: int = step) -> None:
            if t.outcome == "failed":
                print(f"   FAILED trial {t.index} ({t.panel}, killed {t.delay * 1000:.0f} ms after the "
                      f"{t.anchor}): {t.error.splitlines()[0]}\n   root kept at {t.kept}", flush=True)
            if s.trials % step == 0 or s.trials == count:
                print(f"   {ANCHORS[s.anchor]}: {s.trials:4d}/{count}: to old {s.to_old}, to new "
                      f"{s.to_new}, completed before the kill {s.completed}, failures {s.failures}",
                      flush=True)

        summary = random_kill.run_trials(fixtures, work / "random-kill", count, anchor=anchor,
                                         seed=seed, progress=progress)
        out[anchor] = summary.to_dict()
        print(f"   killed at: {out[anchor]['killed_at_phase']}", flush=True)
    return out


# ---------------------------------------------------------------- 2. the pytest suites
def _junit(path: Path) -> dict[str, dict[str, Any]]:
    """Per test file: cases, passed, failed, skipped, xfailed, seconds, failed test names."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        fname = "/".join(module[:3]) + ".py" if len(module) >= 3 else case.get("file", "?")
        row = out.setdefault(fname, {"cases": 0, "passed": 0, "failed": 0, "skipped": 0, "xfailed": 0,
                                     "seconds": 0.0, "failures": []})
        row["cases"] += 1
        row["seconds"] += float(case.get("time", 0) or 0)
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            row["failed"] += 1
            row["failures"].append(case.get("name"))
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            row["xfailed"] += 1
        elif skipped is not None:
            row["skipped"] += 1
        else:
            row["passed"] += 1
    return out


def suites(work: Path, quick: bool) -> list[dict[str, Any]]:
    present = [(cat, f) for cat, f in SUITES if (REPO / f).exists()]
    missing = [f for _, f in SUITES if not (REPO / f).exists()]
    print(f"\n== pytest suites: {', '.join(Path(f).name for _, f in present)}"
          + (f" (absent, not run: {', '.join(Path(f).name for f in missing)})" if missing else ""),
          flush=True)
    report = work / "junit.xml"
    env = dict(os.environ)
    if not quick:
        env["RELIABILITY_FULL"] = "1"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={report}", *[f for _, f in present]],
                          cwd=REPO, env=env, check=False)
    seconds = time.monotonic() - started
    rows = _junit(report)
    out = []
    for cat, f in SUITES:
        if f in missing:
            out.append({"category": cat, "file": f, "absent": True})
            continue
        row = rows.get(f, {"cases": 0, "passed": 0, "failed": 0, "skipped": 0, "xfailed": 0,
                           "seconds": 0.0, "failures": []})
        if not row["cases"] and done.returncode != 0:  # pytest could not even collect it
            row = {**row, "failed": 1, "failures": [f"pytest exited {done.returncode}"]}
        out.append({"category": cat, "file": f, **row, "seconds": round(row["seconds"], 1)})
    print(f"   pytest exited {done.returncode} after {seconds:.0f} s", flush=True)
    return out


# ---------------------------------------------------------------- the figures
def table(kills: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    lines = ["| category | cases tried | passed | failed | skipped / xfail | time |",
             "|---|---:|---:|---:|---:|---:|"]
    for anchor, k in kills.items():
        lines.append(f"| random kills, {ANCHORS[anchor]} | {k['trials']} | {k['trials'] - k['failures']} | "
                     f"{k['failures']} | 0 / 0 | {k['seconds']:.0f} s |")
    for r in rows:
        if r.get("absent"):
            lines.append(f"| {r['category']} | — | — | — | not present | — |")
            continue
        lines.append(f"| {r['category']} | {r['cases']} | {r['passed']} | {r['failed']} | "
                     f"{r['skipped']} / {r['xfailed']} | {r['seconds']:.0f} s |")
    present = [r for r in rows if not r.get("absent")]
    cases = sum(r["cases"] for r in present) + sum(k["trials"] for k in kills.values())
    failed = sum(r["failed"] for r in present) + sum(k["failures"] for k in kills.values())
    passed = sum(r["passed"] for r in present) + sum(k["trials"] - k["failures"] for k in kills.values())
    lines.append(f"| **total** | **{cases}** | **{passed}** | **{failed}** | "
                 f"{sum(r['skipped'] for r in present)} / {sum(r['xfailed'] for r in present)} | |")
    if kills:
        lines += ["", "| random kills (upgrade v1 → v2, ~300 files) | trials | recovered to old | "
                  "recovered to new | completed before the kill | failures |",
                  "|---|---:|---:|---:|---:|---:|"]
        for anchor, k in kills.items():
            lines.append(f"| {ANCHORS[anchor]} | {k['trials']} | {k['to_old']} | {k['to_new']} | "
                         f"{k['completed_before_kill']} | {k['failures']} |")
        lines += ["", "Where the kills landed (the journal's last record at the kill; *committed*: "
                  "the history row was in; *cleaned-up*: the journal was already deleted):", ""]
        for anchor, k in kills.items():
            phases = ", ".join(f"{p} {n}" for p, n in k["killed_at_phase"].items())
            lines.append(f"- {ANCHORS[anchor]}: {phases}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=None,
                        help="random kills over the whole run (default 200; 20 with --quick)")
    parser.add_argument("--tx-trials", type=int, default=None,
                        help="random kills over the transaction, from taking the lock (default 100; "
                             "10 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced but complete pass: fewer random kills, suites at their "
                             "make-test size")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--skip-suites", action="store_true", help="random kills only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    trials = {"start": args.trials if args.trials is not None else (20 if args.quick else 200),
              "lock": args.tx_trials if args.tx_trials is not None else (10 if args.quick else 100)}
    seed = args.seed if args.seed is not None else int(time.time())
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mgr-reliability-"))
    print(f"reliability run: {'quick' if args.quick else 'full'}, seed {seed}, work dir {work}", flush=True)
    kills = random_kills(work, trials, seed) if any(trials.values()) else {}
    rows = [] if args.skip_suites else suites(work, args.quick)
    failed = sum(k["failures"] for k in kills.values()) + sum(r.get("failed", 0) for r in rows)
    figures = table(kills, rows)
    print("\n" + figures + "\n", flush=True)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "mode": "quick" if args.quick else "full",
           "seed": seed, "seconds": round(time.monotonic() - started, 1), "machine": _machine(),
           "random_kills": kills, "suites": rows, "failed": failed, "ok": failed == 0,
           "table": figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"figures written to {(RESULTS / 'latest.json').relative_to(REPO)}; "
          f"{doc['seconds']:.0f} s in all", flush=True)
    if failed:
        print(f"FAILED: {failed} case(s); work dir kept at {work}", file=sys.stderr)
    elif not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
