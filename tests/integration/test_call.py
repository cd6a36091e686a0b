"""`mgr-agent call`: real handler scripts run through the before/main/after chain."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mgr_agent import xmlsafe
from mgr_agent.config import Config
from mgr_agent.errors import HandlerError, NotFound, UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels import all_panels, serving
from mgr_agent.panels.ispmanager import callchain
from mgr_agent.proc import Runner
from mgr_agent.sandbox.samples import ispmanager_files, write_dir

FUNC = "exampleplugin.settings"


def install_tree(layout: Layout, name: str = "exampleplugin") -> None:
    """The sample plugin's panel files (its hooks are not part of the panel)."""
    tree = {rel: (data, 0o755 if rel.startswith("addon/") else mode)
            for rel, (data, mode) in ispmanager_files(name).items() if not rel.startswith("scripts/")}
    write_dir(tree, layout.mgr)


def plugin(layout: Layout, name: str, body: str, scripts: dict[str, str]) -> None:
    xml = layout.mgr / f"etc/xml/ispmgr_mod_{name}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<mgrdata>{body}</mgrdata>\n')
    for rel, text in scripts.items():
        path = layout.mgr / "addon" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)


@pytest.fixture
def layout(root: Path) -> Layout:
    lay = Layout.at(root)
    install_tree(lay)
    return lay


def call(layout: Layout, func: str = FUNC, *, as_json: bool = False, params: dict[str, str] | None = None,
         user: str = "root", lang: str = "en", input_path: Path | None = None,
         timeout: float = callchain.DEFAULT_TIMEOUT) -> tuple[int, str]:
    """``mgr-agent call`` through the panel interface, rendered as the CLI renders it."""
    panel = serving(all_panels(layout, Config()), "call")
    answer = panel.call(func, params or {}, user=user, lang=lang, input_path=input_path, timeout=timeout)
    return answer.exit_code, (json.dumps(answer.to_json()) if as_json else answer.text()) + "\n"


def test_exampleplugin_get_shows_the_form(layout: Layout) -> None:
    rc, text = call(layout)
    assert rc == 0
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n'
                           '<doc lang="en" func="exampleplugin.settings">\n')
    assert "  <example_input>Do not change</example_input>\n" in text, "pretty-printed"
    doc = xmlsafe.parse(text.encode(), "out")
    assert doc.find("metadata").get("type") == "form"  # type: ignore[union-attr]
    assert doc.findtext("messages/msg[@name='title']") == "Form example"
    assert not (layout.mgr / "var/exampleplugin.output").exists()


def test_exampleplugin_get_in_russian_as_json(layout: Layout) -> None:
    rc, text = call(layout, as_json=True, lang="ru")
    doc = json.loads(text)
    assert rc == 0 and doc["verdict"] == "page" and doc["func"] == FUNC
    assert [(s["handler"], s["kind"], s["exit_code"], s["valid"], s["reason"]) for s in doc["steps"]] == [
        ("exampleplugin.py", "main", 0, True, "")]
    assert doc["steps"][0]["seconds"] >= 0
    assert "Пример формы" in doc["xml"] and "<example_input>Do not change</example_input>" in doc["xml"]
    assert "error" not in doc


def test_exampleplugin_save_with_the_right_value(layout: Layout) -> None:
    rc, text = call(layout, params={"clicked_button": "ok", "example_input": "Do not change"})
    assert rc == 0
    assert xmlsafe.parse(text.encode(), "out").find("ok") is not None
    assert (layout.mgr / "var/exampleplugin.output").read_text() == "Good job!\n"


def test_exampleplugin_save_with_a_wrong_value_is_a_valid_error_answer(layout: Layout) -> None:
    rc, text = call(layout, as_json=True, params={"sok": "ok", "example_input": "changed"})
    doc = json.loads(text)
    assert rc == 0, "a well-formed <error> is a valid answer: the panel shows it"
    assert doc["verdict"] == "error"
    error = xmlsafe.parse(doc["xml"].encode(), "out").find("error")
    assert error is not None and error.get("object") == "wrong_value"
    assert [p.text for p in error.findall("param")] == ["wrong_value", "changed"]
    assert not (layout.mgr / "var/exampleplugin.output").exists()


ENV_DUMP = '''#!/bin/sh
# {tag}: adds <{tag}/> to the document it reads, with what it saw
doc=$(cat)
seen="func=$PARAM_func user=$AUTH_USER level=$AUTH_LEVEL lang=$PARAM_lang cwd=$(pwd)"
seen="$seen button=$PARAM_clicked_button"
printf '%s' "$doc" | sed "s#</doc>#<{tag} seen='$seen'/></doc>#"
'''


def test_chain_passes_xml_along(layout: Layout) -> None:
    plugin(layout, "zz", '''
      <handler name="zz/before.sh"><event name="exampleplugin.settings" before="yes"/></handler>
      <handler name="zz/after.py"><event name="exampleplugin.settings" after="yes"/></handler>''', {
        "zz/before.sh": ENV_DUMP.format(tag="from_before"),
        "zz/after.py": '''#!/usr/bin/env python3
import sys
import xml.etree.ElementTree as etree
root = etree.parse(sys.stdin).getroot()
seen = etree.SubElement(root, "after_saw")
seen.set("example_input", root.findtext("example_input") or "")
seen.set("before", "yes" if root.find("from_before") is not None else "no")
sys.stdout.write(etree.tostring(root, encoding="unicode"))
''',
    })
    rc, text = call(layout, as_json=True, user="bob", lang="ru")
    doc = json.loads(text)
    assert rc == 0, doc
    assert [(s["kind"], s["handler"]) for s in doc["steps"]] == [
        ("before", "zz/before.sh"), ("main", "exampleplugin.py"), ("after", "zz/after.py")]
    final = xmlsafe.parse(doc["xml"].encode(), "out")
    seen = final.find("from_before")
    assert seen is not None
    assert seen.get("seen") == (f"func=exampleplugin.settings user=bob level=16 lang=ru cwd={layout.mgr} "
                                "button=")
    # the main handler read the before-event's output, the after-event read the main's
    after = final.find("after_saw")
    assert after is not None and dict(after.attrib.items()) == {"example_input": "Do not change",
                                                                "before": "yes"}
    assert final.find("metadata") is not None


def test_before_event_may_pass_a_doc_without_a_page(layout: Layout) -> None:
    plugin(layout, "act", '''
      <handler name="pre.sh"><event name="act.do" before="yes"/></handler>
      <handler name="act.sh"><func name="act.do"/></handler>''', {
        "pre.sh": "#!/bin/sh\ncat\n",
        "act.sh": "#!/bin/sh\ncat >/dev/null\necho '<doc func=\"act.do\"><ok/></doc>'\n"})
    rc, text = call(layout, "act.do", as_json=True, params={"elid": "1"})
    doc = json.loads(text)
    assert rc == 0 and doc["verdict"] == "ok"
    assert [(s["kind"], s["holds"]) for s in doc["steps"]] == [("before", None), ("main", "ok")]


def test_error_from_main_handler_skips_after_events(layout: Layout) -> None:
    plugin(layout, "zz", '<handler name="after.sh"><event name="exampleplugin.settings" after="yes"/>'
           '</handler>', {"after.sh": "#!/bin/sh\necho '<doc><ok/></doc>'\n"})
    rc, text = call(layout, as_json=True, params={"clicked_button": "ok", "example_input": "no"})
    doc = json.loads(text)
    assert rc == 0 and doc["verdict"] == "error"
    assert [s["handler"] for s in doc["steps"]] == ["exampleplugin.py"]
    assert doc["skipped"] == [{"handler": "after.sh", "kind": "after", "plugin": "zz"}]


@pytest.mark.parametrize(("script", "step", "reason"), [
    ("#!/bin/sh\necho 'this is not XML'\n", "main", "not well-formed XML"),
    ("#!/bin/sh\necho '<result><ok/></result>'\n", "main", "root element is <result>, expected <doc>"),
    ("#!/bin/sh\necho '<doc><elem/></doc>'\n", "main", "the answer holds no <metadata>, <ok> or <error>"),
    ("#!/bin/sh\n", "main", "empty answer"),
    ("#!/bin/sh\necho '<doc><ok/></doc>'\necho oops >&2\nexit 3\n", "main", "exited with code 3"),
])
def test_invalid_answers_are_rejected(layout: Layout, script: str, step: str, reason: str) -> None:
    plugin(layout, "bad", '<handler name="bad.sh"><func name="bad.func"/></handler>', {"bad.sh": script})
    rc, text = call(layout, "bad.func", as_json=True)
    doc = json.loads(text)
    assert rc == HandlerError.exit_code == 13
    assert doc["verdict"] == "invalid" and reason in doc["reason"]
    assert doc["error"]["code"] == "invalid-handler-answer"
    assert doc["steps"][0]["kind"] == step and not doc["steps"][0]["valid"]
    assert doc["steps"][0]["output"] == script.split("\n")[1].removeprefix("echo ").strip("'") + (
        "\n" if "echo" in script else "")
    assert doc["xml"] is None
    rc, text = call(layout, "bad.func")
    assert rc == 13
    assert text.startswith(f"invalid answer for bad.func: bad.sh (main): {reason}")


def test_after_event_that_breaks_the_page_is_blamed(layout: Layout) -> None:
    plugin(layout, "zz", '''
      <handler name="strip.sh"><event name="exampleplugin.settings" after="yes"/></handler>''',
           {"strip.sh": "#!/bin/sh\ncat >/dev/null\necho '<doc/>'\n"})
    rc, text = call(layout, as_json=True)
    doc = json.loads(text)
    assert rc == 13 and doc["verdict"] == "invalid"
    assert doc["reason"] == ("strip.sh (after): the final answer holds no <metadata>, <ok>, <error> or "
                             "data for the page of exampleplugin.settings")
    assert [s["valid"] for s in doc["steps"]] == [True, False]


def test_missing_and_unexecutable_handlers(layout: Layout) -> None:
    plugin(layout, "zz", '''<handler name="gone.sh"><event name="exampleplugin.settings" before="yes"/>
      </handler>''', {})
    rc, text = call(layout, as_json=True)
    doc = json.loads(text)
    assert rc == 13 and doc["reason"] == "gone.sh (before): addon/gone.sh does not exist"
    assert doc["steps"][0]["exit_code"] is None
    (layout.mgr / "addon/gone.sh").write_text("#!/bin/sh\ncat\n")
    rc, text = call(layout, as_json=True)
    assert json.loads(text)["reason"] == "gone.sh (before): addon/gone.sh is not executable"


def test_a_hanging_handler_times_out(layout: Layout) -> None:
    plugin(layout, "slow", '<handler name="slow.sh"><func name="slow.func"/></handler>',
           {"slow.sh": "#!/bin/sh\nsleep 30 &\nsleep 30\n"})
    started = time.monotonic()
    rc, text = call(layout, "slow.func", as_json=True, timeout=0.5)
    assert time.monotonic() - started < 5
    doc = json.loads(text)
    assert rc == 13 and doc["reason"] == "slow.sh (main): timed out after 0.5s (killed)"
    assert doc["steps"][0]["timed_out"] is True and doc["steps"][0]["exit_code"] is None


def test_input_file_is_the_first_handlers_stdin(layout: Layout, tmp_path: Path) -> None:
    given = tmp_path / "in.xml"
    given.write_text('<doc func="exampleplugin.settings"><metadata type="form"/><mine>1</mine></doc>')
    rc, text = call(layout, input_path=given)
    assert rc == 0
    doc = xmlsafe.parse(text.encode(), "out")
    assert doc.findtext("mine") == "1" and doc.findtext("example_input") == "Do not change"
    given.write_text("<nope>")
    with pytest.raises(UsageError, match="--input"):
        call(layout, input_path=given)


def test_unbound_func_and_bad_params(layout: Layout) -> None:
    with pytest.raises(NotFound, match=r"no handler .* is bound to user\.edit"):
        call(layout, "user.edit")
    with pytest.raises(UsageError):
        call(layout, params={"func": "x"})
    with pytest.raises(UsageError):
        call(layout, user="a\0b")


def test_runner_can_keep_stderr_apart() -> None:
    runner = Runner()
    argv = ["sh", "-c", "echo out; echo err >&2; cat"]
    done = runner.run(argv, cwd=Path("/"), timeout=10, stdin=b"in\xff", separate_stderr=True)
    assert (done.output, done.stderr, done.stdout_bytes) == ("out\nin\ufffd", "err\n", b"out\nin\xff")
    merged = runner.run(argv, cwd=Path("/"), timeout=10, stdin=b"")
    assert sorted(merged.output.splitlines()) == ["err", "out"] and merged.stderr == ""
    small = Runner(output_limit=64).run(["sh", "-c", "head -c 1000 /dev/zero | tr '\\0' x; echo e >&2"],
                                        cwd=Path("/"), timeout=10, separate_stderr=True)
    assert small.truncated and small.stderr == "e\n"
