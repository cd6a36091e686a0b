"""``mgr-agent pack DIR [-d DEST]``: a reproducible, installable zip from a source tree.

The plugin is found the way ``install`` finds it (:mod:`mgr_agent.shape`), also one level
or more down (a Plesk extension in ``src/``); VCS and editor files are never read
(:func:`mgr_agent.shape.is_junk`). ``check`` runs first and an error refuses. The zip is
in the panel's canonical layout (ispmanager: relative to MGR, the flat layout mapped like
``install`` maps it) and reproducible: entries sorted, timestamps fixed, modes normalised
to 0644/0755, one compression level, so the same tree gives the same bytes.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent import package
from mgr_agent.archive import open_source
from mgr_agent.errors import AgentError, UsageError
from mgr_agent.fsutil import AtomicWriter
from mgr_agent.result import Result
from mgr_agent.shape import detect_layout, find_plugins

if TYPE_CHECKING:
    from mgr_agent.engine import Engine
    from mgr_agent.panels.base import Panel

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
LEVEL = 9


def normal_mode(mode: int) -> int:
    """0755 for anything executable by its owner, 0644 for the rest."""
    return 0o755 if mode & 0o100 else 0o644


def plugin_folder(directory: Path, engine: Engine, panel: str | None) -> tuple[str, str]:
    """(panel name, folder below ``directory``) of the one plugin the tree holds."""
    source = open_source(directory, engine.config.limits)
    try:
        names = set(source.entries)
    finally:
        source.close()
    wanted = [p for p in engine.panels if panel is None or p.name == panel]
    found = find_plugins(names, wanted)
    if len(found) == 1:
        return found[0].panel, found[0].prefix
    # none, or one per folder: the installer's own message says which and what to do
    chosen, prefix = detect_layout(names, engine.panels, panel, where=f"the folder {directory}",
                                   install_path=str(directory))
    return chosen.name, prefix


def entries(pkg: package.Package, panel: Panel) -> dict[str, int]:
    """Zip name -> mode, in the panel's canonical layout."""
    modes = panel.pack_modes(pkg)
    if modes is None:
        modes = {n[len(pkg.prefix):]: e.mode for n, e in pkg.source.entries.items()
                 if n.startswith(pkg.prefix)}
    return {name: normal_mode(mode) for name, mode in modes.items()}


def sources_of(pkg: package.Package, panel: Panel) -> dict[str, str]:
    """Zip name -> source entry (the inverse of the mapping install applies)."""
    return panel.check_names(pkg.source, pkg.prefix)


def write_zip(pkg: package.Package, panel: Panel, dest: Path, skip: set[str]) -> tuple[int, str]:
    """Write the reproducible zip atomically; (entries, sha256)."""
    modes = entries(pkg, panel)
    where = sources_of(pkg, panel)
    count = 0
    with (AtomicWriter(dest, 0o644) as out, open(out.fileno(), "wb", closefd=False) as fh,
          zipfile.ZipFile(fh, "w") as zf):
        for name in sorted(modes):
            if name in skip:
                continue
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3  # Unix: the mode below is read back by unzip and install
            info.external_attr = (0o100000 | modes[name]) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = pkg.inflated.get(where[name])
            zf.writestr(info, data if data is not None else b"".join(pkg.source.chunks(where[name])),
                        compresslevel=LEVEL)
            count += 1
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    return count, digest


def pack(directory: Path, dest_dir: Path | None, engine: Engine, *, panel: str | None = None,
         strict: bool = False) -> Result:
    """Check the plugin in ``directory`` and write ``ID-VERSION-RELEASE.zip`` (Plesk) or
    ``NAME-VERSION.zip`` (ispmanager) into ``dest_dir`` (default: the current directory)."""
    directory = directory.absolute()
    if not directory.is_dir():
        raise UsageError(f"{directory}: pack takes a directory (the plugin's source tree)")
    kind, prefix = plugin_folder(directory, engine, panel)
    folder = directory / prefix if prefix else directory
    checked = engine.check(folder, panel=kind, strict=strict)
    if checked.error is not None:
        checked.notes.append("not packed: fix what check found first")
        return checked
    pkg = package.load(folder, engine.panels, panel_hint=kind, limits=engine.config.limits)
    try:
        base = f"{pkg.name}-{pkg.version}" + (f"-{pkg.release}" if pkg.release else "")
        out_dir = (dest_dir or Path.cwd()).absolute()
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{base}.zip"
        # a zip written into the tree it packs is not packed the next time
        inside = out.relative_to(folder).as_posix() if out.is_relative_to(folder) else None
        count, digest = write_zip(pkg, engine.panel(pkg.panel), out, {inside} if inside else set())
    finally:
        pkg.close()
    again = engine.check(out, panel=kind)
    if again.error is not None:  # the mapping lost something install needs: never leave it
        out.unlink(missing_ok=True)
        raise AgentError(f"the packed {out.name} does not pass check: {again.error.message}",
                         hint="report this as a bug with the source tree")
    notes = [f"the plugin lies in {prefix} of {directory}"] if prefix else []
    notes += [n for n in checked.notes if n.startswith("skipped")]
    found = checked.data.get("findings", []) if isinstance(checked.data, Mapping) else []
    return Result(action="packed", changed=True, name=checked.name, panel=kind, version=checked.version,
                  warnings=checked.warnings, notes=[f"wrote {out} ({count} files, sha256 {digest})", *notes],
                  data={"path": str(out), "files": count, "sha256": digest,
                        "findings": found})
