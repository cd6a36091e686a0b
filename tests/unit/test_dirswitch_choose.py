"""Which directories the planner switches whole (dirswitch.choose), on real directories."""

from __future__ import annotations

from pathlib import Path

from mgr_agent.dirplan import choose
from mgr_agent.layout import Layout
from mgr_agent.plan import Op, Plan

D = "usr/local/psa/admin/htdocs/modules/ext"


def _tree(root: Path, names: list[str]) -> set[str]:
    for name in names:
        path = root / D / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return {f"{D}/{n}" for n in names}


def _plan(changed: list[str], unchanged: list[str], action: str = "replace") -> Plan:
    plan = Plan(name="ext")
    for i, name in enumerate(changed):
        plan.ops.append(Op(i=i, action=action, path=f"{D}/{name}"))  # type: ignore[arg-type]
    plan.unchanged = [f"{D}/{n}" for n in unchanged]
    return plan


def _hows(tmp_path: Path, plan: Plan, known: set[str], diverted: set[str] | None = None) -> list[str]:
    choose(Layout.at(tmp_path), plan, [D, "usr/local/psa/admin/plib/modules/ext"], known,
           diverted or set())
    return [f"{d.path}:{d.how}" for d in plan.dirs]


def test_every_file_changed_is_an_exchange_with_links_for_the_rest(tmp_path: Path) -> None:
    names = [f"js/f{i}.js" for i in range(10)]
    known = _tree(tmp_path, names)
    plan = _plan(names[:8], names[8:])
    assert _hows(tmp_path, plan, known) == [f"{D}:exchange"]
    assert plan.dirs[0].links == ["js/f8.js", "js/f9.js"]


def test_a_small_change_stays_per_file(tmp_path: Path) -> None:
    names = [f"f{i}.php" for i in range(100)]
    known = _tree(tmp_path, names)
    assert _hows(tmp_path, _plan(names[:1], names[1:]), known) == []


def test_a_missing_directory_is_created_and_an_emptied_one_removed(tmp_path: Path) -> None:
    assert _hows(tmp_path, _plan(["a.php", "b/c.php"], [], "add"), set()) == [f"{D}:create"]
    known = _tree(tmp_path, ["a.php", "b/c.php"])
    assert _hows(tmp_path, _plan(["a.php", "b/c.php"], [], "remove"), known) == [f"{D}:remove"]


def test_anything_else_in_the_directory_keeps_the_per_file_switch(tmp_path: Path) -> None:
    names = ["a.php", "b.php"]
    known = _tree(tmp_path, names)
    (tmp_path / D / "runtime.cache").write_text("made at run time")
    assert _hows(tmp_path, _plan(names, []), known) == []
    (tmp_path / D / "runtime.cache").unlink()
    (tmp_path / D / "empty").mkdir()
    assert _hows(tmp_path, _plan(names, []), known) == []
    (tmp_path / D / "empty").rmdir()
    (tmp_path / D / "link").symlink_to("a.php")
    assert _hows(tmp_path, _plan(names, []), known) == []
    (tmp_path / D / "link").unlink()
    assert _hows(tmp_path, _plan(names, []), known) == [f"{D}:exchange"]


def test_a_diverted_panel_file_keeps_the_per_file_switch(tmp_path: Path) -> None:
    known = _tree(tmp_path, ["a.php"])
    assert _hows(tmp_path, _plan(["a.php"], []), known, {f"{D}/a.php"}) == []


def test_nothing_changed_under_a_directory_leaves_it_alone(tmp_path: Path) -> None:
    known = _tree(tmp_path, ["a.php"])
    assert _hows(tmp_path, _plan([], ["a.php"]), known) == []
