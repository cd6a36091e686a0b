"""Kill at random moments (issue 3, item 2), reduced pass: the full one is
``python -m tests.reliability`` (200 trials over the whole run, 100 over the transaction).

An upgrade of a package with a few hundred files (a Plesk extension and an ispmanager
plugin, alternately) is SIGKILLed after a random delay: within its measured no-fault run
time, or within its transaction (counted from the moment it holds the lock).  After
``recover`` the tree must be the old or the new version byte for byte, ``list`` and
``info`` must agree with it, and nothing may be left behind.  (That a second ``recover``
is a no-op is checked by the runner and, at every fault point, by test_crash.py.)  See
``tests/reliability/random_kill.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import random_kill

TRIALS = 10  # per anchor
FILES = 150  # the runner uses 300


@pytest.mark.slow
def test_random_kills_always_recover_to_a_complete_version(tmp_path: Path) -> None:
    fixtures = random_kill.build_all(tmp_path, files=FILES)
    failed: list[random_kill.Trial] = []
    for anchor in ("start", "lock"):
        summary = random_kill.run_trials(fixtures, tmp_path, TRIALS, anchor=anchor, seed=20261121,
                                         stratified=True, again=False)
        print(f"random kills from the {anchor}: {summary.to_dict()}")
        assert summary.trials == TRIALS
        assert summary.to_old + summary.to_new + summary.completed + summary.failures == TRIALS
        failed += summary.failed
    assert not failed, "\n\n".join(
        f"trial {t.index} ({t.panel}, killed {t.delay * 1000:.0f} ms after the {t.anchor}): "
        f"{t.error}\nroot kept at {t.kept}" for t in failed)
