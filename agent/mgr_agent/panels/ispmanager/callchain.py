"""Run the handlers bound to a func the way ispmanager's core does, and judge their answers.

The chain of a func comes from the installed ``etc/xml/ispmgr_mod_*.xml``: ``<event
before="yes">`` handlers, then the ``<func>`` (main) handler, then the ``<event>``
handlers (``after="yes"``, or neither).  Each gets XML on stdin (the first the request
document, every later one the answer before it), the request in ``PARAM_*`` variables,
and must print one XML document.  What is modelled and why: docs/call.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from lxml import etree

from mgr_agent import xmlsafe
from mgr_agent.errors import HandlerError, InvalidXML, NotFound, UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels.ispmanager.callplugins import (
    HandlerStep,
    PluginXml,
    find_chain,
    handler_problem,
    load_plugins,
    unprefixed,
)
from mgr_agent.proc import Runner

SCHEMA = 1
DEFAULT_TIMEOUT = 60.0
MAX_ANSWER = xmlsafe.MAX_XML_BYTES
ROOT_LEVEL = 30  # AUTH_LEVEL: 30 root, 29 administrator, 24 reseller, 16 user, 9 mailbox user
USER_LEVEL = 16
PAGE_TAGS = ("error", "ok", "metadata")  # what an answer may hold, in order of precedence
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

# a step's failure: the handler could not run, it failed, or its answer is bad XML
FAIL_EXEC, FAIL_EXIT, FAIL_TIMEOUT, FAIL_XML = "exec", "exit", "timeout", "xml"


@dataclass(frozen=True)
class StepResult:
    step: HandlerStep
    exit_code: int | None  # None: it could not be started
    seconds: float
    valid: bool
    reason: str = ""  # why it is not valid
    failure: str = ""  # exec | exit | timeout | xml
    holds: str = ""  # error | ok | metadata | data | "" (what the answer holds)
    output: str = ""  # raw stdout
    stderr: str = ""
    timed_out: bool = False
    raw: bytes = field(default=b"", repr=False)  # stdout as bytes: what the next step reads

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "handler": self.step.handler, "kind": self.step.kind, "plugin": self.step.plugin,
            "exit_code": self.exit_code, "seconds": round(self.seconds, 3), "valid": self.valid,
            "reason": self.reason, "holds": self.holds or None, "timed_out": self.timed_out,
        }
        if not self.valid:
            out["output"] = self.output
        if self.stderr:
            out["stderr"] = self.stderr
        return out


@dataclass
class CallResult:
    """The outcome of a func's chain: ``verdict`` is page | ok | error | invalid."""

    func: str
    steps: list[StepResult]
    verdict: str
    reason: str = ""
    xml: bytes | None = None  # the final answer, when valid
    skipped: list[HandlerStep] = field(default_factory=list)  # not run after an <error>

    @property
    def valid(self) -> bool:
        return self.verdict != "invalid"

    @property
    def failed(self) -> StepResult | None:
        return next((s for s in self.steps if not s.valid), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA, "func": self.func, "verdict": self.verdict, "reason": self.reason,
            "steps": [s.to_json() for s in self.steps],
            "skipped": [{"handler": s.handler, "kind": s.kind, "plugin": s.plugin} for s in self.skipped],
            "xml": pretty(self.xml) if self.xml is not None else None,
        }
        if not self.valid:
            out["error"] = HandlerError(self.reason, func=self.func).to_dict()
        return out

    @property
    def exit_code(self) -> int:
        """0 for a valid answer (an ``<error>`` answer included), :class:`HandlerError`'s
        exit code (13) for an invalid one."""
        return 0 if self.valid else HandlerError.exit_code

    def text(self) -> str:
        """The final answer (pretty XML), or the verdict with each step and the failed
        handler's output."""
        return render_text(self)


# ------------------------------------------------------------------ the request
def check_params(func: str, params: Mapping[str, str]) -> None:
    if not func or any(c.isspace() or c in "=\0" for c in func):
        raise UsageError(f"func {func!r}: expected a name like exampleplugin.settings")
    for key, value in params.items():
        if key == "func":
            raise UsageError("func is given as FUNC, not as a parameter")
        if not PARAM_RE.match(key):
            raise UsageError(f"parameter {key!r}: names are letters, digits, '_', '.', '-'")
        if "\0" in value:
            raise UsageError(f"parameter {key!r}: the value holds a NUL byte")


def request_params(params: Mapping[str, str]) -> dict[str, str]:
    """A form submit carries both ``sok=ok`` and ``clicked_button=<button>``: given one,
    the other is added (``sok=ok`` alone means the ``ok`` button)."""
    out = dict(params)
    if out.get("clicked_button") and "sok" not in out:
        out["sok"] = "ok"
    if out.get("sok") and "clicked_button" not in out:
        out["clicked_button"] = "ok"
    return out


def handler_env(layout: Layout, func: str, params: Mapping[str, str], *, user: str, lang: str,
                level: int | None, handler_type: str) -> dict[str, str]:
    env = {f"PARAM_{k}": v for k, v in params.items()}
    env.setdefault("PARAM_lang", lang)
    env["PARAM_func"] = func
    env["AUTH_USER"] = user
    env["AUTH_LEVEL"] = str(level if level is not None else ROOT_LEVEL if user == "root" else USER_LEVEL)
    env["MGR_ROOT"] = str(layout.mgr)  # not the panel's: lets handlers find var/ under --root
    if handler_type == "cgi":
        env.update(GATEWAY_INTERFACE="CGI/1.1", REQUEST_METHOD="GET",
                   QUERY_STRING=urlencode([("func", func), *params.items()]))
    return env


def default_input(func: str, params: Mapping[str, str], lang: str,
                  plugins: Sequence[PluginXml]) -> bytes:
    """The document the core hands the first handler: ``<doc lang func>`` with the func's
    ``<metadata>`` and ``<messages>`` from the plugin descriptions, and ``<tparams>``."""
    doc = etree.Element("doc", lang=lang, func=func)
    metadata = None
    messages: list[xmlsafe.Element] = []
    for plugin in plugins:
        if plugin.root is None or plugin.error is not None:
            continue
        for node in plugin.root.iter("metadata"):
            if metadata is None and node.get("name") == func:
                metadata = node
        for lang_node in plugin.root.iter("lang"):
            if lang_node.get("name") == lang:
                messages += [m for m in lang_node.iter("messages") if m.get("name") == func]
    if metadata is not None:
        doc.append(_copy(metadata))
    if messages:
        merged = etree.SubElement(doc, "messages", name=func)
        for group in messages:
            for msg in group:
                if isinstance(msg.tag, str):
                    merged.append(_copy(msg))
    tparams = etree.SubElement(doc, "tparams")
    etree.SubElement(tparams, "func").text = func
    for key, value in params.items():
        etree.SubElement(tparams, key).text = value
    return XML_DECL.encode() + etree.tostring(doc, encoding="UTF-8")


def _copy(node: xmlsafe.Element) -> xmlsafe.Element:
    clone: xmlsafe.Element = etree.fromstring(etree.tostring(node))  # a detached deep copy
    clone.tail = None
    return clone


# ------------------------------------------------------------------ running
def handler_runner() -> Runner:
    """A Runner whose capture holds a whole answer up to the XML size limit."""
    return Runner(output_limit=2 * MAX_ANSWER + 2)


def holds(root: xmlsafe.Element) -> str:
    """``error``, ``ok`` or ``metadata``: what a ``<doc>`` answer holds (first wins); else
    ``data`` when it has other elements (``<tparams>`` and ``<messages>`` aside), or ""."""
    for tag in PAGE_TAGS:
        if root.find(tag) is not None:
            return tag
    if any(isinstance(c.tag, str) and c.tag not in ("tparams", "messages") for c in root):
        return "data"
    return ""


def judge(data: bytes, source: str) -> tuple[str, str]:
    """(reason, holds) for an answer: reason is "" when it is well-formed with a <doc> root."""
    if not data.strip():
        return "empty answer (no XML on stdout)", ""
    try:
        root = xmlsafe.parse(data, source, max_bytes=MAX_ANSWER)
    except InvalidXML as exc:
        return unprefixed(exc.message, source), ""
    if root.tag != "doc":
        return f"root element is <{root.tag}>, expected <doc>", ""
    return "", holds(root)


def described(func: str, plugins: Sequence[PluginXml]) -> bool:
    """Whether a plugin description holds ``<metadata name=FUNC>``: the panel then takes the
    page from there, and a handler may answer with the page's data only."""
    return any(node.get("name") == func for p in plugins if p.root is not None and p.error is None
               for node in p.root.iter("metadata"))


def _run_step(layout: Layout, runner: Runner, step: HandlerStep, func: str, params: Mapping[str, str],
              stdin: bytes, *, user: str, lang: str, level: int | None, timeout: float,
              page: bool = False) -> StepResult:
    problem = handler_problem(layout, step.handler)
    if problem is not None:
        return StepResult(step, None, 0.0, False, problem, FAIL_EXEC)
    env = handler_env(layout, func, params, user=user, lang=lang, level=level, handler_type=step.type)
    try:
        done = runner.run([str(layout.mgr / "addon" / step.handler)], cwd=layout.mgr, env=env,
                          timeout=timeout, stdin=stdin, separate_stderr=True)
    except OSError as exc:
        return StepResult(step, None, 0.0, False, f"cannot execute addon/{step.handler}: "
                          f"{exc.strerror or exc}", FAIL_EXEC)
    base = StepResult(step, done.returncode, done.seconds, False, output=done.output,
                      stderr=done.stderr, timed_out=done.timed_out, raw=done.stdout_bytes)
    if done.timed_out:
        return replace(base, exit_code=None, reason=f"timed out after {timeout:g}s (killed)",
                       failure=FAIL_TIMEOUT)
    if done.returncode != 0:
        return replace(base, reason=f"exited with code {done.returncode}", failure=FAIL_EXIT)
    if done.truncated:
        return replace(base, reason=f"answer is over the XML size limit of {MAX_ANSWER} bytes",
                       failure=FAIL_XML)
    reason, what = judge(done.stdout_bytes, f"answer of {step.handler}")
    if reason:
        return replace(base, reason=reason, failure=FAIL_XML)
    if what == "data" and not page:
        what = ""  # data with no page to fill: nothing the panel can show
    if step.kind == "main" and not what:
        return replace(base, reason="the answer " + _nothing(func, page), failure=FAIL_XML)
    return replace(base, valid=True, holds=what)


def _nothing(func: str, page: bool) -> str:
    if page:
        return "holds no <metadata>, <ok>, <error> or data for the page of " + func
    return (f"holds no <metadata>, <ok> or <error> (and no plugin XML has <metadata "
            f"name=\"{func}\"> that data could fill)")


Observer = Callable[[StepResult, bytes], None]


def run_call(layout: Layout, runner: Runner, func: str, params: Mapping[str, str], *,
             user: str = "root", lang: str = "en", input_xml: bytes | None = None,
             timeout: float = DEFAULT_TIMEOUT, level: int | None = None,
             plugins: Sequence[PluginXml] | None = None,
             observer: Observer | None = None) -> CallResult:
    """Run ``func``'s chain; an invalid answer ends it with verdict ``invalid``.

    Raises :class:`NotFound` when no handler is bound to ``func`` and :class:`UsageError`
    for a bad func or parameter name.  ``observer(step_result, stdin)`` sees every step.
    """
    check_params(func, params)
    if not user or any(c in "\0=" for c in user) or not lang or "\0" in lang:
        raise UsageError(f"user {user!r} / lang {lang!r}: expected a user name and a language code")
    plugins = load_plugins(layout) if plugins is None else plugins
    chain = find_chain(layout, func, plugins=plugins)
    if not chain:
        broken = [p.source for p in plugins if p.error is not None]
        raise NotFound(
            f"no handler in etc/xml/ispmgr_mod_*.xml is bound to {func}",
            hint="a plugin binds a func with <func name=> or <event name=>; the panel's built-in "
                 "functions are not modelled" + (f"; unreadable: {', '.join(broken)}" if broken else ""),
            func=func)
    request = request_params(params)
    doc = input_xml if input_xml is not None else default_input(func, request, lang, plugins)
    page = described(func, plugins)
    results: list[StepResult] = []
    for i, step in enumerate(chain):
        result = _run_step(layout, runner, step, func, request, doc, user=user, lang=lang,
                           level=level, timeout=timeout, page=page)
        if observer is not None:
            observer(result, doc)
        results.append(result)
        if not result.valid:
            return CallResult(func, results, "invalid", f"{step.handler} ({step.kind}): {result.reason}")
        doc = result.raw
        if result.holds == "error":
            return CallResult(func, results, "error", "", doc, skipped=chain[i + 1:])
    last = results[-1]
    if not last.holds:
        results[-1] = replace(last, valid=False, failure=FAIL_XML,
                              reason="the final answer " + _nothing(func, page))
        return CallResult(func, results, "invalid",
                          f"{last.step.handler} ({last.step.kind}): {results[-1].reason}")
    verdict = "page" if last.holds in ("metadata", "data") else last.holds
    return CallResult(func, results, verdict, "", doc)


# ------------------------------------------------------------------ rendering
def pretty(data: bytes) -> str:
    """An answer re-indented (it was validated, so it parses)."""
    root = xmlsafe.parse(data, "answer", max_bytes=MAX_ANSWER)
    for node in root.iter():
        if len(node) and node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    return XML_DECL + etree.tostring(root, encoding="unicode", pretty_print=True)


def render_text(result: CallResult) -> str:
    if result.valid and result.xml is not None:
        return pretty(result.xml).rstrip("\n")
    lines = [f"invalid answer for {result.func}: {result.reason}", "steps:"]
    for s in result.steps:
        code = "-" if s.exit_code is None else str(s.exit_code)
        state = "ok" if s.valid else f"INVALID: {s.reason}"
        lines.append(f"  {s.step.kind:<6}  {s.step.handler}  exit {code}  {s.seconds:.2f}s  {state}")
    failed = result.failed
    if failed is not None:
        for title, text in (("stdout", failed.output), ("stderr", failed.stderr)):
            if text.strip():
                lines.append(f"{title} of {failed.step.handler}:")
                lines += [f"  {line}" for line in text.rstrip("\n").splitlines()]
    return "\n".join(lines)


def call(layout: Layout, func: str, params: Mapping[str, str], *, user: str = "root",
         lang: str = "en", input_path: Path | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> CallResult:
    """``mgr-agent call``: run the chain of ``func`` (its first handler reads ``input_path``,
    else a request document made here). Raises AgentError when the call cannot be made
    (unknown func, bad input)."""
    input_xml = None
    if input_path is not None:
        input_xml = read_input(input_path)
    return run_call(layout, handler_runner(), func, params, user=user, lang=lang,
                    input_xml=input_xml, timeout=timeout)


def read_input(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--input {path}: {exc.strerror}") from exc
    reason, _ = judge(data, f"--input {path}")
    if reason:
        raise UsageError(f"--input {path}: {reason}",
                         hint="give the <doc> the first handler should read on stdin")
    return data
