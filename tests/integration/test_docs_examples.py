"""The examples in docs/usage.md are real output: this test makes them and compares.

Every fenced block after a ``<!-- generated: NAME -->`` line is the output of a real run
below, with what changes from run to run (the sandbox path, transaction ids, times,
durations) replaced by fixed values.  When the output changes on purpose, rewrite the
blocks with ``MGR_AGENT_UPDATE_DOCS=1 pytest tests/integration/test_docs_examples.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mgr_agent import cli as cli_mod
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip
from tests.helpers import REPO, Run, cli

USAGE = REPO / "docs/usage.md"
MARK = re.compile(r"^<!-- generated: (?P<name>[a-z0-9-]+) -->\n```(?P<lang>\w+)\n(?P<body>.*?)^```$",
                  re.M | re.S)
TX = re.compile(r"\b20\d{12}[0-9a-f]{6}\b")
LOCAL_TIME = re.compile(r"\b20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\b")
SANDBOX = "/tmp/sandbox"


class Normaliser:
    """Replaces what differs between runs with stable, realistic values."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.txs: dict[str, str] = {}

    def _tx(self, match: re.Match[str]) -> str:
        return self.txs.setdefault(match.group(0), f"2026112110150{len(self.txs)}a1b2c{len(self.txs)}")

    def text(self, text: str) -> str:
        text = text.replace(self.root, SANDBOX)
        text = TX.sub(self._tx, text)
        return LOCAL_TIME.sub("2026-11-21 10:15:00", text)

    def value(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.value(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(key, v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if key == "seconds" and isinstance(value, float):
            return 0.02
        if key in ("started", "ended", "installed_at", "kept_at") and isinstance(value, float):
            return 1795256100.0
        return value

    def json(self, run: Run) -> str:
        return pretty(self.value("", json.loads(run.stdout)))


def pretty(value: Any, level: int = 0, width: int = 90) -> str:
    """JSON indented by two, with every list or object that fits on one line kept there."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or not value or 2 * level + len(flat) <= width:
        return flat
    pad = "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {pretty(v, level + 1, width - len(k) - 4)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
    items = [pad + pretty(v, level + 1, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + "  " * level + "]"


def _console(norm: Normaliser, command: str, run: Run) -> str:
    return f"$ mgr-agent {command}\n" + norm.text(run.stdout).rstrip("\n")


def generate(tmp_path: Path) -> dict[str, str]:
    """Run the documented scenarios; their output by example name."""
    root = tmp_path / "root"
    (root / "usr/local/psa").mkdir(parents=True)
    (root / "usr/local/psa/version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (root / "usr/local/mgr5/etc").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    pkgs = tmp_path / "pkgs"
    norm = Normaliser(root)
    out: dict[str, str] = {}

    def ok(run: Run) -> Run:
        assert run.rc == 0, run
        return run

    # a Plesk upgrade
    ok(cli(root, "install", str(write_zip(plesk_files("demo-ext", "1.0"), pkgs / "ext-1.0.zip"))))
    out["upgrade"] = norm.json(ok(cli(root, "install", str(write_zip(
        plesk_files("demo-ext", "1.1"), pkgs / "ext-1.1.zip")))))
    # an ispmanager upgrade whose post-install hook fails: rolled back, exit 8
    for version in ("1.0", "1.1"):
        ok(cli(root, "install", str(write_zip(ispmanager_files("demo", version),
                                              pkgs / f"demo-{version}.zip"))))
    failing = ispmanager_files("demo", "1.2", post_install="echo cannot migrate\nexit 3")
    run = cli(root, "install", str(write_zip(failing, pkgs / "demo-1.2.zip")))
    assert run.rc == 8, run
    out["rolled-back"] = norm.json(run)
    # a downgrade refused before any change, exit 6
    run = cli(root, "install", str(pkgs / "demo-1.0.zip"))
    assert run.rc == 6, run
    out["refused"] = norm.json(run)
    # an upgrade killed after its post-install hook, then recovered
    good = write_zip(ispmanager_files("demo", "1.2"), pkgs / "demo-1.2-fixed.zip")
    run = cli(root, "install", str(good), "--no-restart", env={"MGR_AGENT_FAULT": "after-post-hook"})
    assert run.rc == -9, run
    out["recover"] = _console(norm, "recover", ok(cli(root, "recover", as_json=False)))
    out["recover"] += "\n" + _console(norm, "recover", ok(cli(root, "recover", as_json=False)))
    out["history"] = _console(norm, "history demo", ok(cli(root, "history", "demo", as_json=False)))
    rows = json.loads(ok(cli(root, "history", "demo", "-n", "1")).stdout)
    out["history-recovery"] = pretty(norm.value("", rows["data"][0]))
    return out


def test_usage_examples_are_real_output(tmp_path: Path) -> None:
    made = generate(tmp_path)
    text = USAGE.read_text(encoding="utf-8")
    found = {m.group("name"): m for m in MARK.finditer(text)}
    assert set(found) == set(made), "every example is in docs/usage.md, and only those"
    if os.environ.get("MGR_AGENT_UPDATE_DOCS") == "1":
        for name, match in sorted(found.items(), key=lambda kv: -kv[1].start()):
            body = made[name] + "\n"
            text = text[: match.start("body")] + body + text[match.end("body"):]
        USAGE.write_text(text, encoding="utf-8")
        return
    for name, match in found.items():
        assert match.group("body") == made[name] + "\n", (
            f"docs/usage.md example {name!r} differs from real output; rerun with "
            "MGR_AGENT_UPDATE_DOCS=1 to rewrite it:\n" + made[name])


def test_usage_documents_every_command_and_promises_nothing_that_exists() -> None:
    text = USAGE.read_text(encoding="utf-8")
    parser = cli_mod._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"`{command}" in text or f"### {command}" in text, f"{command} is not documented"
    not_yet = text.partition("## Not yet")[2].partition("\n## ")[0]
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"`{command}" not in not_yet and f"mgr-agent {command}" not in not_yet, command
