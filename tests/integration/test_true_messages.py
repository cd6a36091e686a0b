"""Every message is true (issue 11): progress lines, summaries, `call` and the health window."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgr_agent.layout import Layout
from mgr_agent.sandbox.samples import Tree, ispmanager_files, plesk_files, write_dir, write_zip
from mgr_agent.sandbox.standin import install_standin
from mgr_agent.sandbox.standin.core import our_cores
from tests.helpers import cli

MGR = "usr/local/mgr5"


def _progress(stderr: str) -> list[str]:
    return [line.removeprefix("··· ") for line in stderr.splitlines() if line.startswith("··· ")]


def test_plesk_progress_says_what_happens(root: Path, pkgs: Path) -> None:
    run = cli(root, "install", str(write_zip(plesk_files(), pkgs / "a.zip")), as_json=False)
    assert run.rc == 0, run
    steps = _progress(run.stderr)
    assert not any("restarting" in s or "watching" in s for s in steps), steps
    assert "staging 11 file(s)" in steps
    assert "  Plesk loads extension files on the next request; no restart needed" in \
        run.stdout.splitlines()

    broken = plesk_files("demo-ext", "1.1", post_install="exit(1);")
    failed = cli(root, "install", str(write_zip(broken, pkgs / "b.zip")), as_json=False)
    assert failed.rc == 8
    assert "Plesk loads" not in failed.stdout + failed.stderr, "said only after a success"
    assert not any("restarting" in s for s in _progress(failed.stderr))

    gone = cli(root, "uninstall", "demo-ext", as_json=False)
    assert gone.rc == 0, gone
    steps = _progress(gone.stderr)
    assert not any(s.startswith("staging") for s in steps), "no 'staging 0 file(s)'"
    assert "removing 10 file(s)" in steps
    out = gone.stdout.splitlines()
    assert "  files: 0 added, 0 replaced, 10 removed, 0 unchanged, 1 data kept" in out
    assert any(line.endswith("kept 1 data file(s) under usr/local/psa/var/modules/demo-ext (pass "
                             "--purge to remove them)") for line in out + gone.stderr.splitlines())


def test_data_kept_counts_what_is_on_disk(root: Path, pkgs: Path) -> None:
    assert cli(root, "install", str(write_zip(plesk_files(), pkgs / "a.zip"))).rc == 0
    data = root / "usr/local/psa/var/modules/demo-ext"
    (data / "cache").mkdir()
    (data / "cache/made-at-runtime.json").write_text("{}")
    doc = cli(root, "uninstall", "demo-ext").json
    assert doc["plan"]["summary"]["kept"] == 2
    assert doc["warnings"] == ["kept 2 data file(s) under usr/local/psa/var/modules/demo-ext "
                               "(pass --purge to remove them)"]


def test_no_watching_without_anything_to_watch(root: Path, pkgs: Path) -> None:
    run = cli(root, "install", str(write_zip(ispmanager_files(), pkgs / "a.zip")), as_json=False)
    assert run.rc == 0, run
    assert not any(s.startswith("watching") for s in _progress(run.stderr))
    assert "no ispmgr.log and no core here: health not checked" in run.stdout


# ------------------------------------------------------------------ data-only answers
MAIL_XML = """<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <handler name="mail.sh" type="xml"><func name="mail.edit"/>{bare}</handler>
  <metadata name="mail.edit" type="form">
    <form><field name="email"><input type="text" name="email"/></field></form>
  </metadata>
</mgrdata>
"""
MAIL_SH = """#!/bin/sh
cat >/dev/null
echo '<?xml version="1.0" encoding="UTF-8"?>'
echo '<doc><email>admin@example.com</email></doc>'
"""


def _mail(*, bare: bool = False) -> Tree:
    """A plugin whose handler answers mail.edit (described in the XML) with data only; with
    ``bare`` also mail.bare, which no <metadata> describes."""
    xml = MAIL_XML.replace("{bare}", '<func name="mail.bare"/>' if bare else "")
    return {"etc/xml/ispmgr_mod_mail.xml": (xml.encode(), 0o644),
            "addon/mail.sh": (MAIL_SH.encode(), 0o755)}


@pytest.fixture
def standin(root: Path) -> Iterator[Layout]:
    layout = Layout.at(root)
    install_standin(layout)
    yield layout
    subprocess.run([str(layout.mgr / "sbin/mgrctl"), "-m", "ispmgr", "exit"], check=False,
                   capture_output=True, timeout=30)
    for proc in our_cores(layout.mgr):
        proc.kill()


def test_call_accepts_a_form_answered_with_its_data_only(root: Path) -> None:
    write_dir(_mail(bare=True), root / MGR)
    run = cli(root, "call", "mail.edit")
    assert run.rc == 0, run
    doc = run.json
    assert doc["verdict"] == "page" and doc["steps"][0]["holds"] == "data"
    assert "<email>admin@example.com</email>" in doc["xml"]
    # the same answer for a func whose page no plugin XML describes is not a page
    bare = cli(root, "call", "mail.bare")
    assert bare.rc == 13
    assert 'no plugin XML has <metadata name="mail.bare">' in bare.json["reason"]


def test_standin_core_accepts_data_only_answers(standin: Layout, pkgs: Path) -> None:
    root = standin.root
    run = cli(root, "install", str(write_zip(_mail(), pkgs / "mail.zip")), "--health-window", "1")
    assert run.rc == 0, (run.stdout, run.stderr)
    assert any(n.startswith("healthy for 1 s: core running") for n in run.json["notes"])
    done = subprocess.run([str(standin.mgr / "sbin/mgrctl"), "-m", "ispmgr", "mail.edit"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and "<email>admin@example.com</email>" in done.stdout, done
    log = (standin.mgr / "var/ispmgr.log").read_text()
    assert "plugin mail loaded" in log and " ERR " not in log


# ------------------------------------------------------------------ the health window
def test_health_window_reads_a_log_that_appears_during_it(standin: Layout, pkgs: Path) -> None:
    """No core and no ispmgr.log before the switch: the restart starts the core, which
    creates the log and reports the broken handler in it."""
    root = standin.root
    log = standin.mgr / "var/ispmgr.log"
    log.unlink(missing_ok=True)
    assert not our_cores(standin.mgr)
    broken = {**_mail(), "addon/mail.sh": (b"#!/bin/sh\ncat >/dev/null\necho not-xml\n", 0o755)}
    run = cli(root, "install", str(write_zip(broken, pkgs / "broken.zip")), "--health-window", "10")
    assert run.rc == 8, (run.stdout, run.stderr)
    err = run.json["error"]
    assert err["details"]["cause_code"] == "health-check-failed"
    assert any("mail.sh" in line for line in err["details"]["log_lines"]), json.dumps(err)
    assert not (standin.mgr / "etc/xml/ispmgr_mod_mail.xml").exists(), "rolled back"
