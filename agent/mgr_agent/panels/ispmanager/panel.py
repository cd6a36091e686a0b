"""ispmanager 6 (COREmanager) plugins under ``usr/local/mgr5``."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from mgr_agent import xmlsafe
from mgr_agent.archive import Source, read_all
from mgr_agent.errors import HealthCheckFailed, InvalidPackage
from mgr_agent.layout import MGR_REL
from mgr_agent.package import Package
from mgr_agent.panels.base import HOOKS, NAME_RE, HookSpec, Mark, Panel
from mgr_agent.panels.ispmanager import outside
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
from mgr_agent.proc import Runner


def log_names(name: str, meta: dict[str, Any]) -> set[str]:
    """Names by which ispmgr.log mentions a plugin: its name, XML file, handlers, funcs."""
    names = {name, Path(str(meta.get("xml", ""))).name, *meta.get("handlers", []),
             *meta.get("funcs", []), *meta.get("events", [])}
    names.discard("")
    return names


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes are gone (an unreaped zombie counts as gone); the rest."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


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

    def hook(self, pkg: Package, hook: str) -> HookSpec | None:
        entry = pkg.hooks.get(hook)
        if entry is None:
            return None
        return HookSpec(hook=hook, entry=entry, installed=None, cwd=self.layout.mgr)

    def hook_env(self) -> dict[str, str]:
        return {"MGR_AGENT_PANEL_ROOT": str(self.layout.mgr)}

    # ------------------------------------------------------------ runtime (step 7)
    @property
    def log_path(self) -> Path:
        return self.layout.mgr / "var/ispmgr.log"

    def core_processes(self) -> list[psutil.Process]:
        """The ``core`` processes of this MGR root only: never another program's ``core``."""
        mgr = str(self.layout.mgr) + "/"
        found = []
        for proc in psutil.process_iter(["name", "exe", "cmdline", "status"]):
            info = proc.info
            if info.get("name") != "core" or info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            paths = [info.get("exe") or "", *(info.get("cmdline") or [])]
            if any(p.startswith(mgr) for p in paths):
                found.append(proc)
        return found

    def _mgrctl(self) -> Path | None:
        path = self.layout.mgr / "sbin/mgrctl"
        return path if os.access(path, os.X_OK) else None

    def mark(self) -> Mark | None:
        running = bool(self.core_processes())
        try:
            st = os.stat(self.log_path)
        except FileNotFoundError:
            # a core running, or one mgrctl will start, may create the log during the window
            return Mark(self.log_path, 0, 0, running) if running or self._mgrctl() else None
        return Mark(self.log_path, st.st_ino, st.st_size, running)

    def restart(self, runner: Runner) -> list[str]:
        """Drop the XML cache, ask the core to exit (mgrctl), end what is left of this
        root's core processes (SIGTERM, wait, SIGKILL), and wake the panel again."""
        notes: list[str] = []
        var = self.layout.mgr / "var"
        caches = list(var.glob(".db.cache*")) if var.is_dir() else []
        for cache in caches:
            cache.unlink(missing_ok=True)
        if caches:
            notes.append(f"removed {len(caches)} panel cache file(s)")
        mgrctl = self._mgrctl()
        before = self.core_processes()
        if mgrctl is not None:
            done = runner.run([str(mgrctl), "-m", "ispmgr", "exit"], cwd=self.layout.mgr,
                              timeout=self.config.core_timeout)
            notes.append(f"mgrctl -m ispmgr exit: exit {done.returncode}")
        elif not before:
            return [*notes, f"no core process under {self.layout.mgr}: nothing to restart"]
        left = self.core_processes()
        if left:
            for proc in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.terminate()
            alive = _wait_gone(left, self.config.core_timeout)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            alive = _wait_gone(alive, 5)
            if alive:
                raise HealthCheckFailed(
                    f"core process(es) {', '.join(str(p.pid) for p in alive)} under "
                    f"{self.layout.mgr} did not end after SIGKILL")
            notes.append(f"ended {len(left)} core process(es) of {self.layout.mgr}")
        if mgrctl is not None:
            notes += self._wake(runner, mgrctl)
        return notes

    def _wake(self, runner: Runner, mgrctl: Path) -> list[str]:
        """``mgrctl -m ispmgr`` (starts the core and waits until it answers), outside the
        agent's service under systemd: after the panel's own unit, in a transient unit."""
        notes: list[str] = []
        argv = [str(mgrctl), "-m", "ispmgr"]
        where = ""
        if outside.systemd_runs(self.layout.root):
            unit_ = self.config.core_unit
            if unit_:
                done = runner.run(outside.start_unit(unit_), cwd=self.layout.mgr,
                                  timeout=self.config.core_timeout)
                if done.returncode != 0:
                    raise HealthCheckFailed(f"systemctl start {unit_} exited {done.returncode}: "
                                            f"{done.output.strip()[-500:]}")
                notes.append(f"started the panel's unit {unit_}")
            name = outside.unit_name("ispmgr-core")
            argv = outside.transient(argv, unit=name, timeout=self.config.core_timeout,
                                     description=f"ispmanager core of {self.layout.mgr} (woken by mgr-agent)")
            where = f" (in {name}.service; journalctl -u {name})"
        done = runner.run(argv, cwd=self.layout.mgr, timeout=self.config.core_timeout + 5)
        if done.returncode != 0:
            raise HealthCheckFailed(
                f"the panel does not answer after the restart: mgrctl -m ispmgr exited "
                f"{done.returncode}{where}: {done.output.strip()[-500:]}")
        notes.append(f"the panel answers again (mgrctl){where}")
        return notes

    def _read_new(self, mark: Mark, lines: list[str]) -> Mark:
        """Append the complete log lines written since ``mark`` to ``lines``; the new mark.

        A rotated (new inode) or truncated log is read again from its start.
        """
        try:
            st = os.stat(self.log_path)
        except FileNotFoundError:
            return mark
        start = mark.offset if st.st_ino == mark.inode and st.st_size >= mark.offset else 0
        with open(self.log_path, "rb") as fh:
            fh.seek(start)
            data = fh.read(64 * 1024 * 1024)
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        lines += complete.decode("utf-8", "replace").splitlines()
        return Mark(mark.path, st.st_ino, start + len(complete), mark.running)

    def health(self, pkg: Package, mark: Mark | None, window: float) -> list[str]:
        """The core comes back and the log shows no error for this plugin in ``window``."""
        if mark is None or window <= 0:
            return [] if window <= 0 else ["no ispmgr.log and no core here: health not checked"]
        from mgr_agent.panels.ispmanager import logs as logtail  # noqa: PLC0415 - only upgrades of a live panel need it
        names = log_names(pkg.name, pkg.meta)
        expect_core = self._mgrctl() is not None  # without mgrctl the next request wakes it
        deadline = time.monotonic() + window
        seen: list[str] = []
        while True:
            mark = self._read_new(mark, seen)  # each poll reads only what was appended
            records = logtail.parse_lines(seen)
            bad = [r for r in records if logtail.level_at_least(r, "ERR")
                   and logtail.matches_plugin(r, names)]
            if bad:
                lines = [logtail.format_record(r) for r in bad[:20]]  # ANSI colours stripped
                raise HealthCheckFailed(
                    f"ispmgr.log shows {len(bad)} error(s) for {pkg.name} after the switch: "
                    f"{lines[0][:300]}", log_lines=lines)
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(0.2, deadline - now))
        if expect_core and not self.core_processes():
            raise HealthCheckFailed(f"the core of {self.layout.mgr} did not come back within "
                                    f"{window:g} s")
        return [f"healthy for {window:g} s: " + ("core running, " if expect_core else "")
                + f"no errors for {pkg.name} in ispmgr.log"]
