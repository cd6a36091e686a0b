"""The container helper itself: on a machine that can boot a container, a boot that fails is
a failure with the boot log, never a skip (a skip would hide a broken system test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.system.container import booted, why_not

pytestmark = pytest.mark.root


def _no_init(merged: Path) -> None:
    """A root without systemd (and so without any init systemd-nspawn --boot could start)."""
    for rel in ("usr/lib/systemd/systemd", "lib/systemd/systemd", "sbin/init", "usr/sbin/init"):
        path = merged / rel
        if path.is_symlink() or path.exists():
            path.unlink()


def test_a_container_that_cannot_boot_fails_and_says_why() -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    with pytest.raises(AssertionError, match="the container did not boot") as failed, \
            booted(f"mgrtest0-{os.getpid()}", prepare=_no_init):
        pytest.fail("a root without an init booted")
    assert "process it depends on ended" in str(failed.value), failed.value
