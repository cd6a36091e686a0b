# -*- coding: utf-8 -*-
# Copyright: mgr-agent contributors
# MIT License (see pyproject.toml)
"""Run mgr-agent on the managed host and read its ``--json`` result (schema 1).

The one place the collection's modules talk to the agent. A module does::

    from ansible_collections.mgr.agent.plugins.module_utils.agent import (
        AgentCall, agent_argument_spec, fail_from_result)

    module = AnsibleModule(argument_spec=dict(agent_argument_spec(), name=dict(...)), ...)
    agent = AgentCall.from_module(module)
    res = agent.run("info", {"name": "demo"})   # an AgentResult
    if not res.ok:
        fail_from_result(module, res)

``AgentCall.run(op, args)`` takes the daemon API's operation names and arguments
(``install``, ``uninstall``, ``rollback``, ``list``, ``info``, ``history``, ``check``;
docs/daemon.md). Like the CLI, it sends the request to the daemon when the socket
``ROOT/run/mgr-agent/agent.sock`` answers, and otherwise runs ``mgr-agent --json`` as a
subprocess with the same arguments; both give the same document. ``AgentResult.via``
says which one ran. A daemon at its connection limit (``daemon-busy``) is asked again with
backoff for up to 5 s, as the CLI does. ``module_result``/``failure``/``finish`` turn a
result into the module's return values (``failure`` adds ``rolled_back`` and ``cause``).
``AgentCall.run_words(words)`` runs ``mgr-agent WORDS...`` as a process, for the commands
the daemon does not serve (``aps ...``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import socket
import time

SCHEMA = 1
PROTOCOL = 1
SOCKET_REL = "run/mgr-agent/agent.sock"
SEARCH = ("/opt/mgr-agent/bin/mgr-agent", "/usr/local/bin/mgr-agent", "/usr/bin/mgr-agent")
MAX_ANSWER = 256 * 1024 * 1024
BUSY_RETRY = 5.0     # like the CLI: a daemon at its connection limit is asked again for this long

# CLI spelling of each API argument: (option, kind) with kind "flag", "value" or "arg"
_CLI = {
    "path": (None, "arg"), "url": (None, "arg"), "name": (None, "arg"),
    "sha256": ("--sha256", "value"), "panel": ("--panel", "value"),
    "dry_run": ("--dry-run", "flag"), "allow_downgrade": ("--allow-downgrade", "flag"),
    "reinstall": ("--reinstall", "flag"), "purge": ("--purge", "flag"), "force": ("--force", "flag"),
    "health_window": ("--health-window", "value"), "limit": ("--limit", "value"),
    "wait": ("--wait", "value"),
}


def agent_argument_spec():
    """Options every module of the collection takes: where the agent works and how long it
    may wait for the lock."""
    return dict(
        root=dict(type="path", default="/"),
        wait=dict(type="float"),
        executable=dict(type="path"),
    )


class AgentResult:
    """One ``--json`` document (``doc``), the process exit code, and how it was obtained."""

    def __init__(self, doc, exit_code, via):
        self.doc = doc
        self.exit_code = exit_code
        self.via = via

    @property
    def ok(self):
        return self.exit_code == 0 and not self.doc.get("error")

    @property
    def error(self):
        """``{code, message, hint, details}`` or an empty dict."""
        return self.doc.get("error") or {}

    @property
    def code(self):
        return self.error.get("code")

    def get(self, key, default=None):
        return self.doc.get(key, default)


class AgentUnavailable(Exception):
    """Nothing answers on the daemon socket."""


class AgentCall:
    """Runs agent operations for one root on this host."""

    def __init__(self, run_command, root="/", wait=None, executable=None, use_daemon=True):
        """``run_command(argv) -> (rc, stdout, stderr)`` runs a process (the module's
        ``run_command``); ``executable`` is found on PATH and in the usual places when None."""
        self.run_command = run_command
        self.root = os.path.abspath(root or "/")
        self.wait = wait
        self.executable = executable
        self.use_daemon = use_daemon

    @classmethod
    def from_module(cls, module):
        p = module.params

        def run(argv):
            return module.run_command(argv, check_rc=False, environ_update={"LANG": "C.UTF-8"})

        return cls(run, root=p.get("root") or "/", wait=p.get("wait"), executable=p.get("executable"),
                   use_daemon=os.environ.get("MGR_AGENT_NO_DAEMON") != "1")

    @property
    def socket_path(self):
        return os.path.join(self.root, SOCKET_REL)

    def run(self, op, args=None):
        """Run ``op`` with ``args`` (None values are left out); an AgentResult."""
        args = dict((k, v) for k, v in (args or {}).items() if v is not None and v is not False)
        if self.wait is not None and op in ("install", "uninstall", "rollback"):
            args.setdefault("wait", self.wait)
        if self.use_daemon:
            deadline = time.monotonic() + BUSY_RETRY
            pause = 0.05
            try:
                while True:
                    res = self._via_daemon(op, args)
                    if res.code != "daemon-busy" or time.monotonic() + pause > deadline:
                        return res
                    time.sleep(pause)   # backoff between attempts, as the CLI does
                    pause = min(pause * 2, 1.0)
            except AgentUnavailable:
                pass
        return self._via_cli(op, args)

    # -------------------------------------------------------------- the daemon
    def _via_daemon(self, op, args):
        path = self.socket_path
        if not os.path.exists(path):
            raise AgentUnavailable(path)
        # everything is ready before connecting: the daemon gives a request 10 s to arrive
        request = json.dumps({"v": PROTOCOL, "op": op, "args": args, "root": self.root})
        data = (request + "\n").encode("utf-8")
        fd = None
        if op in ("install", "check") and args.get("path"):
            try:   # the daemon may not see our files (PrivateTmp): send the open file too
                fd = os.open(args["path"], os.O_RDONLY)
            except OSError:
                fd = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            try:
                sock.connect(path)
            except (OSError, socket.error) as exc:
                if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
                    return AgentResult(_error_doc(
                        "not-authorised", "%s: permission denied" % path,
                        "the daemon accepts root and members of the mgr-agent group "
                        "(become: true)", op, args), 14, "daemon")
                raise AgentUnavailable(path)
            sock.settimeout(None)
            try:
                if fd is not None and hasattr(socket, "send_fds"):
                    sent = socket.send_fds(sock, [data], [fd])
                    sock.sendall(data[sent:])
                else:
                    sock.sendall(data)
            except (OSError, socket.error) as exc:
                # the daemon may have answered (a refusal) and closed before reading it all
                if getattr(exc, "errno", None) not in (errno.EPIPE, errno.ECONNRESET):
                    raise
            reader = sock.makefile("rb")
            while True:
                line = reader.readline(MAX_ANSWER)
                if not line.endswith(b"\n"):
                    return AgentResult(_error_doc(
                        "internal-error", "the daemon closed the connection before answering",
                        "`mgr-agent history` shows whether the operation ran", op, args), 1, "daemon")
                message = json.loads(line.decode("utf-8"))
                if "result" in message:
                    return AgentResult(message["result"], int(message.get("exit_code") or 0), "daemon")
        finally:
            if fd is not None:
                os.close(fd)
            sock.close()

    # -------------------------------------------------------------- the CLI
    def find_executable(self):
        if self.executable:
            return self.executable
        for directory in os.environ.get("PATH", "").split(os.pathsep):
            candidate = os.path.join(directory, "mgr-agent")
            if directory and os.access(candidate, os.X_OK):
                return candidate
        for candidate in SEARCH:
            if os.access(candidate, os.X_OK):
                return candidate
        return None

    def argv(self, op, args):
        """The command line equivalent to the API request ``op``/``args``."""
        exe = self.find_executable()
        argv = [exe, "--root", self.root, "--json", "--no-daemon", op]
        positional = []
        for key, value in sorted(args.items()):
            option, kind = _CLI[key]
            if kind == "arg":
                positional.append(str(value))
            elif kind == "flag":
                if value:
                    argv.append(option)
            else:
                argv += [option, str(value)]
        return argv + (["--"] + positional if positional else [])

    def _via_cli(self, op, args):
        return self._run_cli(self.argv(op, args) if self.find_executable() else None, op, args)

    def run_words(self, words):
        """Run ``mgr-agent WORDS...`` as a process, for commands the daemon does not serve
        (``aps ...``); the same checks of the answer as :meth:`run`. An AgentResult."""
        argv = [self.find_executable(), "--root", self.root, "--json", "--no-daemon"]
        if self.wait is not None:
            argv += ["--wait", str(self.wait)]
        return self._run_cli(argv + list(words) if argv[0] else None, " ".join(words[:3]), {})

    def _run_cli(self, argv, op, args):
        if argv is None:
            return AgentResult(_error_doc(
                "agent-not-found", "mgr-agent is not installed on this host (looked on PATH and in %s)"
                % ", ".join(SEARCH), "install it with the mgr.agent.agent role, or set `executable`",
                op, args), 127, "none")
        rc, out, err = self.run_command(argv)
        try:
            doc = json.loads(out)
        except ValueError:
            return AgentResult(_error_doc(
                "usage" if rc == 2 else "internal-error",
                "mgr-agent %s exited %d without a JSON result: %s" % (op, rc, (err or out).strip()[-2000:]),
                "", op, args), rc or 1, "cli")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            return AgentResult(_error_doc(
                "unsupported-schema", "mgr-agent answered JSON schema %r; this collection reads %d"
                % (doc.get("schema") if isinstance(doc, dict) else None, SCHEMA),
                "use a collection and an agent of matching versions", op, args), 1, "cli")
        return AgentResult(doc, rc, "cli")


def _error_doc(code, message, hint, op, args):
    return {"schema": SCHEMA, "action": "failed", "changed": False, "name": args.get("name"),
            "panel": args.get("panel"), "version": None, "previous_version": None, "warnings": [],
            "hooks": [], "tx": None, "error": {"code": code, "message": message, "hint": hint}}


# ------------------------------------------------------------------ results for Ansible
RESULT_KEYS = ("action", "name", "panel", "version", "previous_version", "warnings", "tx", "hooks")


def module_result(res, **extra):
    """The agent's fields as module results (plus ``agent_via``)."""
    out = dict((k, res.get(k)) for k in RESULT_KEYS)
    out["warnings"] = list(out["warnings"] or [])   # finish() turns them into Ansible warnings
    out["agent_via"] = res.via
    if res.get("plan") is not None:
        out["plan"] = res.get("plan")
    out.update(extra)
    return out


def failure(res):
    """Keyword arguments for ``fail_json``: the agent's error code, message, hint and
    details; ``rolled_back`` and ``cause`` when an upgrade was undone."""
    error = res.error
    details = error.get("details") or {}
    msg = error.get("message") or "mgr-agent failed with exit %d" % res.exit_code
    if error.get("hint"):
        msg += " (hint: %s)" % error["hint"]
    out = module_result(res, msg=msg, changed=False, rc=res.exit_code, error=error,
                        rolled_back=res.get("action") == "rolled_back")
    if out["rolled_back"]:
        out["cause"] = {"code": details.get("cause_code"), "hook": details.get("hook"),
                        "output": details.get("output"), "log_lines": details.get("log_lines")}
    return out


def fail_from_result(module, res):
    """``module.fail_json`` with the agent's error (never returns)."""
    finish(module, failure(res), failed=True)


def finish(module, result, failed=False):
    """``exit_json`` (or ``fail_json``) with ``result``; the agent's ``warnings`` become
    Ansible warnings."""
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)
