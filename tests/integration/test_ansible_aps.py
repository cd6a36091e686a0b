"""The collection's `aps` module for real: ansible-playbook against a root on this machine.

Check mode first (nothing written), then for real (ispmgr.conf and aps_settings.xml byte for
byte as expected, the core restarted once), then again (changed=false); a refusal names
the item and leaves the files alone. The argument_spec against the documentation, and the
command words, are in tests/unit/test_ansible_modules.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, snapshot
from tests.integration.test_ansible import ansible_env
from tests.integration.test_aps import CONF, MGR, panel  # noqa: F401 (a fixture)
from tests.integration.test_restart import _spawn_core
from tests.unit.test_aps_settings import EXAMPLE
from tests.unit.test_png_findings import make_png

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
AGENT = Path(sys.executable).parent / "mgr-agent"
EXAMPLE_PLAYBOOK = REPO / "deploy/examples/aps.yml"
RECAP = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", re.M)

yaml = pytest.importorskip("yaml", reason="PyYAML comes with ansible-core (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed "
                                "(pip install -e '.[test]')")

TASK = {
    "repositories": [{"url": "https://apps.example.com/repo.atom"},
                     {"url": "https://apscatalog.example/all.atom", "state": "absent"}],
    "update_rules": [{"name": "WordPress", "quantity": 3, "force": True},
                     {"name": "Typo3", "version": "12.4.10-1"},
                     {"name": "Prestashop", "state": "absent"}],
    "default_rules": [{"name": "WordPress", "type": "earliest"}],
    "images": [{"name": "Typo3", "file": "typo3.png"}, {"name": "joomla", "state": "absent"}],
    "default_image": "generic.png",
}


def want_conf() -> bytes:
    return CONF.replace(b"ApsExtRepository https://apscatalog.example/all.atom\n",
                        b"ApsExtRepository https://apps.example.com/repo.atom\n")


def want_settings() -> bytes:
    return (EXAMPLE
            .replace(b'defimg="aps.png"', b'defimg="generic.png"')
            .replace(b"\n    <apsimg name='joomla'>joomla.png</apsimg>", b"")
            .replace(b"wordpress.png</apsimg>\n",
                     b"wordpress.png</apsimg>\n    <apsimg name=\"Typo3\">typo3.png</apsimg>\n")
            .replace(b'<onupdate name="WordPress"/>',
                     b'<onupdate name="WordPress" type="latest" quantity="3" force="yes"/>')
            .replace(b'\n    <onupdate   name="Prestashop"  quantity="2" />', b"")
            .replace(b'<onupdate name="phpBB" force="yes"/>',
                     b'<onupdate name="phpBB" force="yes"/>\n'
                     b'    <onupdate name="Typo3" type="definite">12.4.10-1</onupdate>')
            .replace(b'<defver name="joomla" type="latest"/>',
                     b'<defver name="joomla" type="latest"/>\n'
                     b'    <defver name="WordPress" type="earliest"/>'))


@pytest.fixture
def host(panel: Path) -> Path:  # noqa: F811 (the fixture imported above)
    """test_aps's panel root, with the images TASK maps and one of the wrong size."""
    img = panel / MGR / "skins/common/img"
    for name in ("typo3", "generic"):
        (img / f"{name}.png").write_bytes(make_png(32, 32))
    (img / "big.png").write_bytes(make_png(64, 64))
    return panel


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(ansible_env(tmp_path), ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")


def play(root: Path, tmp_path: Path, task: dict[str, Any], *args: str) -> tuple[int, str, Any]:
    """Run one mgr.agent.aps task on localhost; (rc, output, the task's registered result)."""
    book = tmp_path / "aps.yml"
    book.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "aps", "mgr.agent.aps": dict(task, root=str(root), executable=str(AGENT)),
                   "register": "out", "ignore_errors": True},
                  {"ansible.builtin.copy": {"content": "{{ out | to_json }}",
                                            "dest": str(tmp_path / "out.json")},
                   "check_mode": False}]}]))
    done = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(book), *args],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr, json.loads((tmp_path / "out.json").read_text())


def example(root: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    """deploy/examples/aps.yml with TASK as its variables; (changed count, output)."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[panels]\nlocalhost ansible_connection=local mgr_agent_root={root} "
                         f"mgr_agent_executable={AGENT}\n")
    variables = tmp_path / "aps-vars.yml"
    variables.write_text(yaml.safe_dump({f"aps_{k}": v for k, v in TASK.items()}))
    done = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(EXAMPLE_PLAYBOOK),
                           "-e", f"@{variables}", *args],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=300, check=False)
    out = done.stdout + done.stderr
    recap = RECAP.search(out)
    assert done.returncode == 0 and recap is not None and recap.group(3) == "0", out
    return int(recap.group(2)), out


def test_check_then_real_then_again(host: Path, tmp_path: Path) -> None:
    """The example playbook: --check --diff, for real, again (changed=0), --check again."""
    conf, settings = host / MGR / "etc/ispmgr.conf", host / MGR / "etc/templates/aps_settings.xml"
    before = snapshot(host)
    changed, out = example(host, tmp_path, "--check", "--diff")
    assert changed == 1, out
    assert "+ApsExtRepository https://apps.example.com/repo.atom" in out
    assert '+    <onupdate name="Typo3" type="definite">12.4.10-1</onupdate>' in out
    assert "would set onupdate WordPress: latest x3 force" in out
    assert snapshot(host) == before
    core = _spawn_core(host / MGR / "bin/core")
    try:
        changed, out = example(host, tmp_path, "--diff")
        assert changed == 1, out
        assert core.wait(10) is not None, "the core was not restarted"
    finally:
        core.kill()
        core.wait()
    assert conf.read_bytes() == want_conf()
    assert settings.read_bytes() == want_settings()
    assert example(host, tmp_path)[0] == 0
    assert example(host, tmp_path, "--check")[0] == 0


def test_module_results(host: Path, tmp_path: Path) -> None:
    rc, out, res = play(host, tmp_path, dict(TASK, restart=False), "--check")
    assert rc == 0 and res["changed"] and len(res["changes"]) == 9, out
    assert res["repositories"] == ["https://apscatalog.example/all.atom"]   # check mode: as it is
    rc, out, res = play(host, tmp_path, dict(TASK, restart=False))
    assert rc == 0 and res["changed"] and res["restart"] == [], out
    assert res["repositories"] == ["https://apps.example.com/repo.atom"] and res["agent_via"] == "cli"
    assert [c["item"] for c in res["changes"]] == ["repository", "repository", "update_rule", "update_rule",
                                                  "update_rule", "default_rule", "image", "image",
                                                  "default_image"]
    rc, out, res = play(host, tmp_path, TASK)
    assert rc == 0 and res["changed"] is False and res["changes"] == [] and res["restart"] == [], out


def test_a_refusal_names_the_item_and_changes_nothing_else(host: Path, tmp_path: Path) -> None:
    task = {"images": [{"name": "Drupal", "file": "big.png"}], "restart": False}
    before = snapshot(host)
    _, out, res = play(host, tmp_path, task)
    assert res["failed"] and res["rc"] == 3, out
    assert res["msg"].startswith("image Drupal: ") and "64x64" in res["msg"]
    assert res["error"]["code"] == "aps-invalid-settings"
    assert snapshot(host) == before
    _, out, res = play(host, tmp_path, {"images": [{"name": "Drupal"}]})
    assert res["failed"] and "file" in res["msg"], out

