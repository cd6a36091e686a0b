"""ApsExtRepository lines of ispmgr.conf: every other byte stays."""

from __future__ import annotations

import pytest

from mgr_agent.aps import InvalidRepository
from mgr_agent.aps.conf import added, check_url, removed, repositories

CONF = (b"# ispmanager configuration\n"
        b"path phpini /etc/php.ini\n"
        b"\n"
        b"#ApsExtRepository http://commented.example/repo.xml\n"
        b"ApsExtRepository https://a.example/repo.xml\n"
        b"  ApsExtRepository\thttp://b.example/r.xml  \n"
        b"Option DisableLongPolling\n"
        b"SomethingApsExtRepository http://not-it.example/\n"
        b"Listen 1500")  # no final newline


def test_lists_only_real_repository_lines() -> None:
    assert [(r.url, r.line) for r in repositories(CONF)] == [
        ("https://a.example/repo.xml", 5), ("http://b.example/r.xml", 6)]


def test_add_goes_after_the_last_repository_and_is_idempotent() -> None:
    new = added(CONF, "https://c.example/x.xml")
    assert new == CONF.replace(b"r.xml  \n", b"r.xml  \nApsExtRepository https://c.example/x.xml\n")
    assert added(new, "https://c.example/x.xml") == new
    assert added(CONF, "http://b.example/r.xml") == CONF


def test_add_without_repositories_appends_with_the_files_line_ending() -> None:
    assert added(b"Listen 1500", "https://c/x") == b"Listen 1500\nApsExtRepository https://c/x\n"
    crlf = b"# c\r\nListen 1500\r\n"
    assert added(crlf, "https://c/x") == crlf + b"ApsExtRepository https://c/x\r\n"
    assert added(b"", "https://c/x") == b"ApsExtRepository https://c/x\n"


def test_remove_drops_only_that_url_and_round_trips() -> None:
    new = added(CONF, "https://c.example/x.xml")
    assert removed(new, "https://c.example/x.xml") == CONF
    assert removed(CONF, "https://a.example/repo.xml") == CONF.replace(
        b"ApsExtRepository https://a.example/repo.xml\n", b"")
    assert removed(CONF, "http://commented.example/repo.xml") == CONF
    twice = CONF + b"\nApsExtRepository https://a.example/repo.xml\n"
    assert [r.url for r in repositories(removed(twice, "https://a.example/repo.xml"))] == [
        "http://b.example/r.xml"]


@pytest.mark.parametrize(("url", "rule"), [
    ("ftp://a.example/r.xml", "https:// or http://"),
    ("/var/repo.xml", "https:// or http://"),
    ("https://a.example/my repo.xml", "spaces"),
    ("https://a.example/r.xml\nListen 1", "spaces"),
    ("https:///r.xml", "no host"),
])
def test_urls_the_panel_cannot_use_are_refused(url: str, rule: str) -> None:
    with pytest.raises(InvalidRepository, match=rule):
        check_url(url)


def test_plain_http_is_a_warning() -> None:
    assert check_url("https://a.example/r.xml") == []
    assert "plain http" in check_url("http://a.example/r.xml")[0]
