"""``mgr-agent new NAME --panel plesk``: a Plesk extension skeleton that passes
``check --strict``, packs and installs (written by :mod:`mgr_agent.scaffold`)."""

from __future__ import annotations

import functools

from mgr_agent import png
from mgr_agent.errors import UsageError
from mgr_agent.panels.base import Skeleton, Tree
from mgr_agent.panels.plesk.checks_code import camel
from mgr_agent.panels.plesk.checks_meta import CATALOG_ID, FILLER


def skeleton(ext: str) -> Skeleton:
    if not CATALOG_ID.match(ext) or len(ext) > 64:
        raise UsageError(f"{ext!r}: a Plesk extension id is lower-case words joined by dashes "
                         "(e.g. my-backup) [rule: meta-id]")
    return Skeleton(plesk_tree(ext), "1.0-1")


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
