"""The archive store and its garbage collection.

``var/lib/mgr-agent/archives/<content-hash>.zip`` (``.tar`` for tar sources) holds the
package of every installed and retained version: uninstall hooks and rollback use it.
After every transaction, whatever no committed state refers to is removed: scratch
directories, archives, diverted copies.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from mgr_agent import package
from mgr_agent.context import EngineContext
from mgr_agent.errors import AgentError
from mgr_agent.fsutil import AtomicWriter, rmdir_if_empty
from mgr_agent.layout import Layout
from mgr_agent.package import Package
from mgr_agent.state import Installed, State


def archive_name(pkg: Package) -> str:
    suffix = ".tar" if pkg.source.kind == "tar" else ".zip"
    return pkg.content_hash + suffix


def stored_path(layout: Layout, pkg: Package) -> Path:
    return layout.archives_dir / archive_name(pkg)


def store_archive(layout: Layout, pkg: Package) -> None:
    """Put the package itself in the store (a folder is zipped) unless it is there; the
    file appears whole or not at all (:class:`AtomicWriter`)."""
    dest = stored_path(layout, pkg)
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with AtomicWriter(dest, 0o644) as out:
        if pkg.source.kind != "dir":
            with open(pkg.source.path, "rb") as src:
                out.copy_from(src.fileno())
            return
        with open(out.fileno(), "wb", closefd=False) as fh, \
                zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, entry in sorted(pkg.source.entries.items()):
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o100000 | entry.mode) << 16
                info.create_system = 3
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w") as member:
                    for chunk in pkg.source.chunks(name):
                        member.write(chunk)


def open_stored(ctx: EngineContext, installed: Installed, warnings: list[str],
                force: bool) -> Package | None:
    """The installed version's package from the store, for its uninstall hook; None (and
    a warning) when it is missing, or unreadable under ``force``."""
    archive = ctx.layout.archives_dir / installed.archive
    if not archive.exists():
        warnings.append(f"{archive}: missing; the pre-uninstall hook was not run")
        return None
    try:  # verified when it was installed: not hashed again
        return package.load(archive, ctx.panels, panel_hint=installed.panel,
                            limits=ctx.config.limits, verify=False)
    except AgentError as exc:
        if not force:
            exc.hint = (exc.hint + "; " if exc.hint else "") + (
                f"`mgr-agent uninstall {installed.name} --force` removes it without running "
                "its pre-uninstall hook")
            raise
        warnings.append(f"{archive}: cannot be read ({exc.message}); the "
                        "pre-uninstall hook was not run (--force)")
        return None


def collect_garbage(layout: Layout, state: State) -> None:
    """Remove what no committed state refers to: scratch dirs, archives, diverted copies."""
    if layout.tmp_dir.is_dir():
        for child in layout.tmp_dir.iterdir():
            shutil.rmtree(child, ignore_errors=True)
    referenced = state.referenced_archives()
    if layout.archives_dir.is_dir():
        for child in layout.archives_dir.iterdir():
            if child.name not in referenced:
                child.unlink(missing_ok=True)
    top = layout.diverted_dir
    if top.is_dir():
        wanted = set(state.diversions().values())
        for dirpath, _, filenames in os.walk(top, topdown=False):
            for filename in filenames:
                path = Path(dirpath) / filename
                if path.relative_to(top).as_posix() not in wanted:
                    path.unlink(missing_ok=True)
            if Path(dirpath) != top:
                rmdir_if_empty(Path(dirpath))
