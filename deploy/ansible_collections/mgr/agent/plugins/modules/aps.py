#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mgr-agent contributors
# MIT License (see pyproject.toml)
"""Ansible module mgr.agent.aps: ispmanager APS repositories, rules and images."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: aps
short_description: ispmanager APS web scripts - repositories, update and default-version rules, images
version_added: "0.1.0"
description:
  - Manages what ispmanager offers its users as APS web scripts, through C(mgr-agent aps) on the
    managed host (its JSON interface, schema 1; see the agent's docs/aps.md).
  - Repositories are the C(ApsExtRepository) lines of C(etc/ispmgr.conf); rules and images are
    elements of C(etc/templates/aps_settings.xml). Each change touches only its own line or
    element, every other byte of the file stays, and each write is atomic under the agent's lock.
  - C(changed) is exact. A rule with the same meaning (also when spelled differently in the file),
    a repository that is already there, or an absent item that is absent, is no change.
  - After repository changes the ispmanager core is restarted once (O(restart)).
  - In check mode every change is computed with C(--dry-run) and nothing is written. In diff
    mode each change shows the file before and after it.
author:
  - mgr-agent contributors
options:
  repositories:
    description:
      - Repositories (C(ApsExtRepository) lines), applied in order.
    type: list
    elements: dict
    default: []
    suboptions:
      url:
        description:
          - URL of the repository description (an APS catalog feed), C(https://) or C(http://).
        type: str
        required: true
      state:
        description:
          - Whether the line is there.
        type: str
        choices: [present, absent]
        default: present
      check:
        description:
          - Fetch the description before adding the line and fail unless it is well-formed XML.
        type: bool
        default: false
      insecure:
        description:
          - With O(repositories[].check), allow fetching an C(http://) description.
        type: bool
        default: false
  update_rules:
    description:
      - C(onupdate) rules, which versions of a script users may install.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The script's name as the repository spells it (case-sensitive).
        type: str
        required: true
      state:
        description:
          - Whether the script has this rule (C(absent) removes its rule).
        type: str
        choices: [present, absent]
        default: present
      type:
        description:
          - C(latest) or C(earliest) versions, or the C(definite) one in O(update_rules[].version).
          - Default C(latest), or C(definite) when O(update_rules[].version) is given.
        type: str
        choices: [latest, earliest, definite]
      quantity:
        description:
          - How many versions (C(latest) and C(earliest)); default 1.
        type: int
      force:
        description:
          - Apply the rule at every update (C(force="yes")), not only when no allowed version is left.
        type: bool
        default: false
      version:
        description:
          - The version of type C(definite), for example C(7.31-36).
        type: str
  default_rules:
    description:
      - C(defver) rules, which allowed version is the default.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The script's name.
        type: str
        required: true
      state:
        description:
          - Whether the script has this rule.
        type: str
        choices: [present, absent]
        default: present
      type:
        description:
          - C(latest), C(earliest) or C(definite); default C(latest), or C(definite) with a version.
        type: str
        choices: [latest, earliest, definite]
      version:
        description:
          - The version of type C(definite).
        type: str
  images:
    description:
      - C(apsimg) mappings of scripts to 32x32 PNG files already in C(skins/common/img/).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The script's name.
        type: str
        required: true
      file:
        description:
          - File name in C(skins/common/img/). Required with O(images[].state=present).
        type: str
      state:
        description:
          - Whether the mapping is there.
        type: str
        choices: [present, absent]
        default: present
  default_image:
    description:
      - The C(defimg) of C(imagemapping), the image of scripts without their own (a 32x32 PNG in
        C(skins/common/img/)).
    type: str
  restart:
    description:
      - Restart the ispmanager core once after the repositories changed (the panel reads
        C(ispmgr.conf) when it starts). Rules and images need no restart.
    type: bool
    default: true
  root:
    description:
      - Root prefix of every path the agent touches (its C(--root)).
    type: path
    default: /
  wait:
    description:
      - Seconds to wait for the agent's lock held by another operation (default from the
        agent's C(agent.toml), 300).
    type: float
  executable:
    description:
      - Path of C(mgr-agent) on the host (default found on E(PATH), in C(/opt/mgr-agent/bin),
        C(/usr/local/bin), C(/usr/bin)).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
seealso:
  - module: mgr.agent.plugin
notes:
  - Run C(mgr-agent aps check) on the host to validate the whole file and its images, and
    C(mgr-agent aps resolve) to see which versions the rules leave users.
"""

EXAMPLES = r"""
- name: Our own APS repository, checked before it is added
  mgr.agent.aps:
    repositories:
      - url: https://apps.example.com/repo.atom
        check: true
      - url: http://old.example.com/repo.xml
        state: absent

- name: Three latest WordPress versions at every update, Drupal pinned, images
  mgr.agent.aps:
    update_rules:
      - name: WordPress
        quantity: 3
        force: true
      - name: Drupal
        version: 7.31-36
      - name: joomla
        state: absent
    default_rules:
      - name: WordPress
        type: earliest
    images:
      - name: WordPress
        file: wordpress.png
    default_image: aps.png
"""

RETURN = r"""
changes:
  description: Each requested item that changed (or would, in check mode), with the agent's
    note, for example C(set onupdate WordPress - latest x3 force).
  returned: always
  type: list
  elements: dict
  contains:
    item:
      description: C(repository), C(update_rule), C(default_rule), C(image) or C(default_image).
      type: str
    name:
      description: The URL, script name or file.
      type: str
    notes:
      description: The agent's notes.
      type: list
      elements: str
repositories:
  description: The C(ApsExtRepository) URLs in file order after the task (before it, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["https://apps.example.com/repo.atom"]
restart:
  description: The agent's notes about the core restart, empty when there was none.
  returned: always
  type: list
  elements: str
agent_via:
  description: How the agent was reached (C(cli)).
  returned: always
  type: str
error:
  description: The agent's error (code, message, hint, details).
  returned: on failure
  type: dict
rc:
  description: The agent's exit code (see its docs/aps.md).
  returned: on failure
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mgr.agent.plugins.module_utils.agent import (
    AgentCall,
    agent_argument_spec,
    failure,
    finish,
)

PRESENCE = dict(type="str", choices=["present", "absent"], default="present")
TYPES = ["latest", "earliest", "definite"]


def argument_spec():
    spec = agent_argument_spec()
    spec.update(
        repositories=dict(type="list", elements="dict", default=[], options=dict(
            url=dict(type="str", required=True), state=dict(PRESENCE),
            check=dict(type="bool", default=False), insecure=dict(type="bool", default=False))),
        update_rules=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True), state=dict(PRESENCE),
            type=dict(type="str", choices=TYPES), quantity=dict(type="int"),
            force=dict(type="bool", default=False), version=dict(type="str"))),
        default_rules=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True), state=dict(PRESENCE),
            type=dict(type="str", choices=TYPES), version=dict(type="str"))),
        images=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True), file=dict(type="str"), state=dict(PRESENCE)),
            required_if=[("state", "present", ["file"])]),
        default_image=dict(type="str"),
        restart=dict(type="bool", default=True),
    )
    return spec


def commands(p):
    """(item, name, words) for every requested change, in the order they are applied."""
    out = []
    for repo in p["repositories"]:
        words = ["aps", "repo", "add" if repo["state"] == "present" else "remove", "--no-restart"]
        if repo["state"] == "present" and repo["check"]:
            words.append("--check")
            if repo["insecure"]:
                words.append("--insecure")
        out.append(("repository", repo["url"], words + ["--", repo["url"]]))
    for key, section, item in (("update_rules", "update", "update_rule"),
                               ("default_rules", "default", "default_rule")):
        for rule in p[key]:
            if rule["state"] == "absent":
                out.append((item, rule["name"], ["aps", "unset-rule", "--", section, rule["name"]]))
                continue
            words = ["aps", "set-rule"]
            if rule.get("type"):
                words += ["--type", rule["type"]]
            if rule.get("quantity") is not None:
                words += ["--quantity", str(rule["quantity"])]
            if rule.get("force"):
                words.append("--force")
            if rule.get("version"):
                words += ["--version", rule["version"]]
            out.append((item, rule["name"], words + ["--", section, rule["name"]]))
    for image in p["images"]:
        if image["state"] == "absent":
            out.append(("image", image["name"], ["aps", "unset-image", "--", image["name"]]))
        else:
            out.append(("image", image["name"],
                        ["aps", "set-image", "--script", image["name"], "--", image["file"]]))
    if p.get("default_image"):
        out.append(("default_image", p["default_image"],
                    ["aps", "set-image", "--default", "--", p["default_image"]]))
    return out


def _diff(doc, item, name):
    diff = (doc.get("data") or {}).get("diff")
    if not diff:
        return None
    return {"before_header": "%s (before %s %s)" % (diff["path"], item, name), "before": diff["before"],
            "after_header": "%s (after %s %s)" % (diff["path"], item, name), "after": diff["after"]}


def run(agent, p, check_mode):
    """Apply ``p``; (failed, result keywords)."""
    changes, diffs, warnings = [], [], []
    repo_changed = False
    for item, name, words in commands(p):
        if check_mode:
            words = words[:3] + ["--dry-run"] + words[3:] if words[1] == "repo" else \
                words[:2] + ["--dry-run"] + words[2:]
        res = agent.run_words(words)
        if not res.ok:
            out = failure(res)
            out.update(changed=bool(changes) and not check_mode, changes=changes, diff=diffs)
            out["msg"] = "%s %s: %s" % (item, name, out["msg"])
            return True, out
        warnings += res.get("warnings") or []
        if res.get("changed"):
            changes.append({"item": item, "name": name, "notes": list(res.get("notes") or [])})
            repo_changed = repo_changed or item == "repository"
            d = _diff(res.doc, item, name)
            if d:
                diffs.append(d)
    restart = []
    if repo_changed and p["restart"] and not check_mode:
        res = agent.run("restart-core")
        if not res.ok:
            out = failure(res)
            out.update(changed=True, changes=changes, diff=diffs)
            return True, out
        restart = list(res.get("notes") or [])
    listed = agent.run_words(["aps", "repo", "list"])
    if not listed.ok:
        return True, dict(failure(listed), changed=bool(changes) and not check_mode, changes=changes)
    repos = [r["url"] for r in (listed.get("data") or {}).get("repositories") or []]
    return False, dict(changed=bool(changes), changes=changes, repositories=repos, restart=restart,
                       warnings=warnings, diff=diffs, agent_via=listed.via)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    failed, result = run(AgentCall.from_module(module), module.params, module.check_mode)
    if not module._diff:
        result.pop("diff", None)
    finish(module, result, failed=failed)


if __name__ == "__main__":
    main()
