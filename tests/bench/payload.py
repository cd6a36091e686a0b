"""Deterministic benchmark payloads: the same files as a Plesk extension zip, an
ispmanager plugin zip and a .deb for ``dpkg --root``.

A payload of N files has a fixed size mix (seeded, so every run and every machine
builds the same bytes):

- about 95 % small text files, 0.2-8 KB (PHP, JS, CSS, templates),
- about 5 % medium files, 30-200 KB (half minified JS, half PNG/font-like binaries),
- about 0.2 % large binaries, 1-2 MB (at least one),

which gives about 59 MB at 5,000 files, like TESTING.md's reference payload.  Payloads
of fewer than 100 files have no large file, of fewer than 20 no medium one: the 1-file
payload (one small text file, plus the sample's meta.xml and hooks) is the scaling row's
fixed cost.

Variants of one payload:

- ``v1``      version 1.0, the base;
- ``v2``      version 2.0, every file changed;
- ``v1b``     version 1.1, 1 % of the files changed;
- ``v2fail``  version 2.0 with every file changed and a post-install hook that fails.

The .deb holds exactly the files mgr-agent installs, at the same root-relative paths
(the mapping is read from the agent itself, ``mgr_agent.package.load``), and runs the
package's own hooks as its maintainer scripts (pre-install as ``preinst``, post-install
as ``postinst``, pre-uninstall as ``prerm``; Plesk's PHP hooks under ``#!/usr/bin/php``),
so that both installers run the same processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mgr_agent.config import Config
from mgr_agent.layout import Layout
from mgr_agent.package import load
from mgr_agent.panels import all_panels
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files

SEED = 20261121
GENERATOR = 1  # bump when the content rules change: invalidates cached payloads
SIZES = (500, 5_000, 20_000)
VARIANTS = ("v1", "v2", "v1b", "v2fail")
PANELS = ("plesk", "ispmanager")
PLESK_EXT = "bench-ext"
ISP_PLUGIN = "benchplug"

_VERSIONS = {"v1": "1.0", "v2": "2.0", "v1b": "1.1", "v2fail": "2.0"}
_WORDS = (
    "user", "domain", "account", "session", "request", "response", "config", "value", "result",
    "error", "handler", "item", "list", "form", "field", "button", "module", "extension",
    "service", "client", "server", "message", "status", "token", "cache", "query", "record",
    "entry", "option", "filter", "render", "template", "view", "model", "controller", "action",
    "param", "index", "key",
)


@dataclass(frozen=True)
class PayloadFile:
    """One payload file; ``role`` picks where a panel puts it (web, code or asset)."""

    i: int
    role: str
    rel: str
    size: int
    binary: bool


def _corpus(rng: random.Random, size: int = 1 << 20) -> bytes:
    """Source-code-like text: compresses about as well as real PHP and JS do."""
    lines: list[str] = []
    total = 0
    while total < size:
        a, b, c = rng.choice(_WORDS), rng.choice(_WORDS), rng.choice(_WORDS)
        n = rng.randrange(1000)
        line = rng.choice((
            f"    ${a} = $this->{b}{c.title()}(${c}, {n});",
            f"function {a}{b.title()}(${c}, $options = []) {{",
            f"    if (!isset(${a}['{b}'])) {{ return null; }}",
            f"    // {a} {b} {c}: keep the {b} for the next {c}",
            f"    return ${a}->get('{b}.{c}', {n});",
            f".{a}-{b} {{ margin: {n % 40}px; color: #{n:03x}; }}",
            f"  {a}: function({b}, {c}) {{ return {b}.{c} || {n}; }},",
            "}",
            "",
        ))
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def plan(n: int, seed: int = SEED) -> list[PayloadFile]:
    """The file list of an N-file payload: names, roles and sizes."""
    rng = random.Random(f"{seed}:{GENERATOR}:{n}:plan")
    large = max(1, round(n * 0.002)) if n >= 100 else 0
    medium = max(1, round(n * 0.055)) if n >= 20 else 0
    kinds = ["large"] * large + ["medium"] * medium + ["small"] * (n - large - medium)
    rng.shuffle(kinds)
    per_dir = 25
    files: list[PayloadFile] = []
    for i, kind in enumerate(kinds):
        group = f"g{(i // per_dir) // 20:02d}/d{(i // per_dir) % 20:02d}"
        if kind == "large":
            size = rng.randrange(1 << 20, 2 << 20)
            files.append(PayloadFile(i, "asset", f"{group}/blob{i:05d}.bin", size, True))
        elif kind == "medium":
            size = int(math.exp(rng.uniform(math.log(30_000), math.log(200_000))))
            binary = rng.random() < 0.5
            if binary:
                ext = rng.choice((".png", ".woff2", ".jpg"))
                files.append(PayloadFile(i, "web", f"img/{group}/f{i:05d}{ext}", size, True))
            else:
                files.append(PayloadFile(i, "web", f"js/{group}/bundle{i:05d}.min.js", size, False))
        else:
            size = rng.randrange(200, 8_192)
            ext = rng.choice((".php", ".php", ".php", ".phtml", ".js", ".css", ".json"))
            role = "code" if ext in (".php", ".phtml") else "web"
            files.append(PayloadFile(i, role, f"{group}/file{i:05d}{ext}", size, False))
    return files


def changed(files: list[PayloadFile], variant: str, seed: int = SEED) -> set[int]:
    """Indexes of the files whose content differs from ``v1`` in ``variant``."""
    if variant == "v1":
        return set()
    if variant == "v1b":
        rng = random.Random(f"{seed}:{GENERATOR}:{len(files)}:v1b")
        return set(rng.sample(range(len(files)), max(1, len(files) // 100)))
    return {f.i for f in files}


class Content:
    """Bytes of each payload file, in a given variant."""

    def __init__(self, files: list[PayloadFile], variant: str, seed: int = SEED) -> None:
        self.files = files
        self.seed = seed
        self.n = len(files)
        self.changed = changed(files, variant, seed)
        self.corpus = _corpus(random.Random(f"{seed}:{GENERATOR}:corpus"))

    def data(self, f: PayloadFile) -> bytes:
        tag = "2" if f.i in self.changed else "1"
        rng = random.Random(f"{self.seed}:{GENERATOR}:{self.n}:{f.i}:{tag}")
        if f.binary:
            return rng.randbytes(f.size)
        head = f"/* {f.rel} rev {tag} {rng.getrandbits(64):016x} */\n".encode()
        start = rng.randrange(len(self.corpus) - 8_192)
        body = self.corpus[start:start + f.size - len(head)]
        while len(head) + len(body) < f.size:  # larger than the corpus window
            body += self.corpus[: f.size - len(head) - len(body)]
        return head + body


def _panel_rel(panel: str, f: PayloadFile) -> str:
    if panel == "plesk":
        top = {"web": "htdocs/", "code": "plib/library/", "asset": "htdocs/assets/"}[f.role]
    else:
        top = {"web": f"skins/common/{ISP_PLUGIN}/", "code": f"addon/{ISP_PLUGIN}/",
               "asset": f"skins/common/{ISP_PLUGIN}/assets/"}[f.role]
    return top + f.rel


def base_tree(panel: str, variant: str) -> dict[str, tuple[bytes, int]]:
    """The sample extension or plugin the payload is added to (metadata, hooks)."""
    version = _VERSIONS[variant]
    if panel == "plesk":
        post = "exit(1);" if variant == "v2fail" else "exit(0);"
        return plesk_files(PLESK_EXT, version, "1", post_install=post)
    post = "exit 1" if variant == "v2fail" else "exit 0"
    return ispmanager_files(ISP_PLUGIN, version, post_install=post)


def base_digest(panel: str, variant: str) -> str:
    """Changes when ``mgr_agent.sandbox.samples`` does: part of the cache key."""
    digest = hashlib.sha256()
    for name, (data, mode) in sorted(base_tree(panel, variant).items()):
        digest.update(f"{name}\0{mode:o}\0".encode() + hashlib.sha256(data).digest())
    return digest.hexdigest()


def entries(panel: str, n: int, variant: str, seed: int = SEED) -> Iterator[tuple[str, bytes, int]]:
    """(name, bytes, mode) of every entry of the package, sorted by name."""
    base = base_tree(panel, variant)
    files = plan(n, seed)
    content = Content(files, variant, seed)
    by_name: dict[str, PayloadFile | tuple[bytes, int]] = dict(base)
    for f in files:
        by_name[_panel_rel(panel, f)] = f
    for name in sorted(by_name):
        item = by_name[name]
        if isinstance(item, PayloadFile):
            yield name, content.data(item), 0o644
        else:
            yield name, item[0], item[1]


def write_zip(panel: str, n: int, variant: str, dest: Path, seed: int = SEED) -> Path:
    """The package as a zip, entry for entry like ``mgr_agent.sandbox.samples.write_zip`` writes it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries(panel, n, variant, seed):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(dest)
    return dest


def installed_paths(zip_path: Path) -> dict[str, tuple[str, int]]:
    """Root-relative target -> (zip entry, mode) of every file mgr-agent installs from the zip."""
    layout = Layout.at("/nonexistent-bench-root")
    pkg = load(zip_path, all_panels(layout, Config()))
    try:
        return {target: (spec.entry, spec.mode) for target, spec in pkg.files.items()}
    finally:
        pkg.close()


DEB_GENERATION = 2  # bump when the .deb's make-up changes (2: the hooks as maintainer scripts)
DEB_SCRIPTS = {"pre-install": "preinst", "post-install": "postinst", "pre-uninstall": "prerm"}


def maintainer_scripts(panel: str, hooks: dict[str, bytes]) -> dict[str, bytes]:
    """The package's hooks (entry name -> bytes) as dpkg maintainer scripts: Plesk's
    ``plib/scripts/HOOK.php`` run by php (a ``#!`` line before ``<?php`` is allowed in
    the CLI), ispmanager's ``scripts/HOOK`` as they are (shell, with their own ``#!``)."""
    out: dict[str, bytes] = {}
    for hook, script in DEB_SCRIPTS.items():
        if panel == "plesk":
            data = hooks.get(f"plib/scripts/{hook}.php")
            if data is not None:
                out[script] = b"#!/usr/bin/php -n\n" + data
        else:
            data = hooks.get(f"scripts/{hook}")
            if data is not None:
                out[script] = data
    return out


def deb_name(panel: str) -> str:
    return PLESK_EXT if panel == "plesk" else ISP_PLUGIN


def write_deb(zip_path: Path, panel: str, variant: str, dest: Path) -> Path:
    """The same files as ``zip_path`` installs, as a .deb (gzip, like the zip's deflate)."""
    stage = dest.with_name(dest.name + ".tree")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "DEBIAN").mkdir(parents=True)
    targets = installed_paths(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        for target, (entry, mode) in targets.items():
            path = stage / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zf.read(entry))
            path.chmod(mode)
    with zipfile.ZipFile(zip_path) as zf:
        for script, data in maintainer_scripts(panel, {n: zf.read(n) for n in zf.namelist()
                                                       if "/scripts/" in f"/{n}"}).items():
            (stage / "DEBIAN" / script).write_bytes(data)
            (stage / "DEBIAN" / script).chmod(0o755)
    version = _VERSIONS[variant] + "-1"
    (stage / "DEBIAN/control").write_text(
        f"Package: {deb_name(panel)}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: mgr-agent bench <bench@example.invalid>\n"
        f"Description: mgr-agent benchmark payload ({panel}, {variant})\n")
    tmp = dest.with_name(dest.name + ".part")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(stage), str(tmp)],
                   check=True, stdout=subprocess.DEVNULL)
    tmp.replace(dest)
    shutil.rmtree(stage)
    return dest


class Payloads:
    """Built packages, cached under ``cache`` and rebuilt when the generator changes."""

    def __init__(self, cache: Path, seed: int = SEED) -> None:
        self.cache = cache
        self.seed = seed

    def _stamp_ok(self, path: Path, key: dict[str, object]) -> bool:
        stamp = path.with_name(path.name + ".json")
        try:
            return path.is_file() and json.loads(stamp.read_text()) == key
        except (OSError, ValueError):
            return False

    def _stamp(self, path: Path, key: dict[str, object]) -> None:
        path.with_name(path.name + ".json").write_text(json.dumps(key))

    def zip(self, panel: str, n: int, variant: str) -> Path:
        path = self.cache / f"{panel}-{n}-{variant}.zip"
        key = {"generator": GENERATOR, "seed": self.seed, "kind": "zip",
               "base": base_digest(panel, variant)}
        if not self._stamp_ok(path, key):
            write_zip(panel, n, variant, path, self.seed)
            self._stamp(path, key)
        return path

    def deb(self, panel: str, n: int, variant: str) -> Path:
        path = self.cache / f"{panel}-{n}-{variant}.deb"
        key = {"generator": GENERATOR, "seed": self.seed, "kind": "deb", "scripts": DEB_GENERATION,
               "base": base_digest(panel, variant)}
        if not self._stamp_ok(path, key):
            write_deb(self.zip(panel, n, variant), panel, variant, path)
            self._stamp(path, key)
        return path


def describe(zip_path: Path) -> dict[str, int]:
    """Files and bytes (uncompressed) of a built zip."""
    with zipfile.ZipFile(zip_path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        return {"files": len(infos), "bytes": sum(i.file_size for i in infos),
                "zip_bytes": os.path.getsize(zip_path)}


def tiny_plugins(count: int, dest: Path) -> list[Path]:
    """``count`` small ispmanager plugins without hooks (for the ``list`` startup row)."""
    from mgr_agent.sandbox.samples import write_zip as samples_write_zip  # noqa: PLC0415

    out: list[Path] = []
    for k in range(count):
        name = f"tiny{k:03d}"
        tree = {p: v for p, v in ispmanager_files(name, "1.0").items() if not p.startswith("scripts/")}
        out.append(samples_write_zip(tree, dest / f"{name}.zip"))
    return out
