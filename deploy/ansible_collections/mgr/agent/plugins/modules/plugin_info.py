#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mgr-agent contributors
# MIT License (see pyproject.toml)
"""Ansible module mgr.agent.plugin_info: what mgr-agent has installed on a host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: plugin_info
short_description: Installed plugins, their versions and last transactions, from mgr-agent
version_added: "0.1.0"
description:
  - Reads the agent's state on the managed host (C(mgr-agent list) and C(history), through the
    daemon's socket when it answers) and returns every installed ispmanager plugin and Plesk
    extension with its panel, version and last transaction, and the host's last transaction.
  - Changes nothing; the same facts are returned as C(ansible_facts.mgr_agent_plugins) for
    fleet reports.
author:
  - mgr-agent contributors
options:
  name:
    description:
      - Only this plugin (name or extension id).
    type: str
  root:
    description:
      - Root prefix of every path the agent reads (its C(--root)).
    type: path
    default: /
  wait:
    description:
      - Unused by this read-only module; accepted so that module_defaults for the whole
        C(mgr.agent.agent) group apply.
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
    support: none
  action:
    support: full
seealso:
  - module: mgr.agent.plugin
"""

EXAMPLES = r"""
- name: What is installed
  mgr.agent.plugin_info:
  register: agent

- name: One plugin
  mgr.agent.plugin_info:
    name: demo
  register: demo

- name: Fail unless demo 1.1 is installed
  ansible.builtin.assert:
    that: demo.plugins[0].version == "1.1"
"""

RETURN = r"""
plugins:
  description: Installed plugins, sorted by name and panel.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Plugin name or extension id.
      type: str
      sample: demo
    panel:
      description: C(ispmanager) or C(plesk).
      type: str
      sample: ispmanager
    version:
      description: Installed version (C(VERSION-RELEASE) for Plesk).
      type: str
      sample: "1.1"
    installed_at:
      description: Unix time of the install.
      type: float
    files:
      description: Number of files the plugin owns.
      type: int
    last_transaction:
      description: The plugin's newest transaction (tx, op, from_version, to_version, status,
        started, ended, error code), or null.
      type: dict
last_transaction:
  description: The host's newest transaction (same fields), or null.
  returned: always
  type: dict
agent_via:
  description: How the agent was reached, C(daemon) or C(cli).
  returned: always
  type: str
ansible_facts:
  description: C(mgr_agent_plugins), the same list as RV(plugins).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mgr.agent.plugins.module_utils.agent import (
    AgentCall,
    agent_argument_spec,
    fail_from_result,
)

HISTORY_ROWS = 200
TX_KEYS = ("tx", "op", "name", "panel", "from_version", "to_version", "status", "started", "ended")


def argument_spec():
    spec = agent_argument_spec()
    spec.update(name=dict(type="str"))
    return spec


def summary(row):
    """The fields of a history row a report needs."""
    if not row:
        return None
    out = dict((k, row.get(k)) for k in TX_KEYS)
    out["error"] = (row.get("error") or {}).get("code")
    return out


def collect(listed, history, name=None):
    """Plugins (from ``list`` data) with their last transaction (from ``history`` rows)."""
    plugins = []
    for item in sorted(listed or [], key=lambda r: (r["name"], r["panel"])):
        if name and item["name"] != name:
            continue
        last = next((h for h in history or [] if h.get("name") == item["name"]
                     and h.get("panel") in (item["panel"], None)), None)
        plugins.append(dict(item, last_transaction=summary(last)))
    return plugins


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    agent = AgentCall.from_module(module)
    listed = agent.run("list")
    if not listed.ok:
        fail_from_result(module, listed)
    history = agent.run("history", {"name": module.params["name"], "limit": HISTORY_ROWS})
    if not history.ok:
        fail_from_result(module, history)
    rows = history.get("data") or []
    plugins = collect(listed.get("data"), rows, module.params["name"])
    module.exit_json(changed=False, plugins=plugins, last_transaction=summary(rows[0] if rows else None),
                     agent_via=listed.via, ansible_facts={"mgr_agent_plugins": plugins})


if __name__ == "__main__":
    main()
