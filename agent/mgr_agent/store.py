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

from mgr_agent import package, reclaim, retained, zipread
from mgr_agent.context import EngineContext
from mgr_agent.errors import AgentError
from mgr_agent.fsutil import AtomicWriter, rmdir_if_empty
from mgr_agent.layout import Layout
from mgr_agent.package import Package
from mgr_agent.shape import detect_layout, without_junk
from mgr_agent.state import Installed, State
from mgr_agent.zipsource import ZipMembers, ZipSource


def archive_name(pkg: Package) -> str:
    suffix = ".tar" if pkg.source.kind == "tar" else ".zip"
    return pkg.content_hash + suffix


def stored_path(layout: Layout, pkg: Package) -> Path:
    return layout.archives_dir / archive_name(pkg)


def store_archive(layout: Layout, pkg: Package) -> None:
    """Put the package itself in the store (a folder is zipped) unless it is there; the
    file appears whole or not at all (:class:`AtomicWriter`).  A zip is copied from the
    file the agent opened and verified (reopened through its descriptor), not from
    whatever its path names by now."""
    dest = stored_path(layout, pkg)
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with AtomicWriter(dest, 0o644) as out:
        if pkg.source.kind != "dir":
            opened = pkg.source.fileno() if isinstance(pkg.source, ZipSource) else None
            with open(pkg.source.path if opened is None else f"/proc/self/fd/{opened}", "rb") as src:
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


def _hook_only(ctx: EngineContext, installed: Installed, archive: Path,
               hook: str) -> tuple[bool, Package | None]:
    """The stored zip opened for ``hook`` alone: its central directory read in one pass
    (:func:`zipread.directory`), the package's folder found in its entry names as install
    found it, and the hook's entry (:meth:`Panel.hook_entry`) read whole, so that damage to
    it is told before anything changes.  Returns whether it could tell, and the package:
    None when it has no such hook (nothing else read).  It cannot tell a zip that is not
    plain, or a hook member only zipfile reads: the caller then opens the package in full."""
    listing = zipread.directory(archive)
    if listing is None:
        return False, None
    names = set(without_junk([n for n in listing.names if n not in listing.dirs]))
    panel, prefix = detect_layout(names, ctx.panels, installed.panel,
                                  where=f"the archive {archive.name}")
    entry = prefix + panel.hook_entry(hook)
    if entry not in names:
        return True, None
    listed = listing.listed(entry)
    if listed is None or listed.member[2] not in zipread.FAST_METHODS or listed.flags & 0x1:
        return False, None  # zip64 values, another compression, encrypted: zipfile's to read
    source = ZipMembers(archive, {entry: listed})
    try:
        for _ in source.chunks(entry):  # its local header, size and CRC-32
            pass
    except BaseException:
        source.close()
        raise
    return True, Package(panel=panel.name, name=installed.name, version=installed.version,
                         release=installed.release, source=source, prefix=prefix, files={},
                         hooks={hook: entry}, meta=dict(installed.meta),
                         content_hash=installed.content_hash,
                         archive_sha256=installed.archive_sha)


def open_stored(ctx: EngineContext, installed: Installed, warnings: list[str],
                force: bool, hook: str = "pre-uninstall") -> Package | None:
    """The installed version's package from the store, for its ``hook``; None when it
    has no such hook, or (with a warning) when it is missing, or unreadable under ``force``.

    A stored zip is not read in full (:func:`_hook_only`): it was checked by every rule
    when it was installed.  Whatever that cannot judge is opened like any package, without
    hashing or checking it again.  Either way the hook's environment names the installed
    version (a version made from the content hash is not in the archive)."""
    archive = ctx.layout.archives_dir / installed.archive
    if not archive.exists():
        warnings.append(f"{archive}: missing; the {hook} hook was not run")
        return None
    try:
        told, found = _hook_only(ctx, installed, archive, hook)
        if told:
            return found
        pkg = package.load(archive, ctx.panels, panel_hint=installed.panel,
                           limits=ctx.config.limits, verify=False,
                           archive_sha256=installed.archive_sha or None)
        pkg.version, pkg.release = installed.version, installed.release
        return pkg
    except AgentError as exc:
        if not force:
            exc.hint = (exc.hint + "; " if exc.hint else "") + (
                f"`mgr-agent uninstall {installed.name} --force` removes it without running "
                f"its {hook} hook")
            raise
        warnings.append(f"{archive}: cannot be read ({exc.message}); the "
                        f"{hook} hook was not run (--force)")
        return None


def collect_garbage(layout: Layout, state: State, *, later: bool = False) -> None:
    """Remove what no committed state refers to: scratch dirs, retained trees, archives,
    diverted copies.  Trees go to be deleted after the command with ``later`` (after a
    commit), else now, with whatever a reclaimer did not finish (in recovery):
    :mod:`mgr_agent.reclaim`."""
    if layout.tmp_dir.is_dir():
        for child in layout.tmp_dir.iterdir():
            shutil.rmtree(child, ignore_errors=True)
    retained.collect(layout, state.retained_hashes(), later=later)
    if not later:
        reclaim.drain(layout)
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
