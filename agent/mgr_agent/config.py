"""``etc/mgr-agent/agent.toml``: optional, every key has a default, unknown keys are refused."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout
from mgr_agent.limits import Limits

DURABILITY_MODES = ("syncfs", "fsync", "writeback")
"""How staged data and directory changes are made durable (``[durability] mode``):
``syncfs``: one ``syncfs(2)`` per filesystem; ``fsync``: each file fsynced as it is written;
``writeback``: write-back started per file as it is written (``sync_file_range``), then each
file fsynced in a second pass, as dpkg does.  Directories: fsynced one by one in the last two."""
DEFAULT_DURABILITY = "writeback"
"""dpkg's way: its cost follows the plugin's own bytes, and a database on the same
filesystem keeps its commit latency (docs/performance.md, "Durability modes")."""


@dataclass(frozen=True)
class Config:
    hook_timeout: float = 300.0
    hook_output_limit: int = 64 * 1024
    php: str = ""
    keep_versions: int = 1
    lock_wait: float = 300.0
    free_space_margin: int = 16 * 1024 * 1024
    durability: str = DEFAULT_DURABILITY
    core_timeout: float = 30.0
    health_window: float = 10.0
    core_unit: str = ""
    metrics_textfile: str = ""
    limits: Limits = field(default_factory=Limits)


_SECTIONS: dict[str, dict[str, str]] = {
    "hooks": {"timeout": "hook_timeout", "output_limit": "hook_output_limit", "php": "php"},
    "state": {"keep_versions": "keep_versions"},
    "lock": {"wait": "lock_wait"},
    "preflight": {"free_space_margin": "free_space_margin"},
    "durability": {"mode": "durability"},
    "panel": {"core_timeout": "core_timeout", "health_window": "health_window",
              "core_unit": "core_unit"},
    "metrics": {"textfile": "metrics_textfile"},
}


def _typed(where: str, value: Any, want: type) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or isinstance(value, bool):
        raise UsageError(f"{where}: expected {want.__name__}, got {value!r}")
    return value


def load(layout: Layout) -> Config:
    """Read the config file under the root, if any."""
    path = layout.config_file
    config = Config()
    if not path.exists():
        return config
    import tomllib  # noqa: PLC0415 - only when there is a file to read

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from exc
    types = {f.name: f.type for f in fields(Config)}
    changes: dict[str, Any] = {}
    limit_changes: dict[str, Any] = {}
    for section, values in data.items():
        if section == "archive" and isinstance(values, dict):
            known = {f.name for f in fields(Limits)}
            for key, value in values.items():
                if key not in known:
                    raise UsageError(f"{path}: unknown key archive.{key}")
                limit_changes[key] = _typed(f"{path}: archive.{key}", value, int)
            continue
        keys = _SECTIONS.get(section)
        if keys is None or not isinstance(values, dict):
            raise UsageError(f"{path}: unknown section [{section}]")
        for key, value in values.items():
            attr = keys.get(key)
            if attr is None:
                raise UsageError(f"{path}: unknown key {section}.{key}")
            want = {"float": float, "int": int, "str": str}[str(types[attr])]
            changes[attr] = _typed(f"{path}: {section}.{key}", value, want)
    for attr, low in (("hook_timeout", 0.001), ("hook_output_limit", 1024), ("keep_versions", 0),
                      ("lock_wait", 0), ("free_space_margin", 0), ("core_timeout", 0.1),
                      ("health_window", 0)):
        if attr in changes and changes[attr] < low:
            key = next(f"{s}.{k}" for s, keys in _SECTIONS.items() for k, a in keys.items() if a == attr)
            raise UsageError(f"{path}: {key} must be at least {low}, got {changes[attr]}")
    if changes.get("durability", DEFAULT_DURABILITY) not in DURABILITY_MODES:
        raise UsageError(f"{path}: durability.mode must be one of "
                         + ", ".join(f'"{m}"' for m in DURABILITY_MODES))
    if limit_changes:
        changes["limits"] = replace(config.limits, **limit_changes)
    return replace(config, **changes)
