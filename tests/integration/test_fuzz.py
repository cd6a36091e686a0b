"""Fuzzing (issue 3, item 9): random packages, random command sequences, one invariant.

Hypothesis builds, per example, a few versions of an ispmanager plugin and of a Plesk
extension: random file sets from a small pool of paths (so that versions overlap: adds,
replaces, removals, a panel file replaced and put back, Plesk ``var/`` data), random
contents and modes, random versions and releases (downgrades included, ispmanager also
without any version), random hook exit codes, and sometimes an invalid package (a
``../`` entry, broken metadata).  It then runs a random sequence of ``install``,
``install --reinstall``, ``install --allow-downgrade``, ``install --dry-run``,
``uninstall`` and ``rollback`` through the real CLI on one fresh root.

After every command:
- the exit code is the one the model predicts;
- the tree under the root is exactly the model's: the complete installed version of each
  plugin, Plesk data kept, panel originals put back, files no version shipped untouched,
  directories the plugins created removed when emptied -- or, when the command failed,
  exactly the tree before it;
- the state (``list``, ``info``) says what the model says and agrees with the files;
- nothing is left over (staging, backups, scratch, journals).

``RELIABILITY_FULL=1`` (the reliability runner) tries more examples.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mgr_agent.sandbox.samples import Tree, write_zip
from mgr_agent.versions import compare, is_hash_version
from tests.helpers import cli, leftovers, snapshot

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
ISP, PLESK = "ispmanager", "plesk"
NAME = {ISP: "fz", PLESK: "fz-ext"}
HAVE_PHP = shutil.which("php") is not None
FULL = os.environ.get("RELIABILITY_FULL") == "1"

settings.register_profile(
    "mgr-agent-fuzz", max_examples=120 if FULL else 25, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True)

# Paths inside a package.  Versions draw subsets of these, so they overlap.
ISP_POOL = ("addon/fz-lib/run.sh", "etc/sql/fz.addon/f1", "etc/sql/fz.addon/f2",
            "skins/common/img/fz/a.png", "skins/common/img/fz/deep/b.png",
            "skins/common/img/fz/deep",  # a file in one version, a directory in another
            "etc/templates/fz/x.tpl",
            "etc/templates/nginx-vhosts.template")  # a panel file: diverted, then put back
PLESK_POOL = ("htdocs/index.php", "htdocs/css/a.css", "htdocs/img/deep/b.png", "htdocs/img",
              "plib/library/A.php",
              "plib/library/B.php", "sbin/tool.sh", "var/settings.json", "var/db/data.txt",
              "_meta/icon.png", "CHANGES.md")
OVERLAP = {"ispmanager": ("skins/common/img/fz/deep", "skins/common/img/fz/deep/b.png"),
           "plesk": ("htdocs/img", "htdocs/img/deep/b.png")}
MODES = (0o644, 0o755, 0o600, 0o640, 0o700, 0o444)  # all survive the archive's mode sanitising
HOOKS = ("pre-install", "post-install", "pre-uninstall")
PANEL_ORIGINAL = (f"{MGR}/etc/templates/nginx-vhosts.template", b"server { # panel original\n}\n", 0o644)
RUNTIME = {  # files no version ships, made by the panels at run time
    f"{MGR}/skins/common/img/fz/runtime.cache": (b"made by the panel\n", 0o600),
    f"{PSA}/var/modules/fz-ext/runtime.db": (b"made by the extension\n", 0o640),
    f"{PSA}/admin/plib/modules/fz-ext/cache.db": (b"cache\n", 0o644),
}


# ------------------------------------------------------------------ the packages
@dataclass(frozen=True)
class Variant:
    """One package of one plugin, as Hypothesis drew it."""

    panel: str
    version: str | None  # None: ispmanager derives "0+<content hash>"
    release: str
    files: tuple[tuple[str, bytes, int], ...]  # package-relative path, content, mode
    hooks: tuple[tuple[str, int], ...]  # hook, exit code (a hook not listed is absent)
    invalid: str | None = None  # "dotdot" or "badmeta"

    @property
    def name(self) -> str:
        return NAME[self.panel]

    def refused(self) -> bool:
        """Refused when read (exit 3): broken on purpose, or a file that another entry's
        path runs through (``x`` and ``x/y``: overlapping entries)."""
        paths = [p for p, _, _ in self.files]
        return self.invalid is not None or any(q.startswith(p + "/") for p in paths for q in paths)

    def hook_code(self, hook: str) -> int:
        return dict(self.hooks).get(hook, 0)

    def tree(self) -> Tree:
        tree: Tree = {}
        if self.panel == ISP:
            mod = b'<?xml version="1.0" encoding="UTF-8"?>\n<mgrdata/>\n'
            if self.invalid == "badmeta":
                mod = b'<?xml version="1.0"?>\n<mgrdata>\n'  # not well-formed
            tree["etc/xml/ispmgr_mod_fz.xml"] = (mod, 0o644)
            ver = f' version="{self.version}"' if self.version else ""
            tree["etc/plugins/ispmgr/fz.xml"] = (f'<plugin name="fz"{ver}/>\n'.encode(), 0o644)
            for hook, code in self.hooks:
                tree[f"scripts/{hook}"] = (f"#!/bin/sh\necho {hook} $*\nexit {code}\n".encode(), 0o755)
        else:
            version = "" if self.invalid == "badmeta" else f"<version>{self.version}</version>"
            tree["meta.xml"] = (f"<module><id>fz-ext</id><name>Fuzz</name>{version}<release>"
                                f"{self.release}</release><os>unix</os></module>\n".encode(), 0o644)
            for hook, code in self.hooks:
                tree[f"plib/scripts/{hook}.php"] = (f'<?php echo "{hook}";\nexit({code});\n'.encode(), 0o644)
        for path, data, mode in self.files:
            tree[path] = (data, mode)
        if self.invalid == "dotdot":
            tree["../escaped.txt"] = (b"outside\n", 0o644)
        return tree

    def identity(self) -> tuple[Any, ...]:
        """Equal exactly when the agent's content hash is equal."""
        return tuple(sorted(self.tree().items()))

    def installed(self) -> dict[str, tuple[bytes, int, str]]:
        """Root-relative target -> (content, mode, kind) of every file it installs."""
        out: dict[str, tuple[bytes, int, str]] = {}
        for path, (data, mode) in self.tree().items():
            if self.panel == ISP:
                if not path.startswith("scripts/"):
                    out[f"{MGR}/{path}"] = (data, mode, "file")
                continue
            ext = "fz-ext"
            top, _, rest = path.partition("/")
            if path in ("meta.xml", "CHANGES.md"):
                out[f"{PSA}/admin/plib/modules/{ext}/{path}"] = (data, mode, "file")
            elif top == "htdocs":
                out[f"{PSA}/admin/htdocs/modules/{ext}/{rest}"] = (data, mode, "file")
            elif top == "plib":
                out[f"{PSA}/admin/plib/modules/{ext}/{rest}"] = (data, mode, "file")
            elif top == "_meta":
                out[f"{PSA}/admin/share/modules/{ext}/_meta/{rest}"] = (data, mode, "file")
            elif top == "sbin":
                out[f"{PSA}/admin/sbin/modules/{ext}/{rest}"] = (data, 0o755, "file")
            elif top == "var":
                out[f"{PSA}/var/modules/{ext}/{rest}"] = (data, mode, "data")
        return out

    def label(self) -> str | None:
        """What ``list`` shows, or None for a derived (hash) version."""
        if self.panel == PLESK:
            return f"{self.version}-{self.release}"
        return self.version

    def older_than(self, other: Variant) -> bool:
        if self.version is None or other.version is None:
            return False  # "0+hash" versions carry no order
        assert not is_hash_version(self.version)
        return (compare(self.version, other.version) or compare(self.release, other.release)) < 0


CONTENTS = st.one_of(st.sampled_from([b"", b"same\n", b"other\n"]), st.binary(max_size=40))


@st.composite
def variants(draw: st.DrawFn, panel: str) -> Variant:
    pool = ISP_POOL if panel == ISP else PLESK_POOL
    paths = draw(st.sets(st.sampled_from(pool), max_size=len(pool)))
    file_or_dir = OVERLAP[panel]
    if set(file_or_dir) <= paths and not draw(st.sampled_from([False] * 5 + [True])):
        paths.discard(draw(st.sampled_from(file_or_dir)))  # mostly one or the other
    ordered = sorted(paths)
    files = tuple((p, draw(CONTENTS), draw(st.sampled_from(MODES))) for p in ordered)
    versions = ["1.0", "1.1", "2.0", "0.9", "1.0.1"]
    version = draw(st.sampled_from([*versions, None] if panel == ISP else versions))
    release = draw(st.sampled_from(["1", "2"])) if panel == PLESK else ""
    hooks = []
    for hook in HOOKS:
        code = draw(st.sampled_from([None, None, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3]))
        if code is not None:
            hooks.append((hook, code))
    invalid = draw(st.sampled_from([None] * 14 + ["dotdot", "badmeta"]))
    return Variant(panel, version, release, files, tuple(hooks), invalid)


OPS = ("install", "install", "install", "reinstall", "downgrade", "dry-run", "uninstall", "rollback",
       "rollback")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, list[Variant]], list[tuple[str, str, int]]]:
    # one plugin (longer histories of it) or both on the same root
    panels = draw(st.sampled_from([[ISP], [PLESK], [ISP, PLESK]])) if HAVE_PHP else [ISP]
    packages = {p: draw(st.lists(variants(p), min_size=2, max_size=4)) for p in panels}
    command = st.tuples(st.sampled_from(OPS), st.sampled_from(panels), st.integers(0, 3))
    commands = draw(st.lists(command, min_size=2, max_size=8))
    return packages, [(op, panel, k % len(packages[panel])) for op, panel, k in commands]


# ------------------------------------------------------------------ the model
def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


NEW_DIR_MODE = 0o755 & ~_umask()  # the agent creates directories 0755, less its umask


@dataclass
class Model:
    """What must be on disk and in the state after each command."""

    files: dict[str, tuple[bytes, int]]
    base_dirs: dict[str, int]  # the directories of the fresh root, with their modes
    installed: dict[str, Variant] = field(default_factory=dict)  # panel -> variant
    kept: dict[str, Variant] = field(default_factory=dict)  # panel -> the one kept version
    outcome: str = ""  # what the last command did, for the statistics

    def snapshot(self) -> dict[str, tuple[str, int, str]]:
        out = {p: ("file", mode, hashlib.sha256(data).hexdigest()) for p, (data, mode) in self.files.items()}
        dirs = dict(self.base_dirs)
        for path in self.files:  # directories are there exactly when something is in them
            parts = path.split("/")[:-1]
            for i in range(len(parts)):
                dirs.setdefault("/".join(parts[: i + 1]), NEW_DIR_MODE)
        out.update({d: ("dir", mode, "") for d, mode in dirs.items()})
        return out

    def blocked(self, v: Variant) -> bool:
        """A file of ``v`` where a directory is on disk, or a directory where a file is.

        The agent refuses that as a conflict (exit 5) before any change, even when both
        belong to this plugin (a file that becomes a directory across an upgrade)."""
        dirs = {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}
        for target in v.installed():
            parts = target.split("/")
            if target in dirs or any("/".join(parts[:i]) in self.files for i in range(1, len(parts))):
                return True
        return False

    def _switch(self, old: Variant | None, new: Variant | None) -> None:
        """The files of ``old`` give way to those of ``new``; data stays; originals come back."""
        old_files = old.installed() if old else {}
        new_files = new.installed() if new else {}
        for path, (_, _, kind) in old_files.items():
            if kind == "file" and path not in new_files:
                if path == PANEL_ORIGINAL[0]:
                    self.files[path] = PANEL_ORIGINAL[1:]
                else:
                    del self.files[path]
        for path, (data, mode, kind) in new_files.items():
            if kind == "file" or path not in self.files:
                self.files[path] = (data, mode)

    def expect(self, op: str, v: Variant) -> int:
        """Apply the command to the model; return the exit code it must end with."""
        panel = v.panel
        current = self.installed.get(panel)
        self.outcome = op
        if op == "uninstall":
            if current is None:
                return 4
            if current.hook_code("pre-uninstall"):
                return 7
            self.outcome = "uninstall: removed"
            self._switch(current, None)
            del self.installed[panel]
            self.kept.pop(panel, None)
            return 0
        if op == "rollback":
            if current is None or panel not in self.kept:
                return 4
            return self._install(self.kept[panel], current, allow_downgrade=True, reinstall=False)
        if v.refused():
            return 3
        if op == "dry-run":
            if current and current.identity() == v.identity():
                return 0  # unchanged
            if current and v.older_than(current):
                return 6
            return 5 if self.blocked(v) else 0
        return self._install(v, current, allow_downgrade=op == "downgrade", reinstall=op == "reinstall")

    def _install(self, v: Variant, current: Variant | None, *, allow_downgrade: bool,
                 reinstall: bool) -> int:
        if current is not None and current.identity() == v.identity() and not reinstall:
            self.outcome += ": unchanged"
            return 0  # no hook runs
        if current is not None and not allow_downgrade and v.older_than(current):
            return 6
        if self.blocked(v):
            return 5
        if v.hook_code("pre-install"):
            return 7
        if v.hook_code("post-install"):
            return 8
        self.outcome += ": fresh" if current is None else ": upgraded"
        self._switch(current, v)
        self.installed[v.panel] = v
        if current is not None and current.identity() != v.identity():
            self.kept[v.panel] = current
        return 0


# ------------------------------------------------------------------ the run
def _write(root: Path, rel: str, data: bytes, mode: int) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def fresh_root(base: Path) -> tuple[Path, Model]:
    """conftest's layout, a panel file a plugin may replace, and run-time files."""
    root = base / "root"
    _write(root, f"{PSA}/version", b"18.0.60 Debian 12.0 1800240311.09\n", 0o644)
    (root / MGR / "etc").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    _write(root, PANEL_ORIGINAL[0], *PANEL_ORIGINAL[1:])
    for rel, (data, mode) in RUNTIME.items():
        _write(root, rel, data, mode)
    snap = snapshot(root)
    files = {p: ((root / p).read_bytes(), mode) for p, (kind, mode, _) in snap.items() if kind == "file"}
    dirs = {p: mode for p, (kind, mode, _) in snap.items() if kind == "dir"}
    return root, Model(files, dirs)


def argv_of(op: str, v: Variant, archive: Path) -> list[str]:
    return {"install": ["install", str(archive)],
            "reinstall": ["install", str(archive), "--reinstall"],
            "downgrade": ["install", str(archive), "--allow-downgrade"],
            "dry-run": ["install", str(archive), "--dry-run"],
            "uninstall": ["uninstall", v.name],
            "rollback": ["rollback", v.name]}[op]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_state(root: Path, model: Model, previous: dict[str, Any], where: str) -> dict[str, Any]:
    """``list`` and ``info`` say what the model says; an unchanged plugin's row is unchanged."""
    done = cli(root, "list")
    assert done.rc == 0, f"{where}: list: {done.stdout} {done.stderr}"
    rows = {r["panel"]: r for r in done.json["data"]}
    assert set(rows) == set(model.installed), f"{where}: list says {rows}"
    for panel, v in model.installed.items():
        row = rows[panel]
        label = v.label()
        assert row["name"] == v.name
        assert row["version"] == label if label else row["version"].startswith("0+"), f"{where}: {row}"
        assert row["files"] == len(v.installed()), f"{where}: {row}"
        if previous.get(panel) == row:
            continue  # same commit as before: checked then
        info = cli(root, "info", v.name)
        assert info.rc == 0, f"{where}: info: {info.stdout}"
        data = info.json["data"]
        got = {f["path"]: (f["sha256"], int(f["mode"], 8), f["kind"]) for f in data["files"]}
        want = {p: (sha(d), mode, kind) for p, (d, mode, kind) in v.installed().items()}
        assert got == want, f"{where}: info files differ: {sorted(set(got.items()) ^ set(want.items()))}"
        for path, (digest, mode, kind) in got.items():  # the state agrees with the disk
            disk = model.files[path]
            assert kind == "data" or (sha(disk[0]), disk[1]) == (digest, mode), f"{where}: {path}"
        kept = model.kept.get(panel)
        assert len(data["kept"]) == (1 if kept else 0), f"{where}: kept {data['kept']}"
        if kept is not None:
            k = data["kept"][0]
            assert (k["version"] == kept.version if kept.version else k["version"].startswith("0+"))
            assert k["release"] == kept.release
    return rows


@settings(settings.get_profile("mgr-agent-fuzz"))
@given(scenarios())
def test_every_command_leaves_a_complete_version_and_agreeing_state(
        scenario: tuple[dict[str, list[Variant]], list[tuple[str, str, int]]]) -> None:
    packages, commands = scenario
    with tempfile.TemporaryDirectory(prefix="mgr-fuzz-") as tmp:
        base = Path(tmp)
        root, model = fresh_root(base)
        archives = {(panel, i): write_zip(v.tree(), base / f"{panel}-{i}.zip")
                    for panel, vs in packages.items() for i, v in enumerate(vs)}
        assert snapshot(root) == model.snapshot(), "the model starts from the real tree"
        rows: dict[str, Any] = {}
        for step, (op, panel, k) in enumerate(commands):
            v = packages[panel][k]
            argv = argv_of(op, v, archives[(panel, k)])
            before = snapshot(root)
            run = cli(root, *argv)
            want = model.expect(op, v)
            event(f"{model.outcome}: exit {want}")  # shown by --hypothesis-show-statistics
            where = f"step {step} `{' '.join(argv[:1] + argv[2:])}` ({panel} #{k})"
            assert run.rc == want, f"{where}: exit {run.rc}, model says {want}: {run.stdout[-1500:]} " \
                                   f"{run.stderr[-1500:]}"
            after = snapshot(root)
            if want != 0:
                assert after == before, f"{where}: a failed command changed the tree"
            diff = sorted(set(after.items()) ^ set(model.snapshot().items()))
            assert not diff, f"{where}: tree differs from the model: {diff[:8]}"
            assert leftovers(root) == [], where
            rows = check_state(root, model, rows, where)


def test_model_knows_the_samples() -> None:
    """The model's mapping of a Plesk package agrees with the agent's documented layout."""
    v = Variant(PLESK, "1.0", "1", (("var/a", b"x", 0o600), ("sbin/t", b"y", 0o644),
                                      ("_meta/i.png", b"z", 0o644)), (("pre-install", 0),))
    assert v.installed() == {
        f"{PSA}/admin/plib/modules/fz-ext/meta.xml": (v.tree()["meta.xml"][0], 0o644, "file"),
        f"{PSA}/admin/plib/modules/fz-ext/scripts/pre-install.php":
            (v.tree()["plib/scripts/pre-install.php"][0], 0o644, "file"),
        f"{PSA}/var/modules/fz-ext/a": (b"x", 0o600, "data"),
        f"{PSA}/admin/sbin/modules/fz-ext/t": (b"y", 0o755, "file"),
        f"{PSA}/admin/share/modules/fz-ext/_meta/i.png": (b"z", 0o644, "file"),
    }
