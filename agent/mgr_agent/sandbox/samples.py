"""Sample packages for the demo, the tests and plugin authors: real zips, real hooks.

``ispmanager_files``/``plesk_files`` return the package tree as {path: (bytes, mode)};
``write_zip`` packs such a tree.  Hooks are real shell and PHP scripts.

``python -m mgr_agent.sandbox.samples DIR`` writes a few ready packages into DIR for an admin who
wants to try the agent or the daemon (``--help`` lists them).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

Tree = dict[str, tuple[bytes, int]]

HANDLER = '''#!/usr/bin/env python3
"""Settings form of the sample plugin: ispmanager's exampleplugin handler ("Add module to
ispmanager"), ported to Python 3 with its indentation repaired.

Get: the form, its field filled with "Do not change".  Save (clicked_button=ok): the right
value writes "Good job!" to var/{name}.output and answers <ok/>; any other value answers
an <error> naming the field.  Other funcs (events) get the document back unchanged.
"""
import os
import sys
import xml.etree.ElementTree as etree

# The panel runs handlers from /usr/local/mgr5; MGR_ROOT (set by mgr-agent's runner and
# stand-in only) points at MGR under a --root.
MGR = os.environ.get("MGR_ROOT", "/usr/local/mgr5")
OUTPUT = os.path.join(MGR, "var", "{name}.output")


def get(root):
    """Fill the form with its values."""
    etree.SubElement(root, "example_input").text = "Do not change"


def save(root):
    """The Save button: accept the right value, answer an error for any other."""
    value = os.environ.get("PARAM_example_input", "")
    if value == "Do not change":
        os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
        with open(OUTPUT, "w") as fh:
            fh.write("Good job!\\n")
        etree.SubElement(root, "ok")
        return
    error = etree.SubElement(root, "error", code="1", type="{name}", object="wrong_value")
    param = etree.SubElement(error, "param", name="object", type="msg")
    param.text = "wrong_value"
    etree.SubElement(error, "param", name="value").text = value


def main():
    func = os.environ.get("PARAM_func", "")
    wanted = func == "{name}.settings" or (
        func == "plugin.settings" and os.environ.get("PARAM_plugin_settings") == "{name}")
    root = etree.parse(sys.stdin).getroot()  # the panel's XML on stdin
    if wanted:
        if os.environ.get("PARAM_clicked_button") == "ok":
            save(root)
        else:
            get(root)
    sys.stdout.write('<?xml version="1.0" encoding="UTF-8"?>\\n')
    sys.stdout.write(etree.tostring(root, encoding="unicode"))


if __name__ == "__main__":
    main()
'''


def ispmanager_files(name: str = "demo", version: str = "1.0", *, post_install: str = "exit 0",
                     pre_install: str = "exit 0", extra: Tree | None = None) -> Tree:
    """An ispmanager plugin with a settings form handler and shell hooks."""
    mod = f'''<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <handler name="{name}.py" type="xml">
    <func name="{name}.settings"/>
    <event name="plugin.settings" after="yes"/>
  </handler>
  <metadata name="{name}.settings" type="form" mgr="ispmgr">
    <form>
      <field name="example_field" noname="yes" fullwidth="yes">
        <textdata name="example_msg" type="msg"/>
      </field>
      <field name="example_input">
        <input type="text" name="example_input" required="yes"/>
      </field>
      <buttons>
        <button name="ok" type="ok"/>
        <button name="cancel" type="cancel"/>
      </buttons>
    </form>
  </metadata>
  <lang name="en">
    <messages name="{name}.settings">
      <msg name="title">Form example</msg>
      <msg name="example_msg">Message example</msg>
      <msg name="example_input">Input field example</msg>
      <msg name="msg_create">Save</msg>
    </messages>
    <messages name="mgrerror_{name}">
      <msg name="msg_error_{name}">Error in form example: __object__</msg>
      <msg name="wrong_value">incorrect input value __value__</msg>
    </messages>
  </lang>
  <lang name="ru">
    <messages name="{name}.settings">
      <msg name="title">Пример формы</msg>
      <msg name="example_msg">Пример сообщения</msg>
      <msg name="example_input">Пример поля для ввода</msg>
      <msg name="msg_create">Сохранить</msg>
    </messages>
    <messages name="mgrerror_{name}">
      <msg name="msg_error_{name}">Возникла ошибка в работе примера формы: __object__</msg>
      <msg name="wrong_value">некорректное введенное значение __value__</msg>
    </messages>
  </lang>
</mgrdata>
'''.encode()
    desc = f'''<?xml version="1.0" encoding="UTF-8"?>
<plugin name="{name}" version="{version}">
  <msg name="desc_short" lang="en">Module {name}</msg>
  <msg name="desc_full" lang="en">Sample module {name} installed by mgr-agent</msg>
  <msg name="desc_short" lang="ru">Модуль {name}</msg>
  <msg name="desc_full" lang="ru">Пример модуля {name}, установленный mgr-agent</msg>
  <settings>{name}.settings</settings>
</plugin>
'''.encode()
    hook = '#!/bin/sh\necho "{hook} $*: {name} {version}"\n{body}\n'
    tree: Tree = {
        f"etc/xml/ispmgr_mod_{name}.xml": (mod, 0o644),
        f"etc/plugins/ispmgr/{name}.xml": (desc, 0o644),
        f"addon/{name}.py": (HANDLER.replace("{name}", name).encode(), 0o644),
        f"skins/common/img/{name}.txt": (f"{name} {version}\n".encode(), 0o644),
        "scripts/pre-install": (hook.format(hook="pre-install", name=name, version=version,
                                            body=pre_install).encode(), 0o755),
        "scripts/post-install": (hook.format(hook="post-install", name=name, version=version,
                                             body=post_install).encode(), 0o755),
        "scripts/pre-uninstall": (hook.format(hook="pre-uninstall", name=name, version=version,
                                              body="exit 0").encode(), 0o755),
    }
    tree.update(extra or {})
    return tree


def plesk_files(ext: str = "demo-ext", version: str = "1.0", release: str = "1", *,
                post_install: str = "exit(0);", pre_install: str = "exit(0);",
                extra: Tree | None = None, meta_extra: str = "") -> Tree:
    """A Plesk extension with PHP hooks, an sbin helper and var/ data. It has no catalog
    files (CHANGES.md, ``_meta/``): ``check`` warns about those, ``install`` lists them."""
    from mgr_agent.panels.plesk.checks_code import camel  # noqa: PLC0415 - keeps `samples` light

    meta = f'''<?xml version="1.0" encoding="utf-8"?>
<module>
  <id>{ext}</id>
  <name>Demo {ext}</name>
  <description>Sample extension installed by mgr-agent</description>
  <category>security</category>
  <version>{version}</version>
  <release>{release}</release>
  <vendor>mgr-agent</vendor>
  <plesk_min_version>18.0</plesk_min_version>
  <os>unix</os>{meta_extra}
</module>
'''.encode()

    def php(hook: str, body: str) -> bytes:
        return (f'<?php\necho "{hook} " . implode(" ", array_slice($argv, 1)) . ": {ext} {version}\\n";\n'
                f"{body}\n").encode()

    tree: Tree = {
        "meta.xml": (meta, 0o644),
        "DESCRIPTION.md": (f"# {ext}\n\nSample extension.\n".encode(), 0o644),
        "htdocs/index.php": (f"<?php echo 'hello from {ext} {version}';\n".encode(), 0o644),
        "htdocs/css/style.css": (f"/* {version} */ body {{ color: #333; }}\n".encode(), 0o644),
        f"plib/library/Version{version.replace('.', '')}.php": (
            f"<?php class Modules_{camel(ext)}_Version{version.replace('.', '')} {{}}\n".encode(), 0o644),

        "plib/controllers/IndexController.php": (f"<?php // {version}\n".encode(), 0o644),
        "plib/scripts/pre-install.php": (php("pre-install", pre_install), 0o644),
        "plib/scripts/post-install.php": (php("post-install", post_install), 0o644),
        "plib/scripts/pre-uninstall.php": (php("pre-uninstall", "exit(0);"), 0o644),
        "sbin/helper.sh": (b"#!/bin/sh\necho helper\n", 0o644),
        "var/settings.json": (f'{{"installed_as": "{version}"}}\n'.encode(), 0o644),
    }
    tree.update(extra or {})
    return tree


def write_zip(tree: Tree, dest: Path, *, prefix: str = "") -> Path:
    """Pack ``tree`` into a zip at ``dest`` (Unix modes kept), optionally under ``prefix``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (data, mode) in sorted(tree.items()):
            info = zipfile.ZipInfo(prefix + name, date_time=(2026, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return dest


def write_dir(tree: Tree, dest: Path) -> Path:
    for name, (data, mode) in tree.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    return dest


def write_samples(dest: Path, *, name: str = "demo", ext: str = "demo-ext") -> list[Path]:
    """The packages ``python -m mgr_agent.sandbox.samples`` writes: an ispmanager plugin in two
    versions, one whose post-install hook fails (an upgrade that is rolled back), and a
    Plesk extension in two versions."""
    packages = [
        (ispmanager_files(name, "1.0"), f"{name}-1.0.zip"),
        (ispmanager_files(name, "1.1"), f"{name}-1.1.zip"),
        (ispmanager_files(name, "1.2", post_install='echo "sample failure" >&2; exit 1'),
         f"{name}-1.2-failing-post-install.zip"),
        (plesk_files(ext, "1.0"), f"{ext}-1.0-1.zip"),
        (plesk_files(ext, "1.1"), f"{ext}-1.1-1.zip"),
    ]
    return [write_zip(tree, dest / file) for tree, file in packages]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgr_agent.sandbox.samples",
        description="Write sample packages to try mgr-agent (in-process or through the daemon): "
                    "an ispmanager plugin NAME 1.0 and 1.1, NAME 1.2 whose post-install hook "
                    "fails (the upgrade is rolled back), and a Plesk extension EXT 1.0 and 1.1. "
                    "Then e.g. `mgr-agent install DIR/NAME-1.0.zip`.")
    parser.add_argument("dest", type=Path, help="directory to write the zips into (created)")
    parser.add_argument("--name", default="demo", help="the ispmanager plugin's name (default demo)")
    parser.add_argument("--ext", default="demo-ext", help="the Plesk extension's id (default demo-ext)")
    args = parser.parse_args(argv)
    for path in write_samples(args.dest, name=args.name, ext=args.ext):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
