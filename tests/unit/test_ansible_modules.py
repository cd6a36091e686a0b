"""The collection's module logic without Ansible running it: documented options equal the
argument_spec, option rules, the agent request built from the options, result mapping,
``changed`` and diff computation, and the CLI command line equivalent to a daemon request.
The agent's answers here are ``--json`` documents of the shapes docs/usage.md gives."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "deploy"))
pytest.importorskip("ansible")

from ansible_collections.mgr.agent.plugins.module_utils import agent as agent_utils
from ansible_collections.mgr.agent.plugins.modules import aps, plugin, plugin_info

MODULES = {"aps": aps, "plugin": plugin, "plugin_info": plugin_info}
TYPES = {"str": "str", "path": "path", "bool": "bool", "float": "float", "int": "int"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_documented_options_equal_the_argument_spec(name: str) -> None:
    module = MODULES[name]
    doc = yaml.safe_load(module.DOCUMENTATION)
    _same_options(doc["options"], module.argument_spec(), name)
    for section in ("EXAMPLES", "RETURN"):
        assert yaml.safe_load(getattr(module, section)), f"{name}.{section}"


def _same_options(documented_options: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """Documented options (and suboptions, recursively) equal the argument_spec's."""
    assert set(documented_options) == set(spec), where
    for option, documented in documented_options.items():
        actual, here = spec[option], f"{where}.{option}"
        assert documented["type"] == actual.get("type", "str"), here
        assert documented.get("elements") == actual.get("elements"), here
        assert documented.get("default") == actual.get("default"), here
        assert documented.get("choices") == actual.get("choices"), here
        assert documented.get("required", False) == actual.get("required", False), here
        assert documented["description"], here
        assert ("suboptions" in documented) == ("options" in actual), here
        if "options" in actual:
            _same_options(documented["suboptions"], actual["options"], here)


def params(**kw: Any) -> dict[str, Any]:
    spec = plugin.argument_spec()
    out = {k: v.get("default") for k, v in spec.items()}
    out.update(kw)
    return out


SHA = "a" * 64


@pytest.mark.parametrize(("kw", "problem"), [
    ({"state": "present"}, "state=present needs src"),
    ({"state": "absent"}, "state=absent needs name"),
    ({"state": "rolled_back"}, "state=rolled_back needs name"),
    ({"src": "https://example.com/p.zip"}, "src is a URL: sha256 is required"),
    ({"src": "http://example.com/p.zip", "sha256": SHA}, "src http://example.com/p.zip: only https:// URLs"),
    ({"src": "/p.zip", "sha256": "abc"}, "sha256 must be 64 hex digits, got 'abc'"),
])
def test_option_rules(kw: dict[str, Any], problem: str) -> None:
    found = plugin.validate(params(**kw))
    assert found is not None and found.startswith(problem)


def test_valid_options() -> None:
    assert plugin.validate(params(src="https://example.com/p.zip", sha256=SHA.upper())) is None
    assert plugin.validate(params(name="demo", state="absent")) is None


class Recorded:
    """Answers ``run(op, args)`` with prepared documents, and records the calls."""

    def __init__(self, answers: dict[str, tuple[dict[str, Any], int]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, op: str, args: dict[str, Any] | None = None) -> agent_utils.AgentResult:
        self.calls.append((op, {k: v for k, v in (args or {}).items() if v not in (None, False)}))
        doc, rc = self.answers[op]
        return agent_utils.AgentResult(dict(doc, schema=1), rc, "cli")


def doc(action: str, *, changed: bool = False, version: str | None = "1.1", previous: str | None = "1.0",
        error: dict[str, Any] | None = None, plan: dict[str, Any] | None = None,
        data: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"action": action, "changed": changed, "name": "demo", "panel": "ispmanager",
                           "version": version, "previous_version": previous, "warnings": [],
                           "hooks": [], "tx": "20261127120809292738" if changed else None}
    if error:
        out["error"] = error
    if plan:
        out["plan"] = plan
    if data is not None:
        out["data"] = data
    return out


PLAN = {"summary": {"add": 1, "replace": 2, "remove": 0, "unchanged": 2, "kept": 0},
        "add": ["usr/local/mgr5/addon/new.py"],
        "replace": ["usr/local/mgr5/etc/plugins/ispmgr/demo.xml", "usr/local/mgr5/skins/common/img/demo.txt"],
        "remove": [], "kept": []}
NOT_INSTALLED = {"code": "not-installed", "message": "demo: not installed", "hint": ""}


@pytest.fixture
def pkg(tmp_path: Path) -> str:
    """A package file on the "host" (its content does not matter to the module)."""
    path = tmp_path / "demo.zip"
    path.write_bytes(b"PK")
    return str(path)


def test_a_missing_src_is_refused_before_the_agent_runs(tmp_path: Path) -> None:
    agent = Recorded({})
    out = plugin.run(agent, params(src=str(tmp_path / "none.zip")), False)
    assert out.failed and out.result["error"]["code"] == "not-found" and out.result["rc"] == 4
    assert agent.calls == []


def test_present_maps_the_request_and_the_result(pkg: str) -> None:
    agent = Recorded({"check": (doc("checked", data={}), 0),
                      "install": (doc("upgraded", changed=True, plan=PLAN), 0)})
    out = plugin.run(agent, params(src=pkg, name="demo", sha256=SHA, health_window=2.0), False)
    assert not out.failed
    assert agent.calls == [("check", {"path": pkg, "sha256": SHA}),
                           ("install", {"path": pkg, "sha256": SHA, "health_window": 2.0})]
    r = out.result
    assert (r["changed"], r["action"], r["version"], r["previous_version"], r["rolled_back"]) == \
        (True, "upgraded", "1.1", "1.0", False)
    assert r["tx"] == "20261127120809292738" and r["plan"] == PLAN and r["agent_via"] == "cli"


def test_present_refuses_a_package_of_another_plugin_before_installing(pkg: str) -> None:
    agent = Recorded({"check": (dict(doc("checked", data={}), name="other"), 0)})
    out = plugin.run(agent, params(src=pkg, name="demo"), False)
    assert out.failed and "is the package of other, not demo" in out.result["msg"]
    assert [op for op, _ in agent.calls] == ["check"]


@pytest.mark.parametrize(("answer", "check_mode", "changed"), [
    (doc("unchanged", version="1.1", previous="1.1"), False, False),        # identical reinstall
    (doc("unchanged", version="1.1", previous="1.1"), True, False),
    (doc("planned", plan=PLAN), True, True),                                  # an upgrade, predicted
    (doc("planned", version="1.1", previous="1.1",
         plan={**PLAN, "summary": {"add": 0, "replace": 0, "remove": 0, "unchanged": 4, "kept": 0}}),
     True, False),
])
def test_changed_is_exact(answer: dict[str, Any], check_mode: bool, changed: bool, pkg: str) -> None:
    agent = Recorded({"install": (answer, 0)})
    out = plugin.run(agent, params(src=pkg), check_mode)
    assert not out.failed and out.result["changed"] is changed
    assert agent.calls[0][1].get("dry_run", False) is check_mode


def test_a_rolled_back_upgrade_fails_with_the_cause(pkg: str) -> None:
    error = {"code": "rolled-back", "message": "post-install hook of demo exited with 3 — rolled back to 1.0",
             "hint": "", "details": {"cause_code": "hook-failed", "hook": "post-install",
                                     "output": "cannot migrate\n"}}
    agent = Recorded({"install": (doc("rolled_back", error=error, plan=PLAN), 8)})
    out = plugin.run(agent, params(src=pkg), False)
    assert out.failed
    r = out.result
    assert (r["rolled_back"], r["rc"], r["changed"]) == (True, 8, False)
    assert r["cause"] == {"code": "hook-failed", "hook": "post-install", "output": "cannot migrate\n",
                          "log_lines": None}
    assert r["msg"].startswith("post-install hook of demo exited with 3") and r["error"] == error


def test_a_refusal_fails_with_the_agents_error_and_hint(pkg: str) -> None:
    error = {"code": "downgrade-refused", "message": "demo: 1.0 is older than the installed 1.1",
             "hint": "pass --allow-downgrade to install an older version on purpose"}
    agent = Recorded({"install": (doc("failed", version=None, previous=None, error=error), 6)})
    r = plugin.run(agent, params(src=pkg), False).result
    assert r["rc"] == 6 and r["rolled_back"] is False and "cause" not in r
    assert r["msg"] == ("demo: 1.0 is older than the installed 1.1 (hint: pass --allow-downgrade to install "
                        "an older version on purpose)")


@pytest.mark.parametrize("check_mode", [False, True])
def test_absent_when_not_installed_is_not_a_change(check_mode: bool) -> None:
    agent = Recorded({"uninstall": (doc("failed", version=None, previous=None, error=NOT_INSTALLED), 4)})
    out = plugin.run(agent, params(name="demo", state="absent", purge=True), check_mode)
    assert not out.failed and out.result["changed"] is False and out.result["action"] == "absent"
    assert agent.calls[0][1] == {"name": "demo", "purge": True, **({"dry_run": True} if check_mode else {})}


def history(*rows: tuple[str, str]) -> dict[str, Any]:
    return doc("history", data=[{"tx": f"tx{i}", "op": op, "status": status, "panel": "ispmanager",
                                 "to_version": "1.0"} for i, (op, status) in enumerate(rows)])


def test_rolled_back_twice_does_not_toggle() -> None:
    agent = Recorded({"history": (history(("install", "rolled_back"), ("rollback", "committed"),
                                          ("install", "committed")), 0)})
    out = plugin.run(agent, params(name="demo", state="rolled_back"), False)
    assert not out.failed and out.result["changed"] is False and out.result["action"] == "unchanged"
    assert [op for op, _ in agent.calls] == ["history"]


def test_rolled_back_in_check_mode_predicts_from_the_kept_version() -> None:
    info = doc("info", data={"kept": [{"version": "1.0", "release": "", "kept_at": 1.0}]})
    agent = Recorded({"history": (history(("install", "committed")), 0), "info": (info, 0)})
    r = plugin.run(agent, params(name="demo", state="rolled_back"), True).result
    assert (r["changed"], r["action"], r["version"], r["previous_version"]) == (True, "planned", "1.0", "1.1")
    assert [op for op, _ in agent.calls] == ["history", "info"]
    nothing = Recorded({"history": (history(("install", "committed")), 0),
                        "info": (doc("info", data={"kept": []}), 0)})
    assert plugin.run(nothing, params(name="demo", state="rolled_back"), True).result["changed"] is False


def test_rolled_back_with_nothing_kept_is_not_a_change() -> None:
    error = {"code": "not-installed", "message": "demo: no previous version is kept to roll back to",
             "hint": ""}
    agent = Recorded({"history": (history(("install", "committed")), 0),
                      "rollback": (doc("failed", error=error), 4)})
    r = plugin.run(agent, params(name="demo", state="rolled_back"), False).result
    assert (r["changed"], r["action"]) == (False, "nothing_to_roll_back")


def test_diff_shows_versions_and_the_first_paths() -> None:
    many = {"summary": {"add": 25, "replace": 0, "remove": 1, "unchanged": 0, "kept": 0},
            "add": [f"usr/local/mgr5/f{i:02d}" for i in range(25)], "replace": [], "remove": ["usr/x"]}
    diff = plugin.plan_diff(doc("planned", plan=many))
    assert diff["before"] == "version: 1.0\n"
    lines = diff["after"].splitlines()
    assert lines[:2] == ["version: 1.1", "files: 25 added, 0 replaced, 1 removed, 0 unchanged, 0 data kept"]
    assert lines[2:4] == ["+ usr/local/mgr5/f00", "+ usr/local/mgr5/f01"]
    assert "+ ... and 5 more" in lines and lines[-1] == "- usr/x"
    assert sum(line.startswith("+ usr/") for line in lines) == plugin.DIFF_PATHS
    assert diff["before_header"] == "demo (ispmanager) before"


def test_cli_equivalent_of_a_daemon_request() -> None:
    call = agent_utils.AgentCall(lambda argv: (0, "", ""), root="/srv/root", executable="/opt/x/mgr-agent")
    assert call.argv("install", {"path": "/p.zip", "sha256": SHA, "dry_run": True, "health_window": 0}) == \
        ["/opt/x/mgr-agent", "--root", "/srv/root", "--json", "--no-daemon", "install", "--dry-run",
         "--health-window", "0", "--sha256", SHA, "--", "/p.zip"]
    assert call.argv("history", {"name": "-odd", "limit": 5})[-4:] == ["--limit", "5", "--", "-odd"]
    assert call.socket_path == "/srv/root/run/mgr-agent/agent.sock"


def test_cli_output_that_is_not_schema_1_is_an_error() -> None:
    call = agent_utils.AgentCall(lambda argv: (0, '{"schema": 2, "action": "listed"}', ""),
                                 executable="/bin/true", use_daemon=False)
    res = call.run("list")
    assert not res.ok and res.code == "unsupported-schema"
    broken = agent_utils.AgentCall(lambda argv: (1, "", "Traceback: boom"), executable="/bin/true",
                                   use_daemon=False)
    res = broken.run("list")
    assert res.code == "internal-error" and "boom" in res.error["message"]


def test_plugin_info_joins_plugins_and_their_last_transactions() -> None:
    listed = [{"name": "zeta", "panel": "plesk", "version": "1.0-1", "installed_at": 1.0, "files": 3},
              {"name": "demo", "panel": "ispmanager", "version": "1.1", "installed_at": 2.0, "files": 4}]
    rows = [{"tx": "t3", "op": "install", "name": "demo", "panel": "ispmanager", "status": "rolled_back",
             "error": {"code": "rolled-back"}},
            {"tx": "t2", "op": "install", "name": "demo", "panel": "ispmanager", "status": "committed"}]
    plugins = plugin_info.collect(listed, rows)
    assert [p["name"] for p in plugins] == ["demo", "zeta"]
    assert plugins[0]["last_transaction"]["tx"] == "t3"
    assert plugins[0]["last_transaction"]["error"] == "rolled-back"
    assert plugins[1]["last_transaction"] is None
    assert [p["name"] for p in plugin_info.collect(listed, rows, "zeta")] == ["zeta"]


def aps_params(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: v.get("default") for k, v in aps.argument_spec().items()}
    out.update(kw)
    return out


def test_aps_commands_are_the_cli_words_in_order() -> None:
    p = aps_params(
        repositories=[
            {"url": "https://a.example/r.atom", "state": "present", "check": True, "insecure": False},
            {"url": "http://b.example/r.xml", "state": "absent", "check": False, "insecure": False}],
        update_rules=[{"name": "WordPress", "state": "present", "type": None, "quantity": 3, "force": True,
                       "version": None},
                      {"name": "-odd", "state": "absent", "type": None, "quantity": None, "force": False,
                       "version": None}],
        default_rules=[{"name": "Drupal", "state": "present", "type": None, "version": "7.31-36"}],
        images=[{"name": "WordPress", "file": "wp.png", "state": "present"}], default_image="aps.png")
    assert aps.commands(p) == [
        ("repository", "https://a.example/r.atom",
         ["aps", "repo", "add", "--no-restart", "--check", "--", "https://a.example/r.atom"]),
        ("repository", "http://b.example/r.xml", ["aps", "repo", "remove", "--no-restart", "--",
                                                   "http://b.example/r.xml"]),
        ("update_rule", "WordPress", ["aps", "set-rule", "--quantity", "3", "--force", "--", "update",
                                      "WordPress"]),
        ("update_rule", "-odd", ["aps", "unset-rule", "--", "update", "-odd"]),
        ("default_rule", "Drupal", ["aps", "set-rule", "--version", "7.31-36", "--", "default", "Drupal"]),
        ("image", "WordPress", ["aps", "set-image", "--script", "WordPress", "--", "wp.png"]),
        ("default_image", "aps.png", ["aps", "set-image", "--default", "--", "aps.png"]),
    ]


class RecordedWords(Recorded):
    """Also answers ``run_words(words)``, by the words' first three."""

    def run_words(self, words: list[str]) -> agent_utils.AgentResult:
        self.calls.append((" ".join(words), {}))
        doc, rc = self.answers[" ".join(words[:3])]
        return agent_utils.AgentResult(dict(doc, schema=1), rc, "cli")


LISTED = ({"action": "aps-repo-list", "changed": False,
           "data": {"repositories": [{"url": "https://a/r"}]}}, 0)
ADDED = ({"action": "aps-repo-add", "changed": True, "notes": ["add ApsExtRepository https://a/r"],
          "data": {"diff": {"path": "usr/local/mgr5/etc/ispmgr.conf", "before": "", "after": "x\n"}}}, 0)


@pytest.mark.parametrize("check_mode", [False, True])
def test_aps_restarts_once_after_repositories_and_never_in_check_mode(check_mode: bool) -> None:
    repo = {"state": "present", "check": False, "insecure": False}
    agent = RecordedWords({"aps repo add": ADDED, "aps repo list": LISTED,
                           "restart-core": ({"action": "restarted", "notes": ["core restarted"]}, 0)})
    failed, r = aps.run(agent, aps_params(repositories=[dict(repo, url="https://a/r"),
                                                        dict(repo, url="https://b/r")]), check_mode)
    assert not failed and r["changed"] and len(r["changes"]) == 2 and len(r["diff"]) == 2
    assert r["repositories"] == ["https://a/r"]
    ops = [op for op, _ in agent.calls]
    assert ops.count("restart-core") == (0 if check_mode else 1)
    assert all(("--dry-run" in op) is check_mode for op in ops if op.startswith("aps repo a"))


def test_aps_refusal_names_the_item_and_stops() -> None:
    error = {"code": "aps-invalid-settings", "message": "big.png is 64x64, not 32x32", "hint": ""}
    refused = {"action": "failed", "changed": False, "error": error}
    agent = RecordedWords({"aps set-image --script": (refused, 3)})
    failed, r = aps.run(agent, aps_params(images=[{"name": "Drupal", "file": "big.png", "state": "present"},
                                                  {"name": "X", "file": "x.png", "state": "present"}]), False)
    assert failed and r["rc"] == 3 and r["msg"].startswith("image Drupal: big.png is 64x64")
    assert r["changed"] is False and len(agent.calls) == 1


def test_run_words_is_the_cli_with_the_global_options() -> None:
    seen: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str, str]:
        seen.append(argv)
        return 0, '{"schema": 1, "action": "aps-repo-list", "changed": false}', ""

    call = agent_utils.AgentCall(run, root="/srv/root", wait=5.0, executable="/opt/x/mgr-agent")
    res = call.run_words(["aps", "repo", "list"])
    assert res.ok and res.via == "cli"
    assert seen == [["/opt/x/mgr-agent", "--root", "/srv/root", "--json", "--no-daemon", "--wait", "5.0",
                     "aps", "repo", "list"]]
