"""Fixtures: a fresh sandbox root per test, with a Plesk version file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.root``: the test needs root (mounts, chattr); said once, here."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root (marker `root`)")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/local/psa").mkdir(parents=True)
    (r / "usr/local/psa/version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (r / "usr/local/mgr5/etc").mkdir(parents=True)
    (r / "var/lib").mkdir(parents=True)  # as on a server: the agent creates only its own dir
    return r


@pytest.fixture
def pkgs(tmp_path: Path) -> Path:
    p = tmp_path / "pkgs"
    p.mkdir()
    return p
