"""ispmanager APS web scripts: repositories, ``aps_settings.xml`` rules and images.

One module per concern: :mod:`.conf` (``ApsExtRepository`` lines of ``ispmgr.conf``),
:mod:`.settings` (reading, checking and editing ``aps_settings.xml``), :mod:`.resolve`
(what the rules leave users), :mod:`.repo` (fetching and reading a repository
description), :mod:`.ops` (the commands, under the agent's lock) and :mod:`.command`
(their arguments and text rendering).  Paths come from the ``Layout`` (``layout.mgr``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mgr_agent.errors import AgentError
from mgr_agent.layout import Layout

CONF_REL = "etc/ispmgr.conf"
SETTINGS_REL = "etc/templates/aps_settings.xml"
IMG_REL = "skins/common/img"
IMAGE_SIZE = (32, 32)


@dataclass(frozen=True)
class ApsPaths:
    """ispmanager's APS files under one root."""

    mgr: Path

    @classmethod
    def of(cls, layout: Layout) -> ApsPaths:
        return cls(layout.mgr)

    @property
    def conf(self) -> Path:
        return self.mgr / CONF_REL

    @property
    def settings(self) -> Path:
        return self.mgr / SETTINGS_REL

    @property
    def img_dir(self) -> Path:
        return self.mgr / IMG_REL


class InvalidSettings(AgentError):
    """``aps_settings.xml`` (or a requested change to it) breaks a rule; nothing was written."""

    code = "aps-invalid-settings"
    exit_code = 3
    default_hint = "`mgr-agent aps check` lists every problem with its fix"


class InvalidRepository(AgentError):
    """A repository URL or description the panel could not use; nothing was written."""

    code = "aps-invalid-repository"
    exit_code = 3
