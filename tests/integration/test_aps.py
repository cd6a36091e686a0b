"""`mgr-agent aps` through the real CLI, on real files, with a repository served on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgr_agent.layout import Layout
from mgr_agent.lock import Lock
from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests.helpers import cli, snapshot
from tests.integration.test_restart import _spawn_core
from tests.unit.test_aps_settings import EXAMPLE
from tests.unit.test_png_findings import make_png

MGR = "usr/local/mgr5"
CONF = (b"# ispmanager\nPath phpini /etc/php.ini\n\nApsExtRepository https://apscatalog.example/all.atom\n"
        b"Listen 1500\n")

FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:a="http://apstandard.com/ns/repo/1">
  <id>http://127.0.0.1/1.atom</id><title>test repository</title>
{entries}
</feed>
"""
ENTRY = """  <entry>
    <id>tag:example.org,2024:/1/{name}/{version}-{release}</id>
    <title>{name}</title>
    <a:name>{name}</a:name><a:version>{version}</a:version><a:release>{release}</a:release>
    <link rel="http://apstandard.com/ns/repo/1#bits" href="{name}-{version}-{release}.app.zip"/>
  </entry>"""
PACKAGES = [("Drupal", "7.31", "36"), ("Drupal", "7.31", "5"), ("Drupal", "10.1.0", "rc1"),
            ("Drupal", "10.0.12", "1"), ("WordPress", "6.0", "beta2"), ("WordPress", "5.9.9", "1"),
            ("WordPress", "6.0.1", "1"), ("joomla", "4.9.1", "2"), ("joomla", "4.10", "1")]


@pytest.fixture
def panel(root: Path) -> Path:
    mgr = root / MGR
    (mgr / "etc/templates").mkdir(parents=True)
    (mgr / "etc/ispmgr.conf").write_bytes(CONF)
    (mgr / "etc/templates/aps_settings.xml").write_bytes(EXAMPLE)
    img = mgr / "skins/common/img"
    img.mkdir(parents=True)
    for name in ("aps", "drupal", "joomla", "wordpress"):
        (img / f"{name}.png").write_bytes(make_png(32, 32))
    return root


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A directory served over plain http on 127.0.0.1 (a free port); yields the base URL."""
    docs = tmp_path / "www"
    docs.mkdir()
    entries = "\n".join(ENTRY.format(name=n, version=v, release=r) for n, v, r in PACKAGES)
    (docs / "repo.atom").write_text(FEED.format(entries=entries))
    (docs / "broken.xml").write_text("<feed><entry></feed>")
    (docs / "empty.xml").write_text("<feed/>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(docs))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def conf(root: Path) -> bytes:
    return (root / MGR / "etc/ispmgr.conf").read_bytes()


def test_repo_add_check_restart_list_remove(panel: Path, served: str, tmp_path: Path) -> None:
    url = f"{served}/repo.atom"
    run = cli(panel, "aps", "repo", "add", url, "--check")
    assert run.rc == 2 and "--insecure" in run.json["error"]["hint"]
    assert conf(panel) == CONF
    core = _spawn_core(panel / MGR / "bin/core")
    try:
        run = cli(panel, "aps", "repo", "add", url, "--check", "--insecure")
        assert run.rc == 0, run.stdout + run.stderr
        doc = run.json
        assert doc["changed"] and doc["data"]["packages"] == len(PACKAGES) and doc["data"]["scripts"] == 3
        assert any("plain http" in w for w in doc["warnings"])
        assert any("ended 1 core process" in n for n in doc["notes"]), doc["notes"]
        assert core.wait(10) is not None
    finally:
        core.kill()
        core.wait()
    assert conf(panel) == CONF.replace(b"all.atom\n", b"all.atom\nApsExtRepository " + url.encode() + b"\n")
    again = cli(panel, "aps", "repo", "add", url, "--no-restart")
    assert again.rc == 0 and again.json["changed"] is False
    listed = cli(panel, "aps", "repo", "list").json["data"]["repositories"]
    assert [r["url"] for r in listed] == ["https://apscatalog.example/all.atom", url]
    dry = cli(panel, "aps", "repo", "remove", url, "--dry-run", as_json=False)
    assert dry.rc == 0 and f"-ApsExtRepository {url}" in dry.stdout
    assert len(conf(panel).splitlines()) == 6
    removed = cli(panel, "aps", "repo", "remove", url, "--no-restart")
    assert removed.json["changed"] and conf(panel) == CONF
    assert cli(panel, "aps", "repo", "remove", url).json["changed"] is False


@pytest.mark.parametrize(("path", "rc", "code"), [
    ("broken.xml", 3, "aps-invalid-repository"),
    ("missing.xml", 15, "download-failed"),
])
def test_repo_add_check_refuses_and_writes_nothing(panel: Path, served: str, path: str, rc: int,
                                                   code: str) -> None:
    before = snapshot(panel)
    run = cli(panel, "aps", "repo", "add", f"{served}/{path}", "--check", "--insecure", "--no-restart")
    assert (run.rc, run.json["error"]["code"]) == (rc, code), run.stdout
    assert snapshot(panel) == before


def test_repo_add_refusals(panel: Path, served: str, root: Path) -> None:
    run = cli(panel, "aps", "repo", "add", "ftp://x.example/r.xml")
    assert run.rc == 3 and "https:// or http://" in run.json["error"]["message"]
    warned = cli(panel, "aps", "repo", "add", f"{served}/empty.xml", "--check", "--insecure", "--no-restart")
    assert warned.rc == 0 and any("no APS package entries" in w for w in warned.json["warnings"])
    (root / MGR / "etc/ispmgr.conf").unlink()
    assert cli(root, "aps", "repo", "list").rc == 4


def test_resolve_from_a_served_repository_with_current_state(panel: Path, served: str,
                                                             tmp_path: Path) -> None:
    current = tmp_path / "current.json"
    current.write_text(json.dumps({"Drupal": {"allowed": ["7.31-5", "7.31-36"], "default": "7.31-5"},
                                   "WordPress": ["5.8-1"]}))
    assert cli(panel, "aps", "resolve", "--repo", f"{served}/repo.atom").rc == 2
    run = cli(panel, "aps", "resolve", "--repo", f"{served}/repo.atom", "--insecure",
              "--current", str(current))
    assert run.rc == 0, run.stdout + run.stderr
    got = {s["name"]: s for s in run.json["data"]["scripts"]}
    # Drupal: definite 7.31-36, not forced, versions still allowed: unchanged, default kept
    assert got["Drupal"]["allowed"] == ["7.31-5", "7.31-36"] and got["Drupal"]["default"] == "7.31-5"
    assert got["Drupal"]["available"] == ["7.31-5", "7.31-36", "10.0.12-1", "10.1.0-rc1"]
    # WordPress: no rule = latest; its only allowed version left the repository
    assert got["WordPress"]["allowed"] == ["6.0.1-1"] and got["WordPress"]["rule_applied"]
    assert got["joomla"]["allowed"] == ["4.10-1"]
    text = cli(panel, "aps", "resolve", "--versions", str(tmp_path / "www/repo.atom"), as_json=False)
    assert text.rc == 0 and "Drupal: allowed 7.31-36; default 7.31-36" in text.stdout


def test_resolve_refuses_broken_rules(panel: Path, tmp_path: Path) -> None:
    versions = tmp_path / "v.json"
    versions.write_text('{"Drupal": ["1.0", "2.0"]}')
    settings = panel / MGR / "etc/templates/aps_settings.xml"
    settings.write_text('<doc><updaterules><onupdate name="Drupal" quantity="0"/></updaterules></doc>')
    run = cli(panel, "aps", "resolve", "--versions", str(versions))
    assert run.rc == 3 and "quantity" in run.json["error"]["message"]


def test_check_exit_codes_and_findings(panel: Path) -> None:
    ok = cli(panel, "aps", "check")
    assert ok.rc == 0 and ok.json["data"]["findings"] == []
    (panel / MGR / "skins/common/img/joomla.png").write_bytes(make_png(48, 48))
    bad = cli(panel, "aps", "check")
    assert bad.rc == 3
    assert [(f["code"], f["line"]) for f in bad.json["data"]["findings"]] == [("aps-image-size", 6)]
    text = cli(panel, "aps", "check", as_json=False)
    assert "error[aps-image-size] etc/templates/aps_settings.xml:6:" in text.stderr


def test_set_and_unset_rules_round_trip_byte_for_byte(panel: Path) -> None:
    path = panel / MGR / "etc/templates/aps_settings.xml"
    dry = cli(panel, "aps", "set-rule", "update", "phpBB", "--type", "earliest", "--quantity", "2",
              "--dry-run")
    assert dry.json["changed"] and path.read_bytes() == EXAMPLE
    run = cli(panel, "aps", "set-rule", "update", "phpBB", "--type", "earliest", "--quantity", "2")
    assert run.rc == 0 and run.json["changed"]
    assert path.read_bytes() == EXAMPLE.replace(b'<onupdate name="phpBB" force="yes"/>',
                                                b'<onupdate name="phpBB" type="earliest" quantity="2"/>')
    assert not cli(panel, "aps", "set-rule", "update", "phpBB", "--type", "earliest",
                   "--quantity", "2").json["changed"]
    # the same meaning spelled differently is not a change either
    assert not cli(panel, "aps", "set-rule", "update", "WordPress").json["changed"]
    add = cli(panel, "aps", "set-rule", "default", "Typo3", "--version", "12.4.10-1")
    assert add.json["changed"]
    assert b'<defver name="Typo3" type="definite">12.4.10-1</defver>' in path.read_bytes()
    assert cli(panel, "aps", "unset-rule", "default", "Typo3").json["changed"]
    assert cli(panel, "aps", "set-rule", "update", "phpBB", "--force").json["changed"]
    assert path.read_bytes() == EXAMPLE.replace(b'<onupdate name="phpBB" force="yes"/>',
                                                b'<onupdate name="phpBB" type="latest" force="yes"/>')
    assert cli(panel, "aps", "check").rc == 0


@pytest.mark.parametrize("args", [
    ["update", "X", "--type", "definite"],
    ["update", "X", "--version", "1.0", "--type", "latest"],
    ["update", "X", "--quantity", "0"],
    ["update", "X", "--version", "1.0", "--quantity", "2"],
    ["default", "X", "--quantity", "2"],
    ["default", "X", "--force"],
])
def test_set_rule_refuses_rules_the_panel_would_not_read(panel: Path, args: list[str]) -> None:
    before = snapshot(panel)
    run = cli(panel, "aps", "set-rule", *args)
    assert run.rc == 2, run.stdout
    assert snapshot(panel) == before


def test_set_image_checks_the_png(panel: Path) -> None:
    img = panel / MGR / "skins/common/img"
    (img / "big.png").write_bytes(make_png(64, 32))
    (img / "fake.png").write_bytes(b"GIF89a" + bytes(40))
    (img / "typo3.png").write_bytes(make_png(32, 32, 0))
    before = snapshot(panel)
    for name, code in (("big.png", "64x32"), ("fake.png", "not a PNG"), ("none.png", "does not exist"),
                       ("../x.png", "plain file name")):
        run = cli(panel, "aps", "set-image", "--script", "Typo3", name)
        assert run.rc == 3 and code in run.json["error"]["message"], run.stdout
    assert snapshot(panel) == before
    path = panel / MGR / "etc/templates/aps_settings.xml"
    assert cli(panel, "aps", "set-image", "--script", "Typo3", "typo3.png").json["changed"]
    assert cli(panel, "aps", "set-image", "--default", "typo3.png").json["changed"]
    assert path.read_bytes() == EXAMPLE.replace(b'defimg="aps.png"', b'defimg="typo3.png"').replace(
        b"<apsimg name=\"WordPress\">wordpress.png</apsimg>\n",
        b"<apsimg name=\"WordPress\">wordpress.png</apsimg>\n    <apsimg name=\"Typo3\">typo3.png</apsimg>\n")
    assert cli(panel, "aps", "unset-image", "Typo3").json["changed"]
    assert cli(panel, "aps", "set-image", "--default", "aps.png").json["changed"]
    assert path.read_bytes() == EXAMPLE


def test_set_rule_creates_the_file_and_waits_for_the_lock(root: Path) -> None:
    (root / MGR / "etc/templates").mkdir(parents=True)
    path = root / MGR / "etc/templates/aps_settings.xml"
    lock = Lock(Layout.at(root).lock_file, "test holds the lock")
    lock.acquire(0)
    try:
        busy = cli(root, "aps", "set-rule", "update", "Drupal", "--wait", "0")
        assert busy.rc == 9 and not path.exists()
    finally:
        lock.release()
    run = cli(root, "aps", "set-rule", "update", "Drupal", "--quantity", "3")
    assert run.rc == 0 and path.read_bytes() == (
        b'<doc>\n  <updaterules>\n    <onupdate name="Drupal" type="latest" quantity="3"/>\n'
        b"  </updaterules>\n</doc>\n")
    assert cli(root, "aps", "unset-rule", "default", "Drupal").json["changed"] is False


def test_help_lists_the_subcommands() -> None:
    done = subprocess.run([sys.executable, "-m", "mgr_agent", "aps", "--help"],
                          capture_output=True, text=True, check=True)
    for verb in ("repo", "check", "resolve", "set-rule", "unset-rule", "set-image", "unset-image"):
        assert verb in done.stdout


def test_a_plugin_package_carries_its_aps_image(panel: Path, pkgs: Path) -> None:
    tree = ispmanager_files("myapp", "1.0", extra={"skins/common/img/myapp.png": (make_png(32, 32), 0o644)})
    run = cli(panel, "install", str(write_zip(tree, pkgs / "myapp.zip")), "--no-restart")
    assert run.rc == 0, run.stdout
    assert cli(panel, "aps", "set-image", "--script", "MyApp", "myapp.png").json["changed"]
    assert cli(panel, "aps", "check").rc == 0
    assert cli(panel, "uninstall", "myapp", "--no-restart").rc == 0
    gone = cli(panel, "aps", "check")
    assert gone.rc == 3
    assert [f["code"] for f in gone.json["data"]["findings"]] == ["aps-image-missing"]
