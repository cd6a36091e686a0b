"""Plesk's product root under a root prefix, and symlink checks anchored at ``/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgr_agent.errors import Conflict
from mgr_agent.fsutil import check_no_symlink
from mgr_agent.layout import Layout
from mgr_agent.panels.plesk import product_root


def test_default_without_psa_conf(tmp_path: Path) -> None:
    assert product_root(Layout.at(tmp_path)) == "usr/local/psa"


def test_psa_conf_names_the_product_root(tmp_path: Path) -> None:
    (tmp_path / "etc/psa").mkdir(parents=True)
    (tmp_path / "etc/psa/psa.conf").write_text("# comment\nPRODUCT_ROOT_D   /opt/psa/\nOTHER x\n")
    assert product_root(Layout.at(tmp_path)) == "opt/psa"


@pytest.mark.parametrize("target", ["/opt/psa", "../../opt/psa"])
def test_links_are_followed_inside_the_root(tmp_path: Path, target: str) -> None:
    (tmp_path / "opt/psa").mkdir(parents=True)
    (tmp_path / "usr/local").mkdir(parents=True)
    (tmp_path / "usr/local/psa").symlink_to(target)
    assert product_root(Layout.at(tmp_path)) == "opt/psa"


def test_a_link_leading_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "usr/local").mkdir(parents=True)
    (tmp_path / "usr/local/psa").symlink_to("../../../elsewhere")
    assert product_root(Layout.at(tmp_path)) == "usr/local/psa"


def test_link_loops_end(tmp_path: Path) -> None:
    (tmp_path / "usr/local").mkdir(parents=True)
    (tmp_path / "usr/local/psa").symlink_to("/usr/local/psa")
    assert product_root(Layout.at(tmp_path)) == "usr/local/psa"


def test_check_no_symlink_anchored_at_slash(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    check_no_symlink(Path("/"), tmp_path / "real/file")
    with pytest.raises(Conflict, match="is a symbolic link"):
        check_no_symlink(Path("/"), tmp_path / "link/file")
