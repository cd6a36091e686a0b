"""ispmanager 6 (COREmanager) plugins under ``usr/local/mgr5``."""

from __future__ import annotations

import re
from pathlib import Path

from mgr_agent import xmlsafe
from mgr_agent.archive import Source, read_all
from mgr_agent.errors import InvalidPackage
from mgr_agent.layout import MGR_REL
from mgr_agent.package import FileSpec, Package
from mgr_agent.panels.base import HOOKS, NAME_RE, HookSpec, Panel
from mgr_agent.proc import Runner

MOD_RE = re.compile(r"^etc/xml/ispmgr_mod_([^/]+)\.xml$")
# The panel's own programs and libraries: no plugin may write there.
FORBIDDEN_TOP = frozenset({"bin", "sbin", "lib", "libexec", "lib64"})
LEADING = MGR_REL + "/"


def _rel(name: str) -> str:
    return name[len(LEADING):] if name.startswith(LEADING) else name


def _check_version(version: str, where: str) -> None:
    if version and (len(version) > 64 or any(c.isspace() for c in version)):
        raise InvalidPackage(f"{where}: {version[:64]!r} is not a version (one word, at most 64 "
                             "characters)", path=where, rule="version")


class IspManager(Panel):
    name = "ispmanager"
    detection_rule = "etc/xml/ispmgr_mod_NAME.xml is required (optionally under usr/local/mgr5/)"

    def detect(self, names: set[str]) -> bool:
        return any(MOD_RE.match(_rel(n)) for n in names)

    def anchor(self, name: str) -> Path:
        return self.layout.mgr

    def describe(self, source: Source, prefix: str) -> Package:
        names = {n[len(prefix):]: n for n in source.entries if n.startswith(prefix)}
        mods = sorted(rel for rel in map(_rel, names) if MOD_RE.match(rel))
        if len(mods) != 1:
            raise InvalidPackage(
                f"the package holds {len(mods)} plugin descriptions ({', '.join(mods)}); "
                "exactly one etc/xml/ispmgr_mod_NAME.xml is allowed",
                rule="one-plugin",
            )
        mod_rel = mods[0]
        match = MOD_RE.match(mod_rel)
        assert match is not None
        plugin = match.group(1)
        if not NAME_RE.match(plugin):
            raise InvalidPackage(
                f"{mod_rel}: plugin name {plugin!r} must be letters, digits, '_', '.', '-' "
                "(at most 64, starting with a letter or digit)",
                rule="plugin-name",
            )
        by_rel = {_rel(n): full for n, full in names.items()}
        root = xmlsafe.parse(read_all(source, by_rel[mod_rel]), mod_rel)
        if root.tag != "mgrdata":
            raise InvalidPackage(f"{mod_rel}: root element is <{root.tag}>, it must be <mgrdata>",
                                 path=mod_rel, rule="plugin-xml-root")
        handlers: list[str] = []
        for handler in root.iter("handler"):
            hname = (handler.get("name") or "").strip()
            htype = handler.get("type", "xml")
            if not hname:
                raise InvalidPackage(f"{mod_rel}: a <handler> has no name attribute",
                                     path=mod_rel, rule="handler-name")
            if htype not in ("xml", "cgi"):
                raise InvalidPackage(f"{mod_rel}: handler {hname!r} has type {htype!r}; "
                                     "it must be xml or cgi", path=mod_rel, rule="handler-type")
            if hname.startswith("/") or ".." in hname.split("/"):
                raise InvalidPackage(f"{mod_rel}: handler name {hname!r} must be a path inside addon/",
                                     path=mod_rel, rule="handler-name")
            handlers.append(hname)
        funcs = sorted({f.get("name", "") for f in root.iter("func")} - {""})
        events = sorted({e.get("name", "") for e in root.iter("event")} - {""})

        version = ""
        desc_rel = f"etc/plugins/ispmgr/{plugin}.xml"
        if desc_rel in by_rel:
            desc = xmlsafe.parse(read_all(source, by_rel[desc_rel]), desc_rel)
            if desc.tag != "plugin":
                raise InvalidPackage(f"{desc_rel}: root element is <{desc.tag}>, it must be <plugin>",
                                     path=desc_rel, rule="module-xml-root")
            if desc.get("name") not in (None, plugin):
                raise InvalidPackage(
                    f"{desc_rel}: <plugin name={desc.get('name')!r}> does not match the plugin "
                    f"name {plugin!r} of {mod_rel}", path=desc_rel, rule="module-name")
            version = (desc.get("version") or xmlsafe.text_of(desc, "version") or "").strip()
            _check_version(version, desc_rel)
        if not version and "VERSION" in names:
            version = read_all(source, names["VERSION"]).decode("utf-8", "replace").strip()
            _check_version(version or " ", "VERSION")

        warnings: list[str] = []
        files: dict[str, FileSpec] = {}
        hooks: dict[str, str] = {}
        handler_targets = {f"addon/{h}" for h in handlers}
        for rel_raw, full in sorted(names.items()):
            if rel_raw.startswith("scripts/"):
                hook = rel_raw[len("scripts/"):]
                if hook in HOOKS:
                    hooks[hook] = full
                else:
                    warnings.append(f"{rel_raw}: not a known hook ({', '.join(HOOKS)}); ignored")
                continue
            if "/" not in rel_raw:
                continue  # VERSION, README, LICENSE ... describe the package, not installed
            rel = _rel(rel_raw)
            top = rel.split("/", 1)[0]
            if top in FORBIDDEN_TOP:
                raise InvalidPackage(
                    f"{rel_raw}: plugins may not write the panel's programs and libraries "
                    f"({', '.join(sorted(FORBIDDEN_TOP))}/ of {MGR_REL})",
                    path=rel_raw, rule="forbidden-path")
            mode = source.entries[full].mode
            if rel in handler_targets:
                mode = 0o755
            target = f"{MGR_REL}/{rel}"
            if target in files:
                raise InvalidPackage(f"{rel_raw}: given twice (with and without {LEADING})",
                                     path=rel_raw, rule="duplicate-target")
            files[target] = FileSpec(target=target, entry=full, mode=mode)
        for h in handlers:
            if f"{MGR_REL}/addon/{h}" not in files and not (self.layout.mgr / "addon" / h).is_file():
                raise InvalidPackage(
                    f"{mod_rel}: handler {h!r} needs addon/{h}, which is neither in the package "
                    "nor installed", path=mod_rel, rule="handler-missing")
        return Package(
            panel=self.name, name=plugin, version=version, release="", source=source,
            prefix=prefix, files=files, hooks=hooks, warnings=warnings,
            meta={"handlers": handlers, "funcs": funcs, "events": events, "xml": mod_rel},
        )

    def hook(self, pkg: Package, hook: str) -> HookSpec | None:
        entry = pkg.hooks.get(hook)
        if entry is None:
            return None
        return HookSpec(hook=hook, entry=entry, installed=None, cwd=self.layout.mgr)

    def hook_env(self) -> dict[str, str]:
        return {"MGR_AGENT_PANEL_ROOT": str(self.layout.mgr)}

    def restart(self, runner: Runner) -> list[str]:
        """Drop the panel's XML cache so the next core start reads the new plugin XML.

        Restarting the ``core`` processes and the health window belong to the panel
        runtime (DESIGN §3, step 7); this is where they plug in.
        """
        removed = 0
        var = self.layout.mgr / "var"
        if var.is_dir():
            for cache in var.glob(".db.cache*"):
                cache.unlink(missing_ok=True)
                removed += 1
        return [f"removed {removed} panel cache file(s)"] if removed else []
