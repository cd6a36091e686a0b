"""ispmanager 6 plugins: the plugin XML (handlers, funcs, events, menu, messages) and the
module description.

Rules from ispmanager's *XML description of plugins* (elements <handler>, <mainmenu>,
<lang>) and *Add module to ispmanager* (module description); docs/check.md cites each one.
Names are relative to MGR (a leading ``usr/local/mgr5/`` is removed before the checks).
"""

from __future__ import annotations

import re
import stat

from mgr_agent import xmlsafe
from mgr_agent.checks.base import Context, Files, find
from mgr_agent.findings import Finding
from mgr_agent.panels.base import HOOKS, NAME_RE
from mgr_agent.panels.ispmanager.layout import FORBIDDEN_TOP, MOD_RE

LEVELS = frozenset({"30", "29", "24", "16", "9"})  # root, administrator, reseller, user, mailbox
YES_NO = ("yes", "no")
DESC_LANGS = ("ru", "en")
DISTS = ("1", "3")
MAX_LISTED = 5


def _line(el: xmlsafe.Element) -> int | None:
    line = el.sourceline
    return line if isinstance(line, int) else None


def plugin_xml(files: Files) -> list[str]:
    return sorted(rel for rel in files if MOD_RE.match(rel))


def check_layout(files: Files, ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    mods = plugin_xml(files)
    if len(mods) != 1:
        out.append(find("one-plugin", "error",
                        f"the package holds {len(mods)} plugin descriptions ({', '.join(mods) or 'none'})",
                        "ship exactly one etc/xml/ispmgr_mod_NAME.xml per package"))
    for rel in files:
        top = rel.split("/", 1)[0]
        if "/" in rel and top in FORBIDDEN_TOP:
            out.append(find("forbidden-path", "error",
                            "plugins may not write the panel's programs and libraries "
                            f"({', '.join(sorted(FORBIDDEN_TOP))}/ of usr/local/mgr5)",
                            "put handlers in addon/ and other files in etc/ or skins/", rel))
        if rel.startswith("scripts/") and rel[len("scripts/"):] not in HOOKS:
            out.append(find("hook-unknown", "warning",
                            f"not a known hook ({', '.join(HOOKS)}); ignored",
                            "rename it to one of the hooks, or move it out of scripts/", rel))
    return out


def check_plugin(files: Files, ctx: Context) -> list[Finding]:
    mods = plugin_xml(files)
    if len(mods) != 1:
        return []
    rel = mods[0]
    match = MOD_RE.match(rel)
    assert match is not None
    name = match.group(1)
    out: list[Finding] = []
    if not NAME_RE.match(name):
        out.append(find("plugin-name", "error",
                        f"plugin name {name!r} must be letters, digits, '_', '.', '-' (at most 64, "
                        "starting with a letter or digit)", "rename the file ispmgr_mod_NAME.xml", rel))
    root = files.xml(rel)
    if root is None:
        return out
    if root.tag != "mgrdata":
        return [*out, find("plugin-xml-root", "error", f"root element is <{root.tag}>, it must be <mgrdata>",
                           "make <mgrdata> the root element", rel, _line(root))]
    out += _handlers(files, ctx, root, rel)
    langs = _langs(root, rel, out)
    out += _menu(root, rel, langs)
    out += _titles(root, rel, langs)
    out += _gaps(rel, langs)
    return out


def _handlers(files: Files, ctx: Context, root: xmlsafe.Element, rel: str) -> list[Finding]:
    out: list[Finding] = []
    for handler in root.iter("handler"):
        hname = (handler.get("name") or "").strip()
        htype = handler.get("type")
        line = _line(handler)
        if not hname:
            out.append(find("handler-name", "error", "a <handler> has no name attribute",
                            "name the handler's file, relative to addon/: <handler name=\"x.py\">",
                            rel, line))
        elif hname.startswith("/") or ".." in hname.split("/"):
            out.append(find("handler-name", "error", f"handler name {hname!r} must be a path inside addon/",
                            "give the file's path relative to addon/", rel, line))
            hname = ""
        if htype is None:
            out.append(find("handler-type-missing", "warning", f"<handler name=\"{hname}\"> has no type",
                            "add type=\"xml\" (or type=\"cgi\")", rel, line))
        elif htype not in ("xml", "cgi"):
            out.append(find("handler-type", "error", f"handler {hname!r} has type {htype!r}; it must be "
                            "xml or cgi", "set type=\"xml\" or type=\"cgi\"", rel, line))
        if hname:
            target = f"addon/{hname}"
            if target in files:
                if not files.mode(target) & stat.S_IXUSR:
                    out.append(find("handler-not-executable", "warning",
                                    f"mode {files.mode(target):04o}: the panel runs handlers as programs "
                                    "(mgr-agent installs them 0755)", f"chmod 755 {target}", target))
            elif ctx.mgr is None or not (ctx.mgr / target).is_file():
                out.append(find("handler-missing", "error",
                                f"handler {hname!r} needs {target}, which is not in the package",
                                f"add the handler as {target}", rel, line))
        for el in handler:
            if el.tag not in ("func", "event"):
                continue
            if not (el.get("name") or "").strip():
                out.append(find("func-name", "error", f"a <{el.tag}> has no name attribute",
                                f"name the function: <{el.tag} name=\"plugin.func\"/>", rel, _line(el)))
            if el.tag == "event":
                when = {k: el.get(k) for k in ("before", "after") if el.get(k) is not None}
                bad = {k: v for k, v in when.items() if v not in YES_NO}
                if bad:
                    key, value = next(iter(bad.items()))
                    out.append(find("event-when", "error", f"<event {key}=\"{value}\">: must be yes or no",
                                    f"write {key}=\"yes\"", rel, _line(el)))
                elif when.get("before") == "yes" and when.get("after") == "yes":
                    out.append(find("event-when", "error", "an <event> cannot run both before and after",
                                    "keep before=\"yes\" or after=\"yes\", not both", rel, _line(el)))
    return out


Langs = dict[str, dict[tuple[str, str], "xmlsafe.Element"]]  # quoted: lxml loads at the first parse


def _langs(root: xmlsafe.Element, rel: str, out: list[Finding]) -> Langs:
    """lang -> {(messages name, msg name): element}."""
    langs: Langs = {}
    for lang in root.findall("lang"):
        code = (lang.get("name") or "").strip()
        if not code:
            out.append(find("lang-name", "warning", "a <lang> has no name attribute",
                            "write <lang name=\"en\"> (or ru, …)", rel, _line(lang)))
            continue
        table = langs.setdefault(code, {})
        for messages in lang.findall("messages"):
            group = messages.get("name") or ""
            for msg in messages.findall("msg"):
                table.setdefault((group, msg.get("name") or ""), msg)
    return langs


def _menu(root: xmlsafe.Element, rel: str, langs: Langs) -> list[Finding]:
    out: list[Finding] = []
    menus = root.findall("mainmenu")
    if len(menus) > 1:
        out.append(find("mainmenu-multiple", "warning",
                        f"{len(menus)} <mainmenu> elements; the panel reads one",
                        "merge them into one <mainmenu>", rel, _line(menus[1])))
    for menu in menus:
        level = menu.get("level")
        if level is not None and level.strip() not in LEVELS:
            out.append(find("menu-level", "error",
                            f"<mainmenu level=\"{level}\">: not an access level",
                            "use 30 (root), 29 (administrator), 24 (reseller), 16 (user) or 9 (mailbox)",
                            rel, _line(menu)))
        groups = [(g, "menu_") for g in menu.findall("node")]
        groups += [(g, "modernmenu_") for mm in menu.findall("modernmenu") for g in mm.findall("node")]
        if not langs and groups:
            out.append(find("lang-missing", "warning", "the menu has items but the plugin declares no <lang>",
                            "add <lang name=\"en\"> and <lang name=\"ru\"> with <messages name=\"desktop\">",
                            rel, _line(menu)))
        for group, prefix in groups:
            for item in group.findall("node"):
                key = prefix + (item.get("name") or "")
                for code, table in sorted(langs.items()):
                    if ("desktop", key) not in table:
                        out.append(find("menu-msg-missing", "warning",
                                        f"menu item {item.get('name')!r} has no <msg name=\"{key}\"> in "
                                        f"<lang name=\"{code}\"><messages name=\"desktop\">",
                                        f"add <msg name=\"{key}\">…</msg> to the desktop messages of "
                                        f"{code}", rel, _line(item)))
    return out


def _titles(root: xmlsafe.Element, rel: str, langs: Langs) -> list[Finding]:
    out: list[Finding] = []
    for handler in root.iter("handler"):
        for func in handler.findall("func"):
            name = (func.get("name") or "").strip()
            if not name:
                continue
            for code, table in sorted(langs.items()):
                if (name, "title") not in table:
                    out.append(find("func-title-missing", "warning",
                                    f"func {name!r} has no title in <lang name=\"{code}\">",
                                    f"add <messages name=\"{name}\"><msg name=\"title\">…</msg></messages>",
                                    rel, _line(func)))
    return out


def _gaps(rel: str, langs: Langs) -> list[Finding]:
    out: list[Finding] = []
    every = set().union(*(set(t) for t in langs.values())) if langs else set()
    for code, table in sorted(langs.items()):
        missing = sorted(every - set(table))
        if missing:
            shown = ", ".join(f"{g}/{m}" for g, m in missing[:MAX_LISTED])
            more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
            out.append(find("lang-gap", "warning",
                            f"<lang name=\"{code}\"> lacks {len(missing)} message(s) other languages have: "
                            f"{shown}{more}", f"translate the missing messages into {code}", rel))
    return out


def check_module(files: Files, ctx: Context) -> list[Finding]:
    """The module description etc/plugins/ispmgr/NAME.xml, when present."""
    mods = plugin_xml(files)
    if len(mods) != 1:
        return []
    match = MOD_RE.match(mods[0])
    assert match is not None
    name = match.group(1)
    rel = f"etc/plugins/ispmgr/{name}.xml"
    out: list[Finding] = []
    for other in files.under("etc/plugins/ispmgr/"):
        if other != rel and other.endswith(".xml"):
            out.append(find("module-extra", "warning",
                            f"module description for another name than the plugin {name!r}; "
                            "the panel pairs it with no plugin",
                            f"name it etc/plugins/ispmgr/{name}.xml", other))
    if rel not in files:
        return out
    root = files.xml(rel)
    if root is None:
        return out
    if root.tag != "plugin":
        return [*out, find("module-xml-root", "error", f"root element is <{root.tag}>, it must be <plugin>",
                           "make <plugin name=\"NAME\"> the root element", rel, _line(root))]
    if root.get("name") != name:
        out.append(find("module-name", "error",
                        f"<plugin name={root.get('name')!r}> must be the plugin's name {name!r}",
                        f"write <plugin name=\"{name}\">", rel, _line(root)))
    msgs = {(m.get("name"), m.get("lang")) for m in root.findall("msg")}
    for msg in ("desc_short", "desc_full"):
        for lang in DESC_LANGS:
            if (msg, lang) not in msgs:
                out.append(find("module-desc-missing", "warning",
                                f"no <msg name=\"{msg}\" lang=\"{lang}\">: the Modules section shows it",
                                f"add <msg name=\"{msg}\" lang=\"{lang}\">…</msg>", rel, _line(root)))
    for el in root.iter():
        dist = el.get("dist") if el.tag == "msg" else ((el.text or "").strip() if el.tag == "dist" else None)
        if dist is not None and dist not in DISTS:
            out.append(find("module-dist", "warning",
                            f"dist {dist!r} is neither 1 (Lite, Pro, Host) nor 3 (Business)",
                            "use 1 or 3, or leave dist out for every edition", rel, _line(el)))
    for el in root.findall("weight"):
        if not re.fullmatch(r"-?\d+", (el.text or "").strip()):
            out.append(find("module-weight", "warning", f"<weight>{(el.text or '').strip()}</weight> is "
                            "not a number", "write an integer; higher weights come first", rel, _line(el)))
    return out


VALIDATORS = (check_layout, check_plugin, check_module)
