"""Plesk extensions: a ZIP with ``meta.xml`` at its root, installed under Plesk's
PRODUCT_ROOT_D (``usr/local/psa``, or ``opt/psa`` on Debian and Ubuntu, as
``etc/psa/psa.conf`` says), and registered with Plesk's ``extension`` utility."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent import xmlsafe
from mgr_agent.config import Config
from mgr_agent.errors import IncompatiblePanel, InvalidPackage, RegistrationFailed
from mgr_agent.layout import PSA_REL, Layout
from mgr_agent.panels.base import HOOKS, HookSpec, Panel, Skeleton
from mgr_agent.versions import compare

if TYPE_CHECKING:  # types only: every command builds the panel, few read a package
    from mgr_agent.archive import Source
    from mgr_agent.checks.base import Validator
    from mgr_agent.package import Package
    from mgr_agent.proc import Runner

ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
REQUIRED = ("id", "name", "version", "release")
OPTIONAL = ("description", "category", "vendor", "url", "support_url", "help_url", "buy_url",
            "plesk_min_version", "plesk_max_version", "os", "encoder")
METADATA_FILES = ("DESCRIPTION.md", "CHANGES.md")


PSA_CONF = "etc/psa/psa.conf"
REGISTER_TIMEOUT = 120.0


def _within_root(layout: Layout, rel: str, hops: int = 16) -> str:
    """``rel`` with the symbolic links among its components followed inside the root
    (an absolute link target counts from the root, as under chroot); the real,
    root-relative path.  A link that leads out of the root is not followed."""
    parts = [p for p in rel.split("/") if p]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        current = "/".join([*done, part])
        path = layout.under(current)
        if hops and os.path.islink(path):
            target = os.readlink(path)
            joined = target.lstrip("/") if target.startswith("/") else "/".join([*done, target])
            normal = posixpath.normpath(joined)
            if normal.startswith("..") or normal == ".":
                return "/".join([current, *parts])
            hops -= 1
            done, parts = [], [p for p in normal.split("/") if p] + parts
            continue
        done.append(part)
    return "/".join(done)


def product_root(layout: Layout) -> str:
    """Plesk's PRODUCT_ROOT_D relative to the root, its links followed: ``PRODUCT_ROOT_D``
    of ``etc/psa/psa.conf`` when that file names it, else ``usr/local/psa``."""
    rel = PSA_REL
    try:
        text = layout.under(PSA_CONF).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "PRODUCT_ROOT_D" and words[1].startswith("/"):
            rel = posixpath.normpath(words[1]).lstrip("/") or rel
    return _within_root(layout, rel)


def _series(have: str, bound: str) -> str:
    """``have`` cut to as many dot components as ``bound``: a maximum of 18.0 admits 18.0.52."""
    return ".".join(have.split(".")[: bound.count(".") + 1])


class Plesk(Panel):
    name = "plesk"
    detection_rule = "meta.xml (root element <module>) at the top of the package"
    restarts = False
    loads_note = "Plesk loads extension files on the next request; no restart needed"
    registers = True

    def __init__(self, layout: Layout, config: Config) -> None:
        super().__init__(layout, config)
        self.psa_rel = product_root(layout)
        self.psa = layout.under(self.psa_rel)

    def plib(self, ext: str) -> str:
        return f"{self.psa_rel}/admin/plib/modules/{ext}"

    def htdocs(self, ext: str) -> str:
        return f"{self.psa_rel}/admin/htdocs/modules/{ext}"

    def sbin(self, ext: str) -> str:
        return f"{self.psa_rel}/admin/sbin/modules/{ext}"

    def share(self, ext: str) -> str:
        return f"{self.psa_rel}/admin/share/modules/{ext}"

    def var(self, ext: str) -> str:
        return f"{self.psa_rel}/var/modules/{ext}"

    def detect(self, names: set[str]) -> bool:
        return "meta.xml" in names

    @classmethod
    def skeleton(cls, name: str) -> Skeleton:
        from mgr_agent.panels.plesk import skeleton  # noqa: PLC0415 - only `new` needs it

        return skeleton.skeleton(name)

    def validators(self) -> tuple[Validator, ...]:
        from mgr_agent.panels.plesk import (  # noqa: PLC0415 - only check/install
            checks_catalog,
            checks_code,
            checks_meta,
        )

        return checks_meta.VALIDATORS + checks_catalog.VALIDATORS + checks_code.VALIDATORS

    def anchor(self, name: str) -> Path:
        return self.psa

    def _meta(self, source: Source, prefix: str) -> dict[str, object]:
        from mgr_agent.archive import read_all  # noqa: PLC0415 - the archive readers: see above

        root = xmlsafe.parse(read_all(source, prefix + "meta.xml"), "meta.xml")
        if root.tag != "module":
            raise InvalidPackage(f"meta.xml: root element is <{root.tag}>, it must be <module>",
                                 path="meta.xml", rule="meta-root")
        meta: dict[str, object] = {}
        for field in REQUIRED:
            value = xmlsafe.text_of(root, field)
            if not value:
                raise InvalidPackage(f"meta.xml: <{field}> is required and must not be empty",
                                     path="meta.xml", field=field, rule="meta-required")
            meta[field] = value
        for field in OPTIONAL:
            values = [(el.text or "").strip() for el in root.findall(field)]
            if field in ("category", "os"):
                meta[field] = values
            elif values:
                meta[field] = values[0]
        ext = str(meta["id"])
        if not ID_RE.match(ext):
            raise InvalidPackage(
                f"meta.xml: <id>{ext}</id> must be lower-case letters, digits and dashes "
                "(at most 64, not starting or ending with a dash)",
                path="meta.xml", field="id", rule="meta-id")
        for field in ("version", "release"):
            value = str(meta[field])
            if len(value) > 64 or any(c.isspace() for c in value):
                raise InvalidPackage(f"meta.xml: <{field}>{value[:64]}</{field}> must be one word "
                                     "of at most 64 characters", path="meta.xml", field=field,
                                     rule="meta-version")
        oses = meta.get("os") or []
        assert isinstance(oses, list)
        bad = [o for o in oses if o not in ("unix", "win")]
        if bad:
            raise InvalidPackage(f"meta.xml: <os>{bad[0]}</os> must be unix or win",
                                 path="meta.xml", field="os", rule="meta-os")
        if oses and "unix" not in oses:
            raise IncompatiblePanel(f"meta.xml: the extension supports {', '.join(oses)} only, "
                                    "not unix", path="meta.xml", field="os")
        descriptions = {el.get("{http://www.w3.org/XML/1998/namespace}lang", ""): (el.text or "").strip()
                        for el in root.findall("description")}
        if descriptions:
            meta["descriptions"] = descriptions
        return meta

    def describe(self, source: Source, prefix: str) -> Package:
        from mgr_agent.package import FileSpec, Package  # noqa: PLC0415

        meta = self._meta(source, prefix)
        ext = str(meta["id"])
        files: dict[str, FileSpec] = {}
        warnings: list[str] = []
        hooks: dict[str, str] = {}
        not_installed: list[str] = []
        mapping = {"htdocs/": self.htdocs(ext), "plib/": self.plib(ext), "sbin/": self.sbin(ext),
                   "var/": self.var(ext), "_meta/": self.share(ext) + "/_meta"}
        hook_of = {self.hook_entry(hook): hook for hook in HOOKS}
        for full in sorted(source.entries):
            if not full.startswith(prefix):
                continue
            rel = full[len(prefix):]
            mode = source.entries[full].mode
            kind: str = "file"
            if rel == "meta.xml" or rel in METADATA_FILES:
                target = f"{self.plib(ext)}/{rel}"
            else:
                top, sep, rest = rel.partition("/")
                base = mapping.get(top + sep) if sep else None
                if base is None:
                    not_installed.append(rel)
                    continue
                target = f"{base}/{rest}"
                if top == "sbin":
                    mode = 0o755
                elif top == "var":
                    kind = "data"
                elif rel in hook_of:
                    hooks[hook_of[rel]] = full
            if target in files:
                raise InvalidPackage(
                    f"{rel}: installs to {target}, which another entry of the package also uses",
                    path=rel, rule="duplicate-target")
            files[target] = FileSpec(target=target, entry=full, mode=mode,
                                     kind="data" if kind == "data" else "file")
        return Package(
            panel=self.name, name=ext, version=str(meta["version"]), release=str(meta["release"]),
            source=source, prefix=prefix, files=files, hooks=hooks, meta=meta, warnings=warnings,
            not_installed=not_installed,
            not_installed_why="outside meta.xml, DESCRIPTION.md, CHANGES.md, htdocs/, plib/, sbin/, "
                              "var/, _meta/",
        )

    def installed_version(self) -> str | None:
        """Plesk's own version from ``PSA/version`` ("18.0.52 Debian 12.0 ..."), if present."""
        path = self.psa / "version"
        try:
            words = path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            return None
        return words[0] if words else None

    def check_compatible(self, pkg: Package) -> list[str]:
        low = pkg.meta.get("plesk_min_version")
        high = pkg.meta.get("plesk_max_version")
        if not low and not high:
            return []
        have = self.installed_version()
        if have is None:
            return [f"{self.psa_rel}/version not found: plesk_min_version/plesk_max_version not checked"]
        if low and compare(have, str(low)) < 0:
            raise IncompatiblePanel(
                f"meta.xml: plesk_min_version is {low}, but Plesk {have} is installed",
                field="plesk_min_version", hint="upgrade Plesk or use an older release of the extension")
        if high and compare(_series(have, str(high)), str(high)) > 0:
            raise IncompatiblePanel(
                f"meta.xml: plesk_max_version is {high}, but Plesk {have} is installed",
                field="plesk_max_version", hint="use a newer release of the extension")
        return []

    def _php(self) -> tuple[str, ...]:
        if self.config.php:
            return tuple(self.config.php.split())
        for candidate in (self.psa / "bin/sw-engine-pleskrun", self.layout.root / "usr/bin/sw-engine"):
            if candidate.is_file():
                return (str(candidate),)
        import shutil  # noqa: PLC0415 - shutil loads bz2 and lzma: only when a hook runs

        return (shutil.which("php") or "php",)

    def hook_entry(self, hook: str) -> str:
        return f"plib/scripts/{hook}.php"

    def hook(self, pkg: Package, hook: str) -> HookSpec | None:
        entry = pkg.hooks.get(hook)
        if entry is None:
            return None
        installed = None if hook == "pre-install" else f"{self.plib(pkg.name)}/scripts/{hook}.php"
        cwd = self.layout.under(self.plib(pkg.name)) if installed else self.psa
        return HookSpec(hook=hook, entry=entry, installed=installed, cwd=cwd, interpreter=self._php())

    def hook_env(self) -> dict[str, str]:
        return {"MGR_AGENT_PANEL_ROOT": str(self.psa)}

    def restart(self, runner: Runner) -> list[str]:
        """Plesk reads extension files on each request (PHP): there is no core to restart."""
        return []

    def data_dirs(self, name: str) -> list[str]:
        return [self.var(name)]

    def whole_dirs(self, name: str, created: Iterable[str]) -> list[str]:
        """The extension's own directories (never ``var/``: data is switched file by file)."""
        return [self.htdocs(name), self.plib(name), self.sbin(name), self.share(name)]

    def leftover_dirs(self, name: str) -> list[str]:
        return [self.htdocs(name), self.plib(name), self.sbin(name), self.share(name)]

    # registration: Plesk lists an extension only once it is in its database
    def _extension_cli(self) -> list[str] | None:
        """Plesk's ``extension`` utility under the root: ``PSA/bin/extension``, else
        ``plesk bin extension``; None without Plesk (a sandbox root)."""
        direct = self.psa / "bin/extension"
        if os.access(direct, os.X_OK):
            return [str(direct)]
        for rel in ("usr/sbin/plesk", "usr/bin/plesk", f"{self.psa_rel}/bin/plesk"):
            path = self.layout.under(rel)
            if os.access(path, os.X_OK):
                return [str(path), "bin", "extension"]
        return None

    def _extension(self, runner: Runner, *args: str) -> tuple[int, str]:
        cli = self._extension_cli()
        assert cli is not None
        done = runner.run([*cli, *args], cwd=self.psa if self.psa.is_dir() else self.layout.root,
                          timeout=REGISTER_TIMEOUT)
        return done.returncode, done.output.strip()

    def registered(self, runner: Runner, name: str) -> bool:
        """Whether ``extension --list`` names ``name`` (its first word on a line)."""
        code, out = self._extension(runner, "--list")
        if code != 0:
            raise RegistrationFailed(f"plesk bin extension --list exited with {code}: "
                                     f"{out or '(no output)'}")
        return any(line.split()[:1] == [name] for line in out.splitlines())

    def register(self, runner: Runner, name: str, present: bool) -> list[str]:
        """Make Plesk's list of extensions agree with the files: ``--register`` when the
        extension's files are in place (``present``), ``--unregister`` when they are not."""
        if self._extension_cli() is None:
            what = "was not registered with Plesk" if present else "had no Plesk registration to remove"
            return [f"Plesk's extension utility is not under {self.layout.root} "
                    f"({self.psa_rel}/bin/extension, usr/sbin/plesk): {name} {what}"]
        if not present and not self.registered(runner, name):
            return []
        verb = "--register" if present else "--unregister"
        code, out = self._extension(runner, verb, name)
        if code != 0:
            raise RegistrationFailed(
                f"plesk bin extension {verb} {name} exited with {code}: {out or '(no output)'}",
                hint="Plesk's output is above; `plesk bin extension --list` shows what Plesk has")
        return [f"Plesk: {'registered' if present else 'unregistered'} {name}"]
