"""``mgr-agent new NAME --panel plesk|ispmanager``: a minimal, correct, installable skeleton.

A fresh skeleton passes ``check --strict``, packs, installs, and (ispmanager) its
handler answers through ``mgr-agent call``. The tree is written into a temporary sibling
directory and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from pathlib import Path

from mgr_agent import png
from mgr_agent.checks.plesk_code import camel
from mgr_agent.checks.plesk_meta import CATALOG_ID, FILLER
from mgr_agent.errors import UsageError
from mgr_agent.fsutil import fsync_dir, sync_filesystems, write_new
from mgr_agent.panels.base import NAME_RE
from mgr_agent.result import Result

Tree = dict[str, tuple[bytes, int]]
ISP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _title(ext_id: str) -> str:
    """A catalog-friendly name from the id: words without filler, at most 25 characters."""
    words = [w.capitalize() for w in ext_id.split("-") if w not in FILLER] or ["Tools"]
    name = ""
    for word in words:
        if len(name) + len(word) + 1 > 25:
            break
        name = f"{name} {word}".strip()
    return name or words[0][:25]


@functools.cache
def icon(size: int) -> bytes:
    """A blue disc on a transparent background (a PNG of ``size`` x ``size``)."""
    centre, radius = (size - 1) / 2, size * 0.42
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= radius ** 2
            row += bytes((37, 99, 178, 255) if inside else (0, 0, 0, 0))
        rows.append(bytes(row))
    return png.encode_rgba(size, rows)


@functools.cache
def screenshot() -> bytes:
    """A 1024x768 PNG: a blue bar over a light page."""
    bar, body = bytes((37, 99, 178, 255)) * 1024, bytes((246, 247, 249, 255)) * 1024
    return png.encode_rgba(1024, [bar] * 64 + [body] * (768 - 64))


def _php_hook(hook: str, ext: str) -> bytes:
    return f"""<?php
// {hook} hook of {ext}: argv[1] is "install" or "upgrade" (then argv[2], argv[3]: the old
// version and release). A non-zero exit stops the action; the output is shown as the error.
$action = $argv[1] ?? 'install';
echo "{hook} {ext}: $action\\n";
exit(0);
""".encode()


def plesk_tree(ext: str) -> Tree:
    """meta.xml, the catalog files, an entry point, a controller, a view, an autoloaded
    class, the three hooks and ``_meta`` images that pass ``check --strict``."""
    name = _title(ext)
    cls = f"Modules_{camel(ext)}_Settings"
    meta = f"""<?xml version="1.0" encoding="utf-8"?>
<module>
  <id>{ext}</id>
  <name>{name}</name>
  <description>{name}: describe in one sentence what it does for the administrator.</description>
  <category>server_tool</category>
  <version>1.0</version>
  <release>1</release>
  <vendor>Your Company</vendor>
  <url>https://example.com/</url>
  <support_url>https://example.com/support</support_url>
  <help_url>https://example.com/docs</help_url>
  <plesk_min_version>18.0</plesk_min_version>
  <os>unix</os>
</module>
"""
    controller = f"""<?php
// The extension's pages: https://PLESK:8443/modules/{ext}/
class IndexController extends pm_Controller_Action
{{
    public function indexAction()
    {{
        $this->view->pageTitle = '{name}';
        $this->view->greeting = {cls}::greeting();
    }}
}}
"""
    library = f"""<?php
// Autoloaded: plib/library/Settings.php holds {cls} (docs/check.md, autoload-class-name).
class {cls}
{{
    public static function greeting()
    {{
        return pm_Settings::get('greeting', 'Hello from {name}');
    }}
}}
"""
    tree: Tree = {
        "meta.xml": (meta.encode(), 0o644),
        "DESCRIPTION.md": (f"# {name}\n\nWhat {name} does, its limits, and what needs a license.\n"
                           .encode(), 0o644),
        "CHANGES.md": (b"# 1.0-1\n\n* [+] First release.\n", 0o644),
        "htdocs/index.php": (b"<?php\n(new pm_Application())->run();\n", 0o644),
        "plib/controllers/IndexController.php": (controller.encode(), 0o644),
        "plib/views/scripts/index/index.phtml": (b"<p><?php echo $this->escape($this->greeting); ?></p>\n",
                                                 0o644),
        "plib/library/Settings.php": (library.encode(), 0o644),
        "_meta/screenshots/1.png": (screenshot(), 0o644),
    }
    for hook in ("pre-install", "post-install", "pre-uninstall"):
        tree[f"plib/scripts/{hook}.php"] = (_php_hook(hook, ext), 0o644)
    for size in (32, 64, 128):
        tree[f"_meta/icons/{size}x{size}.png"] = (icon(size), 0o644)
    return tree


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


def create(name: str, panel: str | None, directory: Path | None = None) -> Result:
    """Write the skeleton of ``name`` for ``panel`` into ``directory`` (default ./NAME)."""
    if panel is None:
        raise UsageError("new: --panel plesk or --panel ispmanager is required")
    if panel == "plesk":
        if not CATALOG_ID.match(name) or len(name) > 64:
            raise UsageError(f"{name!r}: a Plesk extension id is lower-case words joined by dashes "
                             "(e.g. my-backup) [rule: meta-id]")
        tree = plesk_tree(name)
    elif panel == "ispmanager":
        if not ISP_NAME.match(name) or not NAME_RE.match(name):
            raise UsageError(f"{name!r}: an ispmanager plugin name here is a lower-case letter, then "
                             "lower-case letters, digits and '_' (at most 32) [rule: plugin-name]")
        tree = ispmanager_tree(name)
    else:
        raise UsageError(f"unknown panel {panel!r}: plesk or ispmanager")
    dest = (directory or Path(name)).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: exists and is not an empty directory; nothing was written")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        for rel, (data, mode) in sorted(tree.items()):
            path = scratch / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new(path, (data,), mode, sync=False)
        scratch.chmod(0o755)
        sync_filesystems([scratch])     # every file durable before the tree gets its name
        if dest.exists():
            dest.rmdir()
        os.rename(scratch, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Result(action="created", changed=True, name=name, panel=panel,
                  version="1.0-1" if panel == "plesk" else "1.0",
                  notes=[f"in {dest}", f"next: mgr-agent check --strict {dest}; mgr-agent pack {dest}"],
                  data={"path": str(dest), "files": sorted(tree)})
