"""Handler runner without processes: chain discovery, the request, answer verdicts, the
stand-in's log format and debug.conf reading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mgr_agent import xmlsafe
from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels.ispmanager import callchain, callplugins
from mgr_agent.sandbox.standin.core import DebugConf, PanelLog

XML = "usr/local/mgr5/etc/xml"


def _plugin(root: Path, name: str, body: str) -> None:
    path = root / XML / f"ispmgr_mod_{name}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<mgrdata>{body}</mgrdata>\n')


@pytest.fixture
def two_plugins(root: Path) -> Layout:
    # "a" sorts before "b": file-name order is load order
    _plugin(root, "a", '''
      <handler name="a_after.sh" type="xml"><event name="site.edit" after="yes"/></handler>
      <handler name="a_before.sh" type="xml"><event name="site.edit" before="yes"/></handler>
      <handler name="a_plain.sh" type="xml"><event name="site.edit"/></handler>
      <handler name="a_other.sh" type="xml"><func name="other.func"/></handler>''')
    _plugin(root, "b", '''
      <handler name="b_main.py" type="xml">
        <func name="site.edit"/>
        <event name="site.edit" before="yes"/>
      </handler>
      <handler name="b_hi.sh" type="cgi"><event name="site.edit" after="yes" priority="hi"/></handler>
      <handler name="b_second_main.sh"><func name="site.edit"/></handler>''')
    return Layout.at(root)


def test_chain_orders_before_main_after_across_plugins(two_plugins: Layout) -> None:
    chain = callplugins.find_chain(two_plugins, "site.edit")
    assert [(s.kind, s.handler) for s in chain] == [
        ("before", "a_before.sh"),
        ("before", "b_main.py"),
        ("main", "b_main.py"),
        ("after", "b_hi.sh"),  # priority="hi" runs first among its peers
        ("after", "a_after.sh"),
        ("after", "a_plain.sh"),  # an <event> with neither before nor after runs after
    ]
    assert [s.plugin for s in chain] == ["a", "b", "b", "b", "a", "a"]
    assert chain[3].type == "cgi" and chain[0].source == "etc/xml/ispmgr_mod_a.xml"
    # one main handler: the first claim in file-name order; b_second_main.sh is left out
    assert [s.handler for s in chain if s.kind == "main"] == ["b_main.py"]


def test_chain_of_unbound_func_is_empty_and_other_funcs_are_separate(two_plugins: Layout) -> None:
    assert callplugins.find_chain(two_plugins, "nothing.here") == []
    assert [(s.kind, s.handler) for s in callplugins.find_chain(two_plugins, "other.func")] == [
        ("main", "a_other.sh")]


def test_broken_plugin_descriptions_are_reported_and_skipped(two_plugins: Layout, root: Path) -> None:
    (root / XML / "ispmgr_mod_c.xml").write_text("<mgrdata><handler name='c.sh'>")
    (root / XML / "ispmgr_mod_d.xml").write_text("<plugin><handler name='d.sh'><func name='site.edit'/>"
                                                 "</handler></plugin>")
    (root / XML / "ispmgr_mod_e.xml").write_text('<!DOCTYPE x [<!ENTITY a "b">]><mgrdata>&a;</mgrdata>')
    plugins = {p.name: p for p in callplugins.load_plugins(two_plugins)}
    assert plugins["a"].error is None and plugins["a"].funcs == ["other.func"]
    assert plugins["c"].error is not None and "not well-formed" in plugins["c"].error
    assert plugins["d"].error == "root element is <plugin>, expected <mgrdata>"
    assert plugins["e"].error is not None and "entit" in plugins["e"].error
    chain = callplugins.find_chain(two_plugins, "site.edit")
    assert "d.sh" not in {s.handler for s in chain}


@pytest.mark.parametrize(("answer", "reason", "holds"), [
    (b"", "empty answer", ""),
    (b"   \n", "empty answer", ""),
    (b"Traceback (most recent call last):", "not well-formed XML", ""),
    (b"<doc><ok/>", "not well-formed XML", ""),
    (b"<?xml version='1.0'?><result><ok/></result>", "root element is <result>, expected <doc>", ""),
    (b"<doc/>", "", ""),
    (b"<doc><metadata type='form'/></doc>", "", "metadata"),
    (b"<doc><ok/></doc>", "", "ok"),
    (b"<doc><metadata/><error type='x'/></doc>", "", "error"),  # an error wins over the page
    (b"<doc><x><ok/></x></doc>", "", "data"),  # only direct children count: <x> is data
    (b"<doc><tparams/><messages/></doc>", "", ""),  # the request's parts are not data
    (b'<!DOCTYPE doc [<!ENTITY e SYSTEM "file:///etc/passwd">]><doc>&e;<ok/></doc>', "entit", ""),
])
def test_answer_verdicts(answer: bytes, reason: str, holds: str) -> None:
    got_reason, got_holds = callchain.judge(answer, "answer of h.sh")
    assert (reason in got_reason) if reason else got_reason == ""
    assert not got_reason.startswith("answer of h.sh")
    assert got_holds == holds


def test_default_input_carries_metadata_messages_and_params(two_plugins: Layout, root: Path) -> None:
    _plugin(root, "f", '''
      <handler name="f.py"><func name="f.settings"/></handler>
      <metadata name="f.settings" type="form"><form><field name="x"/></form></metadata>
      <lang name="en"><messages name="f.settings"><msg name="title">Title</msg></messages></lang>
      <lang name="ru"><messages name="f.settings"><msg name="title">Заголовок</msg></messages></lang>''')
    plugins = callplugins.load_plugins(two_plugins)
    data = callchain.default_input("f.settings", {"elid": "7"}, "ru", plugins)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    doc = xmlsafe.parse(data, "input")
    assert (doc.tag, doc.get("lang"), doc.get("func")) == ("doc", "ru", "f.settings")
    assert doc.find("metadata").get("type") == "form"  # type: ignore[union-attr]
    assert doc.findtext("messages/msg") == "Заголовок"
    assert doc.findtext("tparams/func") == "f.settings" and doc.findtext("tparams/elid") == "7"
    bare = xmlsafe.parse(callchain.default_input("site.edit", {}, "en", plugins), "input")
    assert bare.find("metadata") is None and bare.find("messages") is None


def test_request_params_model_a_form_submit() -> None:
    assert callchain.request_params({"clicked_button": "ok"}) == {"clicked_button": "ok", "sok": "ok"}
    assert callchain.request_params({"sok": "ok"}) == {"sok": "ok", "clicked_button": "ok"}
    assert callchain.request_params({"clicked_button": "apply", "sok": "ok"}) == {
        "clicked_button": "apply", "sok": "ok"}
    assert callchain.request_params({"elid": "1"}) == {"elid": "1"}


def test_handler_env(root: Path) -> None:
    layout = Layout.at(root)
    env = callchain.handler_env(layout, "f.do", {"elid": "a b"}, user="root", lang="ru", level=None,
                               handler_type="xml")
    assert env == {"PARAM_elid": "a b", "PARAM_lang": "ru", "PARAM_func": "f.do", "AUTH_USER": "root",
                   "AUTH_LEVEL": "30", "MGR_ROOT": str(layout.mgr)}
    env = callchain.handler_env(layout, "f.do", {"lang": "en"}, user="bob", lang="ru", level=None,
                               handler_type="cgi")
    assert env["AUTH_LEVEL"] == "16" and env["PARAM_lang"] == "en"
    assert env["QUERY_STRING"] == "func=f.do&lang=en" and env["REQUEST_METHOD"] == "GET"
    env = callchain.handler_env(layout, "f.do", {}, user="bob", lang="en", level=29, handler_type="xml")
    assert env["AUTH_LEVEL"] == "29"


@pytest.mark.parametrize(("func", "params"), [
    ("", {}), ("a b", {}), ("a=b", {}),
    ("f", {"func": "x"}), ("f", {"bad name": "x"}), ("f", {"1x": "y"}), ("f", {"x": "a\0b"}),
])
def test_bad_requests_are_usage_errors(func: str, params: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        callchain.check_params(func, params)


def test_handler_problem(root: Path) -> None:
    layout = Layout.at(root)
    addon = layout.mgr / "addon"
    addon.mkdir(parents=True)
    (addon / "plain.sh").write_text("#!/bin/sh\n")
    (addon / "run.sh").write_text("#!/bin/sh\n")
    (addon / "run.sh").chmod(0o755)
    assert callplugins.handler_problem(layout, "run.sh") is None
    assert callplugins.handler_problem(layout, "plain.sh") == "addon/plain.sh is not executable"
    assert callplugins.handler_problem(layout, "gone.sh") == "addon/gone.sh does not exist"
    assert "inside addon/" in (callplugins.handler_problem(layout, "../bin/core") or "")
    assert "inside addon/" in (callplugins.handler_problem(layout, "/bin/sh") or "")


def test_debug_conf_levels_and_colour(tmp_path: Path) -> None:
    conf_path = tmp_path / "debug.conf"
    assert DebugConf.read(conf_path).level("core_module") == 4 and DebugConf.read(conf_path).colour
    conf_path.write_text("# comment\nispmgr 2\nispmgr.core_module 9 # trace handlers\n"
                         "ispmgr.action 9 user=bob\nmgrctl 9\nSET color=off\nSET ispmgr.max_log_size=1\n")
    conf = DebugConf.read(conf_path)
    assert conf.level("core_module") == 9
    assert conf.level("action") == 2, "a line with conditions raises some requests only"
    assert conf.level("core") == 2 and not conf.colour


LINE = re.compile(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \[\d+:1\] core_module (?P<level>\S+) (?P<msg>.*)$")


def test_panel_log_lines(tmp_path: Path) -> None:
    mgr = tmp_path / "mgr"
    log = PanelLog(mgr)
    log.write("core_module", "ERR", "handler x.sh func x.f: bad XML answer: boom")
    log.write("core_module", "TRACE", "not at the default level")
    text = (mgr / "var/ispmgr.log").read_text()
    assert "\033[1;31mERR\033[0m" in text and "TRACE" not in text
    (mgr / "etc").mkdir()
    (mgr / "etc/debug.conf").write_text("SET color=off\nispmgr.core_module 9\n")
    (mgr / "var/ispmgr.log").unlink()
    log = PanelLog(mgr)
    log.write("core_module", "ERR", "plain")
    log.write("core_module", "TRACE", "request:\n<doc/>")
    lines = (mgr / "var/ispmgr.log").read_text().splitlines()
    first = LINE.match(lines[0])
    assert first is not None and first["level"] == "ERR" and first["msg"] == "plain"
    assert LINE.match(lines[1]) and lines[2] == "<doc/>"  # a continuation line, as the panel writes
