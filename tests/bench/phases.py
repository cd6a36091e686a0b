"""Where one mgr-agent command spends its wall time, from its own progress lines.

    python -m tests.bench.phases --root R install X.zip

Runs the real CLI (without ``--json``, so that it prints its ``···`` progress lines on
stderr) and prints each line with the time since the start and since the line before:
each step's duration is on the line that follows it.  No profiler overhead; for the
functions inside a step, use ``python -m cProfile -s cumtime -m mgr_agent ...``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.trials import REPO, env


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = [sys.executable, "-m", "mgr_agent", *args]
    os.sync()
    start = previous = time.perf_counter()
    print(f"{'at':>8} {'step':>8}  line")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env(), cwd=REPO) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            now = time.perf_counter()
            print(f"{now - start:8.3f} {now - previous:8.3f}  {line.rstrip()}")
            previous = now
        out = proc.stdout.read()
        rc = proc.wait()
    end = time.perf_counter()
    print(f"{end - start:8.3f} {end - previous:8.3f}  exit {rc}")
    if out.strip():
        print(out.rstrip())
    return rc


if __name__ == "__main__":
    sys.exit(main())
