"""mgr-agent: transactional installer for ispmanager 6 plugins and Plesk extensions."""

__version__ = "0.1.0"
