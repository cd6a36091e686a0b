from __future__ import annotations

import pytest

from mgr_agent.archive import check_name, sanitize_mode
from mgr_agent.errors import UnsafeArchive
from mgr_agent.limits import Limits


@pytest.mark.parametrize(("name", "rule"), [
    ("../x", "path-traversal"), ("a/../../x", "path-traversal"), ("/etc/passwd", "absolute-path"),
    ("a\\b", "backslash"), ("C:/x", "drive-letter"), ("a//b", "empty-component"),
    ("./a", "empty-component"), ("a\x01b", "control-character"), ("a\x85", "control-character"),
    ("x" * 300, "name-too-long"), ("a/" * 600 + "b", "path-too-long"), ("", "empty-name"),
])
def test_bad_names(name: str, rule: str) -> None:
    with pytest.raises(UnsafeArchive, match=f"rule: {rule}"):
        check_name(name, Limits())


def test_good_names() -> None:
    assert check_name("etc/xml/ispmgr_mod_x.xml", Limits()) == "etc/xml/ispmgr_mod_x.xml"
    assert check_name("htdocs/", Limits()) == "htdocs"
    assert check_name("skins/имя.png", Limits()) == "skins/имя.png"


def test_modes_lose_setuid_and_foreign_write() -> None:
    assert sanitize_mode(0o6777) == 0o755
    assert sanitize_mode(0o664) == 0o644
