"""Every path the agent touches, resolved under one root prefix.

A ``Layout`` is passed to whatever needs a path; there are no module-level paths.
"""

from __future__ import annotations

from pathlib import Path

MGR_REL = "usr/local/mgr5"
PSA_REL = "usr/local/psa"


class Layout:
    """Paths under ``root`` (``/`` on a server, a temp dir in tests and the demo).

    An immutable value, equal to any other ``Layout`` of the same root.  (A plain class:
    as a ``dataclass`` it cost every command's start the import of ``dataclasses``.)"""

    __slots__ = ("root",)
    root: Path

    def __init__(self, root: Path) -> None:
        object.__setattr__(self, "root", root)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a Layout does not change")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a Layout does not change")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.root == other.root

    def __hash__(self) -> int:
        return hash((self.root,))

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r})"

    def __reduce__(self) -> tuple[type[Layout], tuple[Path]]:
        return (Layout, (self.root,))

    @classmethod
    def at(cls, root: str | Path) -> Layout:
        return cls(Path(root).absolute())

    def under(self, rel: str) -> Path:
        """Absolute path of a root-relative POSIX path."""
        return self.root / rel

    def rel(self, path: Path) -> str:
        """Root-relative POSIX form of an absolute path under the root."""
        return path.relative_to(self.root).as_posix()

    # the agent's own places
    @property
    def config_file(self) -> Path:
        return self.root / "etc/mgr-agent/agent.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/mgr-agent"

    @property
    def db_file(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    def journals_left(self) -> bool:
        """A transaction journal is left: one was interrupted (or is running right now)."""
        directory = self.journal_dir
        return directory.is_dir() and any(directory.glob("*.log"))

    @property
    def archives_dir(self) -> Path:
        return self.state_dir / "archives"

    @property
    def diverted_dir(self) -> Path:
        return self.state_dir / "diverted"

    @property
    def saved_dir(self) -> Path:
        """Admins' edited versions of plugin files an operation replaced or removed."""
        return self.state_dir / "saved"

    @property
    def trees_dir(self) -> Path:
        """Old trees of switched directories, retained for rollback (retained.py)."""
        return self.state_dir / "trees"

    @property
    def reclaim_dir(self) -> Path:
        """Trees nothing refers to any more, deleted by a detached process (reclaim.py)."""
        return self.state_dir / "reclaim"

    @property
    def tmp_dir(self) -> Path:
        return self.state_dir / "tmp"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lock"

    @property
    def run_dir(self) -> Path:
        return self.root / "run/mgr-agent"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "agent.sock"

    # the panels
    @property
    def mgr(self) -> Path:
        return self.root / MGR_REL

    @property
    def psa(self) -> Path:
        return self.root / PSA_REL
