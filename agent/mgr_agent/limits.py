"""``Limits``: bounds on what a package may contain, read from agent.toml's ``[archive]``.

Its own module so that reading the configuration (every command does) does not import
the archive readers (zipfile, tarfile) with it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on what a package may contain; every one is configurable in agent.toml."""

    max_entries: int = 100_000
    max_total_bytes: int = 4 * 1024**3
    max_entry_bytes: int = 2 * 1024**3
    max_ratio: int = 200
    ratio_min_bytes: int = 1024 * 1024
    max_path_bytes: int = 1024
    max_component_bytes: int = 255
