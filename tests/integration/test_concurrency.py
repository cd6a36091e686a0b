"""Concurrency (DESIGN §5, issue 3 item 6): one lock serialises every mutating command.

Twenty installs, upgrades and uninstalls of different plugins, started at the same
instant as separate processes under one root, all succeed; their transactions never
overlap (history start/end times); and the final state (``list``, ``info``) is exactly
what is on disk, byte for byte.  A caller that will not wait fails at once and names
the holder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mgr_agent.sandbox import samples
from tests.helpers import cli, leftovers, snapshot
from tests.waits import wait_for_lock

STATE = "var/lib/mgr-agent"


def _popen(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    return subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), *args, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _packages(pkgs: Path, count: int) -> dict[str, tuple[Path, Path]]:
    """``count`` different plugins, half ispmanager and half Plesk, each in v1 and v2."""
    out = {}
    for i in range(count):
        if i % 2:
            name = f"cc-ext{i:02d}"
            trees = [samples.plesk_files(name, v, extra={f"htdocs/p{i}.txt": (f"{name} {v}\n".encode(),
                                                                               0o644)})
                     for v in ("1.0", "2.0")]
        else:
            name = f"cc{i:02d}"
            trees = [samples.ispmanager_files(name, v,
                                              extra={f"addon/{name}-lib/data.txt": (v.encode(), 0o644)})
                     for v in ("1.0", "2.0")]
        out[name] = (samples.write_zip(trees[0], pkgs / f"{name}-1.zip"),
                     samples.write_zip(trees[1], pkgs / f"{name}-2.zip"))
    return out


Outcome = tuple[tuple[str, ...], int, dict[str, object]]


def _start_all(root: Path, commands: Sequence[tuple[str, ...]]) -> list[Outcome]:
    """Start every command at once; wait for all; (argv, exit code, JSON) each."""
    procs = [(argv, _popen(root, *argv)) for argv in commands]
    out = []
    for argv, proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert stdout.strip(), f"{argv}: no output; stderr: {stderr}"
        out.append((argv, proc.returncode, json.loads(stdout)))
    return out


def _assert_serialised(root: Path, txs: set[str]) -> None:
    """The transactions' [started, ended] intervals (taken inside the lock) never overlap."""
    history = [h for h in cli(root, "history", "-n", "500").json["data"] if h["tx"] in txs]
    assert len(history) == len(txs)
    assert {h["status"] for h in history} == {"committed"}
    spans = sorted((h["started"], h["ended"], h["tx"]) for h in history)
    for (_, end, tx), (start, _, nxt) in itertools.pairwise(spans):
        assert end <= start, f"transactions {tx} and {nxt} overlap: {end} > {start}"


def _assert_state_is_disk(root: Path, want: dict[str, str], base: set[str]) -> None:
    """``list`` names exactly ``want`` (name -> version); ``info`` lists exactly the files on
    disk (besides ``base``), with their content and mode, byte for byte (data files: present)."""
    listed = {r["name"]: r for r in cli(root, "list").json["data"]}
    assert {n: r["version"] for n, r in listed.items()} == want
    owned: dict[str, dict[str, Any]] = {}
    infos = _start_all(root, [("info", name) for name in want])  # read-only: side by side
    for (_, rc, doc), name in zip(infos, want, strict=True):
        assert rc == 0, doc
        info: dict[str, Any] = doc["data"]  # type: ignore[assignment]
        assert len(info["files"]) == listed[name]["files"]
        for f in info["files"]:
            assert f["path"] not in owned, f"{f['path']} owned twice"
            owned[f["path"]] = f
    disk = {p: v for p, v in snapshot(root).items() if v[0] == "file"}
    assert set(disk) - base == set(owned), sorted(set(disk) ^ set(owned))[:20]
    for path, f in owned.items():
        if f["kind"] == "data":  # Plesk var/: the admin's from the first install on; kept as is
            continue
        data = (root / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] == disk[path][2], path
        assert len(data) == f["size"], path
        assert f"{disk[path][1]:04o}" == f["mode"], path
    assert leftovers(root) == []


@pytest.mark.slow
def test_twenty_concurrent_commands_serialise_and_agree(root: Path, pkgs: Path) -> None:
    packages = _packages(pkgs, 20)
    names = list(packages)  # ispmanager and Plesk alternate
    base = {p for p, v in snapshot(root).items() if v[0] == "file"}

    # wave 1: 8 plugins installed at once
    first = names[:8]
    results = _start_all(root, [("install", str(packages[n][0])) for n in first])
    for argv, rc, doc in results:
        assert rc == 0, (argv, doc)
        assert doc["action"] == "installed"

    # wave 2: 20 commands at once: uninstall 4, upgrade 4, install 12 new ones
    removing, upgrading, adding = first[:4], first[4:], names[8:]
    commands = ([("uninstall", n) for n in removing] + [("install", str(packages[n][1])) for n in upgrading]
                + [("install", str(packages[n][0])) for n in adding])
    assert len(commands) == 20
    started = time.monotonic()
    results = _start_all(root, commands)
    elapsed = time.monotonic() - started
    actions = {}
    for argv, rc, doc in results:
        assert rc == 0, (argv, doc)
        actions[doc["name"]] = doc["action"]
        assert doc["tx"], (argv, doc)
    assert actions == {**dict.fromkeys(removing, "removed"), **dict.fromkeys(upgrading, "upgraded"),
                       **dict.fromkeys(adding, "installed")}
    _assert_serialised(root, {str(doc["tx"]) for _, _, doc in results})

    want = {n: ("2.0-1" if n.startswith("cc-ext") else "2.0") for n in upgrading}
    want.update({n: ("1.0-1" if n.startswith("cc-ext") else "1.0") for n in adding})
    # an uninstalled Plesk extension leaves its var/ data (no --purge): exactly as shipped
    data = {f"usr/local/psa/var/modules/{n}/settings.json": b'{"installed_as": "1.0"}\n'
            for n in removing if n.startswith("cc-ext")}
    assert data
    for path, content in data.items():
        assert (root / path).read_bytes() == content
    # an upgraded one keeps the var/ data its first version wrote
    for n in upgrading:
        if n.startswith("cc-ext"):
            settings = root / f"usr/local/psa/var/modules/{n}/settings.json"
            assert settings.read_bytes() == b'{"installed_as": "1.0"}\n'
    _assert_state_is_disk(root, want, base | set(data))
    assert (root / STATE / "lock").read_text() == "", "the lock file should be emptied on release"
    print(f"20 concurrent commands in {elapsed:.1f} s")


def test_wait_zero_on_held_lock_fails_fast_and_names_holder(root: Path, pkgs: Path) -> None:
    """Complements test_crash's ``--wait 0`` case: other commands, human output, a bounded
    wait, read-only commands unaffected, and the holder finishing normally afterwards."""
    gate = pkgs / "gate"  # the holder's pre-install hook waits until the test opens the gate
    hook = f'i=0; while [ ! -e "{gate}" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done'
    slow = samples.write_zip(samples.ispmanager_files("slow", "1.0", pre_install=hook), pkgs / "slow.zip")
    other = samples.write_zip(samples.plesk_files("quick-ext", "1.0"), pkgs / "quick.zip")
    assert cli(root, "install", str(other)).rc == 0
    before = snapshot(root)
    holder = _popen(root, "install", str(slow))
    try:
        wait_for_lock(root, holder.pid, alive=lambda: holder.poll() is None)
        for argv in (("uninstall", "quick-ext", "--wait", "0"), ("recover", "--wait", "0")):
            t0 = time.monotonic()
            busy = cli(root, *argv)
            took = time.monotonic() - t0
            assert busy.rc == 9, busy.stdout
            err = busy.json["error"]
            assert err["code"] == "lock-busy"
            assert f"held by pid {holder.pid} (install slow, since " in err["message"], err["message"]
            assert took < 2, f"{argv}: --wait 0 took {took:.2f} s"
        # human output names the holder too, on stderr
        human = cli(root, "uninstall", "quick-ext", "--wait", "0", as_json=False)
        assert human.rc == 9 and f"pid {holder.pid} (install slow" in human.stderr, human.stderr
        # a bounded wait waits about that long, says whom it waits for, then gives up
        t0 = time.monotonic()
        waited = cli(root, "uninstall", "quick-ext", "--wait", "0.6", as_json=False)
        took = time.monotonic() - t0
        assert waited.rc == 9, waited.stderr
        assert f"waiting for the lock held by pid {holder.pid} (install slow" in waited.stderr
        assert 0.6 <= took < 2.6, took
        # read-only commands take no lock
        t0 = time.monotonic()
        listed = cli(root, "list")
        assert listed.rc == 0 and [r["name"] for r in listed.json["data"]] == ["quick-ext"]
        assert time.monotonic() - t0 < 2
        assert holder.poll() is None, "the holder should still be in its pre-install hook"
        assert snapshot(root) == before, "a refused caller changed files"
    finally:
        gate.touch()
        stdout, _ = holder.communicate(timeout=60)
    assert holder.returncode == 0, stdout
    # once it is free, a waiting caller gets it
    assert cli(root, "uninstall", "quick-ext", "--wait", "5").rc == 0
    assert [r["name"] for r in cli(root, "list").json["data"]] == ["slow"]
