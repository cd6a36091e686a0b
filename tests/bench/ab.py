"""Two versions of the agent side by side on the bench's 5,000-file Plesk payloads.

    python -m tests.bench.ab --before /path/to/other/checkout/agent [--reps 3] [--files 5000]

``before`` runs with ``PYTHONPATH`` set to that checkout's ``agent`` directory, ``after``
with this checkout; both alternate within each repetition (the order rotated), beside
``unzip`` and ``dpkg`` of the same payload.  Prints the ratios of the rows a transaction
change affects (fresh install, upgrade, 1 % upgrade, automatic rollback, manual rollback,
uninstall) as JSON.  Not a test: nothing fails on timing.

As in ``make bench``, the trials run on a journaled ext4 image (``--fs image``, the
default, as root; see ``tests.bench.trialfs``) and dpkg runs with ``--no-force-unsafe-io``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tests.bench import payload as pl
from tests.bench import trialfs
from tests.bench.trials import Trials, compile_agent

RESULTS = Path(__file__).resolve().parent / "results"


def measure(before: str, files: int, reps: int, work: Path,
            trial_root: Path | None = None) -> dict[str, object]:
    payloads = pl.Payloads(work / "payloads")
    trial_root = trial_root or work
    zips = {v: payloads.zip("plesk", files, v) for v in pl.VARIANTS}
    debs = {v: payloads.deb("plesk", files, v) for v in ("v1", "v2")}
    versions: dict[str, Trials] = {}
    for label in ("before", "after"):
        versions[label] = Trials(trial_root / f"ab-{label}", sys.executable)
    versions["before"].env["PYTHONPATH"] = before
    compile_agent(Path(before))
    base = Trials(trial_root / "ab-base", sys.executable)
    samples: dict[str, list[float]] = {}

    def rec(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for rep in range(reps):
        rec("unzip", base.unzip(zips["v1"]))
        root = base.dpkg_root("dpkg")
        rec("dpkg-i", base.dpkg(root, "-i", str(debs["v1"])))
        rec("dpkg-r", base.dpkg(root, "-r", pl.deb_name("plesk")))
        root = base.dpkg_root("dpkg-up")
        base.dpkg(root, "-i", str(debs["v1"]), timed=False)
        rec("dpkg-upgrade", base.dpkg(root, "-i", str(debs["v2"])))
        order = list(versions.items())
        for label, t in order[rep % 2:] + order[:rep % 2]:
            fresh = t.agent_root("fresh")
            rec(f"{label}/install", t.install(fresh, zips["v1"]))
            up = t.agent_root("upgrade")
            t.install(up, zips["v1"], timed=False)
            rec(f"{label}/upgrade", t.install(up, zips["v2"], "upgraded"))
            rec(f"{label}/rollback", t.agent(up, "rollback", pl.PLESK_EXT, action="rolled_back")[0])
            small = t.agent_root("1pct")
            t.install(small, zips["v1"], timed=False)
            rec(f"{label}/upgrade-1pct", t.install(small, zips["v1b"], "upgraded"))
            failing = t.agent_root("fail")
            t.install(failing, zips["v1"], timed=False)
            rec(f"{label}/undo", t.failing_upgrade(failing, zips["v2fail"])[0])
            rec(f"{label}/uninstall",
                t.agent(fresh, "uninstall", pl.PLESK_EXT, action="removed")[0])
        for t in (*versions.values(), base):
            t.cleanup()
        print(f"repetition {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    m = {k: statistics.median(v) for k, v in samples.items()}
    out: dict[str, object] = {"medians": m, "samples": samples}
    for label in versions:
        install = m[f"{label}/install"]
        out[label] = {
            "install / dpkg -i": m[f"{label}/install"] / m["dpkg-i"],
            "install / unzip": m[f"{label}/install"] / m["unzip"],
            "upgrade / dpkg upgrade": m[f"{label}/upgrade"] / m["dpkg-upgrade"],
            "upgrade 1% / install": m[f"{label}/upgrade-1pct"] / install,
            "automatic rollback / install": m[f"{label}/undo"] / install,
            "manual rollback / install": m[f"{label}/rollback"] / install,
            "uninstall / dpkg -r": m[f"{label}/uninstall"] / m["dpkg-r"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the other checkout's agent/ directory")
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=RESULTS / "work")
    parser.add_argument("--fs", choices=("image", "here"), default="image",
                        help="the trials on a journaled ext4 image in --work (as root), or in --work itself")
    parser.add_argument("--fs-size", type=float, default=8.0, metavar="GIB")
    args = parser.parse_args(argv)
    work = args.work.absolute()
    with trialfs.TrialFilesystem(work, args.fs, int(args.fs_size * trialfs.GIB), name="ab-trialfs") as fs:
        out = measure(args.before, args.files, args.reps, work, fs.root)
        out["trial_filesystem"] = fs.info
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
