"""``mgr-agent new NAME --panel plesk|ispmanager``: a minimal, correct, installable skeleton.

A fresh skeleton passes ``check --strict``, packs, installs, and (ispmanager) its
handler answers through ``mgr-agent call``. Each panel makes its own tree
(``Panel.skeleton``: ``panels/*/skeleton.py``); it is written here into a temporary sibling
directory and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mgr_agent.errors import UsageError
from mgr_agent.fsutil import fsync_dir, sync_filesystems, write_new
from mgr_agent.panels import PANEL_CLASSES
from mgr_agent.result import Result


def create(name: str, panel: str | None, directory: Path | None = None) -> Result:
    """Write the skeleton of ``name`` for ``panel`` into ``directory`` (default ./NAME)."""
    classes = {cls.name: cls for cls in PANEL_CLASSES}
    if panel is None:
        raise UsageError("new: " + " or ".join(f"--panel {n}" for n in classes) + " is required")
    if panel not in classes:
        raise UsageError(f"unknown panel {panel!r}: {' or '.join(classes)}")
    made = classes[panel].skeleton(name)
    tree = made.tree
    dest = (directory or Path(name)).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: exists and is not an empty directory; nothing was written")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        for rel, (data, mode) in sorted(tree.items()):
            path = scratch / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new(path, (data,), mode, sync=False)
        scratch.chmod(0o755)
        sync_filesystems([scratch])     # every file durable before the tree gets its name
        if dest.exists():
            dest.rmdir()
        os.rename(scratch, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Result(action="created", changed=True, name=name, panel=panel,
                  version=made.version,
                  notes=[f"in {dest}", f"next: mgr-agent check --strict {dest}; mgr-agent pack {dest}"],
                  data={"path": str(dest), "files": sorted(tree)})
