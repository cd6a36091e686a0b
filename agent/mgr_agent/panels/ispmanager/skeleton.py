"""``mgr-agent new NAME --panel ispmanager``: an ispmanager plugin skeleton that passes
``check --strict``, installs, and answers through ``mgr-agent call`` (written by
:mod:`mgr_agent.scaffold`)."""

from __future__ import annotations

import re

from mgr_agent.errors import UsageError
from mgr_agent.panels.base import NAME_RE, Skeleton, Tree

ISP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def skeleton(name: str) -> Skeleton:
    if not ISP_NAME.match(name) or not NAME_RE.match(name):
        raise UsageError(f"{name!r}: an ispmanager plugin name here is a lower-case letter, then "
                         "lower-case letters, digits and '_' (at most 32) [rule: plugin-name]")
    return Skeleton(ispmanager_tree(name), "1.0")


HANDLER = '''#!/usr/bin/env python3
"""Settings form of the ispmanager plugin NAME: Get fills the form, Set (the OK button)
validates and saves, a bad value answers an <error> that the panel shows at the field.

The panel passes its XML on stdin and the request in PARAM_* variables, and reads one XML
document from stdout. Try it without a panel: mgr-agent call NAME.settings
"""
import json
import os
import sys
import xml.etree.ElementTree as etree

# The panel runs handlers from /usr/local/mgr5; MGR_ROOT is set by mgr-agent's runner.
MGR = os.environ.get("MGR_ROOT", "/usr/local/mgr5")
STORE = os.path.join(MGR, "var", "NAME.json")
DEFAULT = "Hello"


def load():
    try:
        with open(STORE) as fh:
            return json.load(fh).get("greeting", DEFAULT)
    except (OSError, ValueError):
        return DEFAULT


def get(doc):
    """Fill the form: the saved value."""
    etree.SubElement(doc, "greeting").text = load()


def set_(doc):
    """Save the form; an empty or too long value is an error at the field."""
    value = os.environ.get("PARAM_greeting", "").strip()
    if not value or len(value) > 64:
        error = etree.SubElement(doc, "error", type="NAME", object="greeting")
        etree.SubElement(error, "param", name="object", type="msg").text = "greeting"
        etree.SubElement(error, "param", name="value").text = value
        etree.SubElement(error, "msg").text = "The greeting must be 1 to 64 characters"
        return
    os.makedirs(os.path.dirname(STORE), exist_ok=True)
    tmp = STORE + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"greeting": value}, fh)
    os.replace(tmp, STORE)
    etree.SubElement(doc, "ok")


def main():
    func = os.environ.get("PARAM_func", "")
    data = sys.stdin.buffer.read()
    doc = etree.fromstring(data) if data.strip() else etree.Element("doc")
    if func == "NAME.settings":  # also what the Modules section's Settings button calls
        if os.environ.get("PARAM_sok") == "ok" or os.environ.get("PARAM_clicked_button") == "ok":
            set_(doc)
        else:
            get(doc)
    sys.stdout.write('<?xml version="1.0" encoding="UTF-8"?>\\n')
    sys.stdout.write(etree.tostring(doc, encoding="unicode"))


if __name__ == "__main__":
    main()
'''


def ispmanager_tree(name: str) -> Tree:
    """Module description, plugin XML with one form func (messages in ru and en), a
    Python handler with Get/Set and an error case, and the three hooks."""
    module = f"""<?xml version="1.0" encoding="UTF-8"?>
<plugin name="{name}" version="1.0">
  <msg name="desc_short" lang="ru">Модуль {name}</msg>
  <msg name="desc_short" lang="en">Module {name}</msg>
  <msg name="desc_full" lang="ru">Что делает модуль {name}</msg>
  <msg name="desc_full" lang="en">What the {name} module does</msg>
  <settings>{name}.settings</settings>
</plugin>
"""
    plugin = f"""<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <mainmenu level="30">
    <modernmenu>
      <node name="set">
        <node name="{name}.settings"/>
      </node>
    </modernmenu>
  </mainmenu>
  <handler name="{name}.py" type="xml">
    <func name="{name}.settings"/>
  </handler>
  <metadata name="{name}.settings" type="form" mgr="ispmgr">
    <form>
      <field name="greeting">
        <input type="text" name="greeting" required="yes"/>
      </field>
      <buttons>
        <button name="ok" type="ok"/>
        <button name="cancel" type="cancel"/>
      </buttons>
    </form>
  </metadata>
  <lang name="en">
    <messages name="desktop">
      <msg name="modernmenu_{name}.settings">{name} settings</msg>
    </messages>
    <messages name="{name}.settings">
      <msg name="title">{name} settings</msg>
      <msg name="greeting">Greeting</msg>
      <msg name="hint_greeting">Shown to users; 1 to 64 characters</msg>
    </messages>
    <messages name="mgrerror_{name}">
      <msg name="msg_error_{name}">Invalid value: __object__</msg>
      <msg name="greeting">greeting __value__</msg>
    </messages>
  </lang>
  <lang name="ru">
    <messages name="desktop">
      <msg name="modernmenu_{name}.settings">Настройки {name}</msg>
    </messages>
    <messages name="{name}.settings">
      <msg name="title">Настройки {name}</msg>
      <msg name="greeting">Приветствие</msg>
      <msg name="hint_greeting">Видно пользователям; от 1 до 64 символов</msg>
    </messages>
    <messages name="mgrerror_{name}">
      <msg name="msg_error_{name}">Неверное значение: __object__</msg>
      <msg name="greeting">приветствие __value__</msg>
    </messages>
  </lang>
</mgrdata>
"""
    tree: Tree = {
        f"etc/plugins/ispmgr/{name}.xml": (module.encode(), 0o644),
        f"etc/xml/ispmgr_mod_{name}.xml": (plugin.encode(), 0o644),
        f"addon/{name}.py": (HANDLER.replace("NAME", name).encode(), 0o755),
    }
    for hook in ("pre-install", "post-install", "pre-uninstall"):
        body = (f'#!/bin/sh\n# {hook} hook of {name}: runs from usr/local/mgr5 with '
                f'MGR_AGENT_ACTION and MGR_AGENT_VERSION set; a non-zero exit stops the action.\n'
                f'echo "{hook} {name}: $*"\nexit 0\n')
        tree[f"scripts/{hook}"] = (body.encode(), 0o755)
    return tree
