"""``python -m mgr_agent``."""

from mgr_agent.cli import main

raise SystemExit(main())
