"""ispmanager 6 (COREmanager) plugins under ``usr/local/mgr5``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent import xmlsafe
from mgr_agent.errors import HealthCheckFailed, InvalidPackage
from mgr_agent.layout import MGR_REL
from mgr_agent.panels.base import (
    HOOKS,
    NAME_RE,
    CallAnswer,
    HookSpec,
    LogQuery,
    LogRecord,
    Mark,
    Panel,
    Skeleton,
)
from mgr_agent.panels.ispmanager.layout import (
    FLAT_RE,
    MOD_RE,
    check_version,
    hook_of,
    map_flat,
    map_tree,
    plugin_xml,
    rel_to_mgr,
)

if TYPE_CHECKING:  # types only: every command builds the panel, few read a package
    import psutil

    from mgr_agent.archive import Source
    from mgr_agent.checks.base import Validator
    from mgr_agent.package import Package
    from mgr_agent.proc import Runner


def log_names(name: str, meta: Mapping[str, Any]) -> set[str]:
    """Names by which ispmgr.log mentions a plugin: its name, XML file, handlers, funcs."""
    names = {name, Path(str(meta.get("xml", ""))).name, *meta.get("handlers", []),
             *meta.get("funcs", []), *meta.get("events", [])}
    names.discard("")
    return names


# directories of the panel that several plugins (and the panel) write into
SHARED = frozenset({"etc", "etc/xml", "etc/plugins", "etc/plugins/ispmgr", "etc/sql",
                    "etc/templates", "etc/scripts", "addon", "skins", "skins/common",
                    "skins/common/img", "var", "lib", "bin", "sbin", "libexec", "lib64"})


def _shared(rel: str) -> bool:
    """Whether MGR-relative directory ``rel`` is shared: a well-known one, a table's
    ``etc/sql/T.addon``, or a skin's own folder."""
    head, _, _ = rel.rpartition("/")
    return rel in SHARED or "/" not in rel or head in ("etc/sql", "skins")


class IspManager(Panel):
    name = "ispmanager"
    detection_rule = ("etc/xml/ispmgr_mod_NAME.xml (optionally under usr/local/mgr5/), or "
                      "ispmgr_mod_NAME.xml at the top beside its handlers")
    serves = frozenset({"logs", "call", "debug"})

    def detect(self, names: set[str]) -> bool:
        return any(MOD_RE.match(rel_to_mgr(n)) or FLAT_RE.match(n) for n in names)

    def anchor(self, name: str) -> Path:
        return self.layout.mgr

    def whole_dirs(self, name: str, created: Iterable[str]) -> list[str]:
        """The outermost directories the agent made for the plugin that are not one of the
        panel's shared ones (``etc/xml``, ``addon``, ``skins/common/img``, a table's
        ``etc/sql/T.addon`` ...), e.g. ``addon/NAME-lib`` or ``skins/common/img/NAME``."""
        mine = set(created)
        top = f"{MGR_REL}/"
        own = {d for d in mine if d.startswith(top) and not _shared(d[len(top):])}
        return sorted(d for d in own if d.rpartition("/")[0] not in own)

    def describe(self, source: Source, prefix: str) -> Package:
        from mgr_agent.archive import read_all  # noqa: PLC0415 - the archive readers: see above
        from mgr_agent.package import Package  # noqa: PLC0415

        names = {n[len(prefix):]: n for n in source.entries if n.startswith(prefix)}
        mods = sorted(rel for rel in map(rel_to_mgr, names) if MOD_RE.match(rel))
        flat = not mods
        if flat:  # ispmgr_mod_NAME.xml at the top, beside the handlers it names
            mods = sorted(rel for rel in names if FLAT_RE.match(rel))
        if len(mods) != 1:
            raise InvalidPackage(
                f"the package holds {len(mods)} plugin descriptions ({', '.join(mods)}); "
                "exactly one etc/xml/ispmgr_mod_NAME.xml is allowed",
                hint="a repository of several plugins: install each plugin's folder on its own",
                rule="one-plugin",
            )
        mod_rel = mods[0]
        match = (FLAT_RE if flat else MOD_RE).match(mod_rel)
        assert match is not None
        plugin = match.group(1)
        if not NAME_RE.match(plugin):
            raise InvalidPackage(
                f"{mod_rel}: plugin name {plugin!r} must be letters, digits, '_', '.', '-' "
                "(at most 64, starting with a letter or digit)",
                rule="plugin-name",
            )
        by_rel = {rel_to_mgr(n): full for n, full in names.items()}
        handlers, funcs, events = plugin_xml(read_all(source, by_rel[mod_rel]), mod_rel)
        version = self._version(source, plugin, names, by_rel)
        if flat:
            files, hooks, skipped = map_flat(source, names, mod_rel, handlers)
        else:
            files, hooks, skipped = map_tree(source, names, handlers)
            for h in handlers:
                if f"{MGR_REL}/addon/{h}" not in files and not (self.layout.mgr / "addon" / h).is_file():
                    raise InvalidPackage(
                        f"{mod_rel}: handler {h!r} needs addon/{h}, which is neither in the package "
                        "nor installed", path=mod_rel, rule="handler-missing")
        warnings = [f"{rel}: not a known hook ({', '.join(HOOKS)}); ignored"
                    for rel in sorted(names) if rel.startswith("scripts/") and hook_of(rel) is None]
        return Package(
            panel=self.name, name=plugin, version=version, release="", source=source,
            prefix=prefix, files=files, hooks=hooks, warnings=warnings,
            meta={"handlers": handlers, "funcs": funcs, "events": events,
                  "xml": f"etc/xml/{mod_rel}" if flat else mod_rel},
            not_installed=skipped,
            not_installed_why=("beside the plugin XML that it does not name" if flat else
                               "at the top of the package (only folders are installed)"),
        )

    @staticmethod
    def _version(source: Source, plugin: str, names: dict[str, str], by_rel: dict[str, str]) -> str:
        """From etc/plugins/ispmgr/NAME.xml, else a VERSION file, else "" (a content hash)."""
        from mgr_agent.archive import read_all  # noqa: PLC0415

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
                    f"name {plugin!r}", path=desc_rel, rule="module-name")
            version = (desc.get("version") or xmlsafe.text_of(desc, "version") or "").strip()
            check_version(version, desc_rel)
        if not version and "VERSION" in names:
            version = read_all(source, names["VERSION"]).decode("utf-8", "replace").strip()
            check_version(version or " ", "VERSION")
        return version

    def hook_entry(self, hook: str) -> str:
        return f"scripts/{hook}"  # as layout.hook_of reads it

    def hook(self, pkg: Package, hook: str) -> HookSpec | None:
        entry = pkg.hooks.get(hook)
        if entry is None:
            return None
        return HookSpec(hook=hook, entry=entry, installed=None, cwd=self.layout.mgr)

    def hook_env(self) -> dict[str, str]:
        return {"MGR_AGENT_PANEL_ROOT": str(self.layout.mgr)}

    # ------------------------------------------------------------ check and pack
    @classmethod
    def skeleton(cls, name: str) -> Skeleton:
        from mgr_agent.panels.ispmanager import skeleton  # noqa: PLC0415 - only `new` needs it

        return skeleton.skeleton(name)

    def validators(self) -> tuple[Validator, ...]:
        from mgr_agent.panels.ispmanager import checks  # noqa: PLC0415 - only check/install

        return checks.VALIDATORS

    def check_names(self, source: Source, prefix: str) -> dict[str, str]:
        """Names relative to MGR: a leading ``usr/local/mgr5/`` is removed, and a flat
        layout is mapped the way install maps it (the plugin XML to ``etc/xml/``, its
        handlers to ``addon/``)."""
        from mgr_agent.archive import read_all  # noqa: PLC0415

        names = {n[len(prefix):]: n for n in source.entries if n.startswith(prefix)}
        tree = {rel_to_mgr(rel): full for rel, full in names.items()}
        flat = [rel for rel in names if FLAT_RE.match(rel)]
        if any(MOD_RE.match(rel) for rel in tree) or len(flat) != 1:
            return tree
        try:
            handlers, _, _ = plugin_xml(read_all(source, names[flat[0]]), flat[0])
            files, hooks, _ = map_flat(source, names, flat[0], handlers)
        except InvalidPackage:  # the validators report what is wrong with it
            return {(f"etc/xml/{rel}" if rel == flat[0] else rel): full for rel, full in names.items()}
        mapped = {spec.target.removeprefix(MGR_REL + "/"): spec.entry for spec in files.values()}
        mapped |= {f"scripts/{hook}": entry for hook, entry in hooks.items()}
        taken = set(mapped.values())
        return mapped | {rel: full for rel, full in names.items() if full not in taken}

    def pack_modes(self, pkg: Package) -> dict[str, int] | None:
        """The MGR layout: installed files by target, hooks under ``scripts/``, the files at
        the top that describe the package (VERSION, README, LICENSE) kept, never installed;
        folders the flat layout does not install are left out."""
        source, prefix = pkg.source, pkg.prefix
        out = {spec.target.removeprefix(MGR_REL + "/"): spec.mode for spec in pkg.files.values()}
        out |= {f"scripts/{hook}": source.entries[entry].mode for hook, entry in pkg.hooks.items()}
        used = {spec.entry for spec in pkg.files.values()} | set(pkg.hooks.values())
        out |= {n[len(prefix):]: 0o644 for n in source.entries
                if n.startswith(prefix) and "/" not in n[len(prefix):] and n not in used}
        return out

    # ------------------------------------------------------------ runtime (step 7)
    @property
    def log_path(self) -> Path:
        from mgr_agent.panels.ispmanager.logreader import log_path  # noqa: PLC0415

        return log_path(self.layout)

    def core_processes(self) -> list[psutil.Process]:
        """The ``core`` processes of this MGR root only: never another program's ``core``."""
        # core (psutil, subprocess) is imported where the core is looked at or restarted,
        # not by every command that builds the panel (``logs``, ``list``)
        from mgr_agent.panels.ispmanager import core  # noqa: PLC0415

        return core.processes(self.layout)

    def mark(self) -> Mark | None:
        from mgr_agent.panels.ispmanager import core  # noqa: PLC0415 - see core_processes

        running = bool(core.pids(self.layout))
        try:
            st = os.stat(self.log_path)
        except FileNotFoundError:
            # a core running, or one mgrctl will start, may create the log during the window
            return Mark(self.log_path, 0, 0, running) if running or core.mgrctl_path(self.layout) else None
        return Mark(self.log_path, st.st_ino, st.st_size, running)

    def restart(self, runner: Runner) -> list[str]:
        """Drop the XML cache, ask the core to exit (mgrctl), end what is left of this
        root's core processes (SIGTERM, wait, SIGKILL), and wake the panel again."""
        from mgr_agent.panels.ispmanager import core  # noqa: PLC0415 - see core_processes

        return core.restart(self.layout, self.config, runner)

    def health(self, pkg: Package, mark: Mark | None, window: float) -> list[str]:
        """The core comes back and the log shows no error for this plugin in ``window``:
        the log is followed from the mark (rotation and truncation included) as ``logs -f``
        follows it."""
        if mark is None or window <= 0:
            return [] if window <= 0 else ["no ispmgr.log and no core here: health not checked"]
        # imported here: only upgrades of a live panel need the log reader
        from mgr_agent.panels.ispmanager import core, logrecords  # noqa: PLC0415
        from mgr_agent.panels.ispmanager.logfollow import Follower  # noqa: PLC0415

        names = frozenset(log_names(pkg.name, pkg.meta))
        bad_for_plugin = logrecords.make_filter(level="ERR", plugin_names=names)
        expect_core = core.mgrctl_path(self.layout) is not None  # without mgrctl the next request wakes it
        deadline = time.monotonic() + window
        bad: list[logrecords.Record] = []
        with Follower(mark.path, bad_for_plugin) as follower:
            follower.resume(mark.inode, mark.offset)
            while True:
                follower.check()  # each poll reads only what was appended
                bad += follower.drain()
                open_record = follower.asm.open  # its continuation lines may still come
                found = bad + ([open_record] if open_record and bad_for_plugin(open_record) else [])
                if found:
                    lines = [r.text() for r in found[:20]]  # ANSI colours stripped
                    raise HealthCheckFailed(
                        f"ispmgr.log shows {len(found)} error(s) for {pkg.name} after the switch: "
                        f"{lines[0][:300]}", log_lines=lines)
                now = time.monotonic()
                if now >= deadline:
                    break
                follower.wait(min(0.2, deadline - now))
        if expect_core and not self.core_processes():
            raise HealthCheckFailed(f"the core of {self.layout.mgr} did not come back within "
                                    f"{window:g} s")
        return [f"healthy for {window:g} s: " + ("core running, " if expect_core else "")
                + f"no errors for {pkg.name} in ispmgr.log"]

    # ------------------------------------------------------------ runtime commands
    def log_names(self, name: str, meta: Mapping[str, Any]) -> set[str]:
        return log_names(name, meta)

    def log(self, query: LogQuery, *, stop: threading.Event | None = None,
            timeout: float | None = None) -> Iterator[LogRecord]:
        from mgr_agent.panels.ispmanager import logs  # noqa: PLC0415 - only `logs` needs it

        return logs.records(self.log_path, query, stop=stop, timeout=timeout)

    def debug(self, module: str | None, level: int | None, *, off: bool) -> list[str]:
        """Set (or with ``off`` put back) a line of ``etc/debug.conf``; what changed, each
        prefixed with the file's root-relative path."""
        from mgr_agent.panels.ispmanager.debugconf import DebugConf  # noqa: PLC0415

        conf = DebugConf(self.layout.mgr / "etc/debug.conf",
                         self.layout.state_dir / "debug-saved.json")
        changes = conf.restore() if off else conf.set(str(module), int(level or 0))
        return [f"{self.layout.rel(conf.path)}: {c}" for c in changes]

    def call(self, func: str, params: Mapping[str, str], *, user: str, lang: str,
             input_path: Path | None, timeout: float) -> CallAnswer:
        from mgr_agent.panels.ispmanager import callchain  # noqa: PLC0415 - only `call` needs it

        return callchain.call(self.layout, func, params, user=user, lang=lang,
                              input_path=input_path, timeout=timeout)
