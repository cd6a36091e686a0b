#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mgr-agent contributors
# MIT License (see pyproject.toml)
"""Ansible module mgr.agent.plugin: install, upgrade, remove or roll back one plugin."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: plugin
short_description: Install, upgrade, remove or roll back an ispmanager 6 plugin or Plesk extension
version_added: "0.1.0"
description:
  - Runs C(mgr-agent) on the managed host through its JSON interface (schema 1), through the
    agent's daemon when its socket answers and in-process otherwise, like the C(mgr-agent) CLI.
  - Every change is one transaction of the agent. An upgrade whose hook, file switch or panel
    health check fails is undone by the agent; the task then fails with C(rolled_back=true)
    and the cause.
  - C(changed) is exact. Installing the package that is already installed, making an absent
    plugin absent and rolling back when there is nothing to roll back (or the plugin is
    already rolled back) report C(changed=false).
  - In check mode the agent computes the real plan with C(--dry-run) and changes nothing on
    the host, its own state included. A package from the controller is then copied only into
    Ansible's temporary directory, which Ansible removes.
  - In diff mode the task shows the version before and after and the file plan (added,
    replaced and removed counts and the first 20 paths of each).
  - When O(src) is a path on the controller (the default, like M(ansible.builtin.copy)), the
    action plugin copies it to O(cache_dir) on the host, and skips the copy when the host
    already has a file there with the same SHA-256.
author:
  - mgr-agent contributors
options:
  name:
    description:
      - Plugin name (ispmanager) or extension id (Plesk).
      - Required with O(state=absent) and O(state=rolled_back). With O(state=present) it is
        optional; when given, the package must be that plugin (checked before anything changes,
        for a path; not checked for a URL).
    type: str
  src:
    description:
      - The package, a zip or tar archive or a directory. Required with O(state=present).
      - A path on the controller (default), or with O(remote_src=true) a path on the managed
        host, or an C(https://) URL downloaded by the agent on the host (needs O(sha256)).
    type: str
  remote_src:
    description:
      - O(src) is already on the managed host; nothing is copied.
    type: bool
    default: false
  cache_dir:
    description:
      - Where on the host a package from the controller is kept (one file per package name).
      - Default C(ROOT/var/cache/mgr-agent/packages), ROOT being O(root).
    type: path
  sha256:
    description:
      - Expected SHA-256 of the package archive (hex). The agent refuses another archive.
      - Required when O(src) is a URL.
    type: str
  state:
    description:
      - V(present) installs O(src) or upgrades to it.
      - V(absent) uninstalls O(name).
      - V(rolled_back) goes back to the version the agent kept from before the last upgrade.
        When the last committed transaction of the plugin already is a rollback, nothing is
        done (so the task is idempotent; the agent's own C(rollback) toggles).
    type: str
    choices: [present, absent, rolled_back]
    default: present
  panel:
    description:
      - The panel. By default detected from the package (present) or from the state
        (absent, rolled_back); needed only when O(name) is installed for both panels.
    type: str
    choices: [ispmanager, plesk]
  allow_downgrade:
    description:
      - Allow installing a version older than the installed one.
    type: bool
    default: false
  purge:
    description:
      - With O(state=absent), also remove the plugin's data (Plesk C(var/modules/ID)).
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), the agent's C(uninstall --force) escape hatch (see the agent's
        docs/usage.md).
    type: bool
    default: false
  health_window:
    description:
      - Seconds the agent watches the panel after restarting it; errors in that window roll the
        upgrade back. Default is the agent's C([panel] health_window) (10).
    type: float
  root:
    description:
      - Root prefix of every path the agent touches (its C(--root)). Tests and demos use a
        tree per host; on a server keep V(/).
    type: path
    default: /
  wait:
    description:
      - Seconds to wait for the agent's lock when another operation holds it (its C(--wait));
        default the agent's C([lock] wait) (300).
    type: float
  executable:
    description:
      - Path of C(mgr-agent) on the host. Default the first found on E(PATH), in
        C(/opt/mgr-agent/bin), C(/usr/local/bin) and C(/usr/bin). Not used when the daemon's
        socket answers.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  action:
    support: full
notes:
  - The agent takes its own lock, so tasks on one host never run two operations at once.
  - Exit codes and error codes are those of C(mgr-agent --json), see the agent's docs/usage.md.
seealso:
  - module: mgr.agent.plugin_info
"""

EXAMPLES = r"""
- name: Install or upgrade a plugin from the controller
  mgr.agent.plugin:
    src: files/demo-1.1.zip
    name: demo

- name: Install from the vendor, checked against a known checksum
  mgr.agent.plugin:
    src: https://downloads.example.com/demo-ext-1.1.zip
    sha256: 4e1c0d8d2a6b9a0b4f4b1d4a1d9c2f3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d

- name: Remove an extension and its data
  mgr.agent.plugin:
    name: demo-ext
    state: absent
    purge: true

- name: Go back to the version before the last upgrade
  mgr.agent.plugin:
    name: demo
    state: rolled_back
"""

RETURN = r"""
action:
  description: What the agent did (C(installed), C(upgraded), C(unchanged), C(planned),
    C(removed), C(rolled_back), C(failed)); C(absent) when the plugin was not installed,
    C(nothing_to_roll_back) when there was nothing to roll back.
  returned: always
  type: str
  sample: upgraded
name:
  description: Plugin name or extension id.
  returned: always
  type: str
  sample: demo
panel:
  description: C(ispmanager) or C(plesk).
  returned: always
  type: str
  sample: ispmanager
version:
  description: Version after the task (predicted in check mode); null after an uninstall.
  returned: always
  type: str
  sample: "1.1"
previous_version:
  description: Version installed before the task.
  returned: always
  type: str
  sample: "1.0"
tx:
  description: The agent's transaction id (as in C(mgr-agent history)) when one ran.
  returned: always
  type: str
  sample: "20261127120809292738"
hooks:
  description: The package hooks that ran (hook, argv, exit_code, output, seconds, timed_out).
  returned: always
  type: list
  elements: dict
plan:
  description: The file plan (summary counts and root-relative paths to add, replace, remove).
  returned: when the agent planned or made a change
  type: dict
agent_via:
  description: How the agent was reached, C(daemon) (its socket) or C(cli) (a process).
  returned: always
  type: str
  sample: daemon
rolled_back:
  description: The agent undid a failed change (only on failure).
  returned: always
  type: bool
  sample: false
cause:
  description: Why a change was rolled back, C(code) (for example C(hook-failed),
    C(health-check-failed)), C(hook), C(output) (hook output), C(log_lines) (panel log lines).
  returned: when rolled_back is true
  type: dict
error:
  description: The agent's error (code, message, hint, details).
  returned: on failure
  type: dict
package:
  description: For a package from the controller, C(src), C(dest) (the copy on the host),
    C(sha256), and C(copied) (whether this task transferred it).
  returned: when src is a path on the controller
  type: dict
rc:
  description: The agent's exit code (see its docs/usage.md).
  returned: on failure
  type: int
  sample: 8
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mgr.agent.plugins.module_utils.agent import (
    AgentCall,
    agent_argument_spec,
    failure,
    finish,
    module_result,
)

DIFF_PATHS = 20


def argument_spec():
    spec = agent_argument_spec()
    spec.update(
        name=dict(type="str"),
        src=dict(type="str"),
        remote_src=dict(type="bool", default=False),
        cache_dir=dict(type="path"),
        sha256=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "rolled_back"]),
        panel=dict(type="str", choices=["ispmanager", "plesk"]),
        allow_downgrade=dict(type="bool", default=False),
        purge=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        health_window=dict(type="float"),
    )
    return spec


def is_url(src):
    return "://" in (src or "")


def plan_diff(doc, limit=DIFF_PATHS):
    """Ansible's diff for one agent result: versions before/after, the file plan."""
    who = "%s (%s)" % (doc.get("name"), doc.get("panel"))
    before = "version: %s\n" % (doc.get("previous_version") or "(not installed)")
    after = "version: %s\n" % (doc.get("version") or "(not installed)")
    plan = doc.get("plan") or {}
    summary = plan.get("summary")
    if summary:
        after += "files: %d added, %d replaced, %d removed, %d unchanged, %d data kept\n" % (
            summary.get("add", 0), summary.get("replace", 0), summary.get("remove", 0),
            summary.get("unchanged", 0), summary.get("kept", 0))
        for kind, mark in (("add", "+"), ("replace", "~"), ("remove", "-")):
            paths = plan.get(kind) or []
            after += "".join("%s %s\n" % (mark, p) for p in paths[:limit])
            if len(paths) > limit:
                after += "%s ... and %d more\n" % (mark, len(paths) - limit)
    return {"before": before, "after": after, "before_header": who + " before",
            "after_header": who + " after"}


def predicted(doc):
    """Whether a dry run's plan would change anything."""
    if doc.get("action") != "planned":
        return bool(doc.get("changed"))
    summary = (doc.get("plan") or {}).get("summary") or {}
    return (doc.get("version") != doc.get("previous_version")
            or any(summary.get(k) for k in ("add", "replace", "remove")))


class Outcome:
    """What the module reports: ``failed`` or not, and the result keywords."""

    def __init__(self, failed, result):
        self.failed = failed
        self.result = result


def _done(res, check_mode, **extra):
    changed = predicted(res.doc) if check_mode else bool(res.get("changed"))
    return Outcome(False, module_result(res, changed=changed, rolled_back=False, **extra))


def present(agent, p, check_mode):
    src = p["src"]
    source = {"url": src} if is_url(src) else {"path": src}
    if not is_url(src) and not os.path.exists(src):
        error = {"code": "not-found", "message": "%s does not exist on the host" % src, "hint": ""}
        return Outcome(True, dict(msg=error["message"], error=error, rc=4, changed=False, rolled_back=False,
                                  action="failed", name=p.get("name"), panel=p.get("panel"), version=None,
                                  previous_version=None, tx=None, hooks=[]))
    if p.get("name") and not is_url(src):
        checked = agent.run("check", dict(source, panel=p.get("panel"), sha256=p.get("sha256")))
        if not checked.ok:
            return Outcome(True, failure(checked))
        if checked.get("name") != p["name"]:
            return Outcome(True, module_result(
                checked, changed=False, rolled_back=False, rc=3,
                msg="%s is the package of %s, not %s; nothing was changed" % (
                    src, checked.get("name"), p["name"])))
    res = agent.run("install", dict(
        source, sha256=p.get("sha256"), panel=p.get("panel"), dry_run=check_mode,
        allow_downgrade=p.get("allow_downgrade"), health_window=p.get("health_window")))
    if not res.ok:
        return Outcome(True, failure(res))
    return _done(res, check_mode)


def absent(agent, p, check_mode):
    res = agent.run("uninstall", dict(name=p["name"], panel=p.get("panel"), purge=p.get("purge"),
                                      force=p.get("force"), dry_run=check_mode,
                                      health_window=p.get("health_window")))
    if res.code == "not-installed":
        out = module_result(res, changed=False, rolled_back=False, msg="%s is not installed" % p["name"])
        out.update(action="absent", name=p["name"])
        return Outcome(False, out)
    if not res.ok:
        return Outcome(True, failure(res))
    return _done(res, check_mode)


def _last_committed(agent, p):
    """The newest committed transaction of the plugin, or None (and the history result)."""
    res = agent.run("history", {"name": p["name"], "limit": 50})
    for row in (res.get("data") or []) if res.ok else []:
        if row.get("status") == "committed" and (not p.get("panel") or row.get("panel") == p["panel"]):
            return row, res
    return None, res


def _nothing(res, p, why, action="nothing_to_roll_back"):
    out = module_result(res, changed=False, rolled_back=False, msg=why)
    out.update(action=action, name=p["name"], tx=None, hooks=[])
    return Outcome(False, out)


def rolled_back(agent, p, check_mode):
    last, hist = _last_committed(agent, p)
    if not hist.ok:
        return Outcome(True, failure(hist))
    if last is not None and last.get("op") == "rollback":
        out = _nothing(hist, p, "%s is already rolled back (transaction %s)" % (p["name"], last["tx"]),
                       action="unchanged")
        out.result.update(panel=last.get("panel"), version=last.get("to_version"),
                          previous_version=last.get("to_version"))
        return out
    if check_mode:
        info = agent.run("info", {"name": p["name"], "panel": p.get("panel")})
        if info.code == "not-installed":
            return _nothing(info, p, "%s is not installed: nothing to roll back" % p["name"])
        if not info.ok:
            return Outcome(True, failure(info))
        kept = (info.get("data") or {}).get("kept") or []
        if not kept:
            return _nothing(info, p, "%s: no previous version is kept" % p["name"])
        label = kept[0]["version"] + ("-" + kept[0]["release"] if kept[0].get("release") else "")
        out = module_result(info, changed=True, rolled_back=False, action="planned",
                            version=label, previous_version=info.get("version"))
        return Outcome(False, out)
    res = agent.run("rollback", {"name": p["name"], "panel": p.get("panel"),
                                 "health_window": p.get("health_window")})
    if res.code == "not-installed":
        return _nothing(res, p, res.error.get("message") or "nothing to roll back")
    if not res.ok:
        return Outcome(True, failure(res))
    return _done(res, check_mode)


def run(agent, p, check_mode):
    """The module's work for validated params ``p``; an Outcome."""
    if p["state"] == "present":
        return present(agent, p, check_mode)
    if p["state"] == "absent":
        return absent(agent, p, check_mode)
    return rolled_back(agent, p, check_mode)


def validate(p):
    """Cross-option rules argument_spec cannot say; an error message or None."""
    if p["state"] == "present" and not p.get("src"):
        return "state=present needs src"
    if p["state"] != "present" and not p.get("name"):
        return "state=%s needs name" % p["state"]
    if p.get("src") and is_url(p["src"]):
        if not p["src"].startswith("https://"):
            return "src %s: only https:// URLs are downloaded" % p["src"]
        if not p.get("sha256"):
            return "src is a URL: sha256 is required"
    if p.get("sha256") is not None:
        digest = p["sha256"].lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return "sha256 must be 64 hex digits, got %r" % p["sha256"]
    return None


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    problem = validate(module.params)
    if problem:
        module.fail_json(msg=problem)
    outcome = run(AgentCall.from_module(module), module.params, module.check_mode)
    result = outcome.result
    if module._diff and "version" in result:
        result["diff"] = plan_diff(result)
    finish(module, result, failed=outcome.failed)


if __name__ == "__main__":
    main()
