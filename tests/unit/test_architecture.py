"""The package's layering, read from the source: panels are reached only through their
interface, and development-only code stays out of the product.

- Outside ``panels/`` (and ``sandbox/``), no module imports a panel's own modules
  (``mgr_agent.panels.<anything but base>``) or compares a value with a panel's name
  (``panel == "plesk"``, ``name in ("ispmanager", ...)``, ``case "plesk":``).
- No module outside ``sandbox/`` imports ``mgr_agent.sandbox``.

Every import counts: at the top, inside functions, under ``TYPE_CHECKING``, relative ones.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import mgr_agent
from mgr_agent.panels import PANEL_CLASSES

PACKAGE = Path(mgr_agent.__file__).parent
PANEL_NAMES = frozenset(cls.name for cls in PANEL_CLASSES)
INTERFACE = frozenset({"base"})  # what of mgr_agent.panels others may import, besides __init__


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, list[str]]]:
    """(line, dotted names) of each import statement, relative ones resolved; ``from A
    import b`` gives ``A`` and ``A.b`` (``b`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield node.lineno, [base, *(f"{base}.{alias.name}" for alias in node.names)]


def panel_modules() -> frozenset[str]:
    """The names directly under mgr_agent/panels/ that are a panel's own (not the interface)."""
    here = PACKAGE / "panels"
    names = {p.stem for p in here.glob("*.py")} | {p.name for p in here.iterdir()
                                                  if (p / "__init__.py").is_file()}
    return frozenset(names - INTERFACE - {"__init__"})


def imports_a_panel(name: str, panels: frozenset[str]) -> bool:
    parts = name.split(".")
    return parts[:2] == ["mgr_agent", "panels"] and len(parts) > 2 and parts[2] in panels


def imports_the_sandbox(name: str) -> bool:
    return name.split(".")[:2] == ["mgr_agent", "sandbox"]


def _names_a_panel(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in PANEL_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_panel(e) for e in node.elts)
    return False


def panel_comparisons(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, source) of each comparison with a panel-name constant: ``==``, ``!=``, ``in``
    (a tuple, list or set holding one), either side; and ``case "plesk":``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
                _names_a_panel(side) for side in (node.left, *node.comparators)):
            yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.MatchValue) and _names_a_panel(node.value):
            yield node.lineno, f"case {ast.unparse(node.value)}"


def violations(path: Path, source: str, panels: frozenset[str]) -> list[str]:
    """What ``path`` (under mgr_agent/) does against the rules, one ``file:line: …`` each."""
    rel = path.relative_to(PACKAGE)
    where = f"agent/mgr_agent/{rel.as_posix()}"
    top = rel.parts[0] if len(rel.parts) > 1 else ""
    tree = ast.parse(source, str(path))
    module = module_name(path)
    out: list[str] = []
    for line, names in imported(tree, module, path.name == "__init__.py"):
        sandbox = [n for n in names if imports_the_sandbox(n)]
        if top != "sandbox" and sandbox:
            out.append(f"{where}:{line}: imports {min(sandbox, key=len)}: development-only code "
                       "(sandbox/) is not part of the product")
        panel = [n for n in names if imports_a_panel(n, panels)]
        if top not in ("panels", "sandbox") and panel:
            out.append(f"{where}:{line}: imports {min(panel, key=len)}: reach a panel through the "
                       "Panel interface (mgr_agent.panels, mgr_agent.panels.base)")
    if top not in ("panels", "sandbox"):
        out += [f"{where}:{line}: compares with a panel's name ({text}): ask the Panel "
                "interface instead" for line, text in panel_comparisons(tree)]
    return sorted(set(out), key=lambda v: (v.split(":")[0], int(v.split(":")[1])))


def all_violations() -> list[str]:
    panels = panel_modules()
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(path, path.read_text(encoding="utf-8"), panels)
    return found


def test_the_package_keeps_its_layers() -> None:
    found = all_violations()
    assert not found, "\n".join(found)


# ---------------------------------------------------------------- the rules themselves

PANELS = frozenset({"ispmanager", "plesk"})


def check(rel: str, source: str) -> list[str]:
    return violations(PACKAGE / rel, source, PANELS)


def test_the_panel_modules_are_found() -> None:
    assert panel_modules() >= PANELS and "base" not in panel_modules()
    assert PANEL_NAMES == PANELS


@pytest.mark.parametrize("source", [
    "from mgr_agent.panels.ispmanager import logs\n",
    "import mgr_agent.panels.plesk.panel\n",
    "from mgr_agent.panels import ispmanager\n",
    "from mgr_agent.panels.ispmanager.panel import log_names as names\n",
    "def f():\n    from mgr_agent.panels.plesk import product_root  # noqa\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mgr_agent.panels import plesk\n",
    "from .panels.ispmanager import callchain\n",
])
def test_a_panel_import_outside_panels_is_found(source: str) -> None:
    found = check("engine.py", source)
    assert len(found) == 1 and found[0].startswith("agent/mgr_agent/engine.py:")
    assert "imports mgr_agent.panels." in found[0]
    line = int(found[0].split(":")[1])
    assert "panels" in source.splitlines()[line - 1]
    assert check("panels/plesk/panel.py", source) == []


def test_a_relative_import_from_a_subpackage_is_resolved() -> None:
    found = check("checks/__init__.py", "from ..panels.ispmanager import layout\n")
    assert found == ["agent/mgr_agent/checks/__init__.py:1: imports mgr_agent.panels.ispmanager: "
                     "reach a panel through the Panel interface (mgr_agent.panels, "
                     "mgr_agent.panels.base)"]
    assert check("aps/ops.py", "from ..panels.base import Panel\nfrom .. import panels\n") == []


@pytest.mark.parametrize("source", [
    "from mgr_agent.panels import Panel, all_panels, serving\n",
    "from mgr_agent.panels.base import LogQuery\n",
    "import mgr_agent.panels\n",
    "PANEL = 'ispmanager'\n",                            # a name is not a comparison
    "choices = ['ispmanager', 'plesk']\n",
    "if panel.name == other.name:\n    pass\n",
    "if kind == 'plesky':\n    pass\n",
])
def test_the_interface_and_plain_names_pass(source: str) -> None:
    assert check("cli.py", source) == []


@pytest.mark.parametrize("source", [
    "if panel == 'plesk':\n    pass\n",
    "ok = 'ispmanager' != pkg.panel\n",
    "ok = kind in ('plesk', 'other')\n",
    "ok = pkg.panel not in {'ispmanager'}\n",
    "match panel:\n    case 'plesk':\n        pass\n",
    "def f(p):\n    return [x for x in p if x.name == 'ispmanager']\n",
])
def test_a_panel_name_comparison_is_found(source: str) -> None:
    found = check("metrics.py", source)
    assert len(found) == 1 and found[0].startswith("agent/mgr_agent/metrics.py:")
    assert "compares with a panel's name" in found[0]
    line = int(found[0].split(":")[1])
    assert "plesk" in source.splitlines()[line - 1] or "ispmanager" in source.splitlines()[line - 1]
    assert check("panels/ispmanager/panel.py", source) == []
    assert check("sandbox/demo.py", source) == []


@pytest.mark.parametrize("rel", ["engine.py", "panels/plesk/panel.py", "checks/safety.py"])
def test_the_sandbox_import_is_found_everywhere_but_in_it(rel: str) -> None:
    for source in ("from mgr_agent.sandbox import samples\n", "import mgr_agent.sandbox.standin\n",
                   "from mgr_agent import sandbox\n"):
        found = check(rel, source)
        assert len(found) == 1 and f"agent/mgr_agent/{rel}:1: imports mgr_agent.sandbox" in found[0]
        assert check("sandbox/demo.py", source) == []
