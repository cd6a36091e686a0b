"""Rule resolution: each rule type x quantity x force x current state, and version order."""

from __future__ import annotations

import pytest

from mgr_agent.aps.resolve import Current, ordered, resolve, resolve_one, unmatched_rules
from mgr_agent.aps.settings import Rule, Settings, read

REPO = ["7.30-1", "7.31-36", "7.31-5", "7.4-2", "8.0.0-rc1", "7.40-1"]
# oldest first: 7.4-2 < 7.30-1 < 7.31-5 < 7.31-36 < 7.40-1 < 8.0.0-rc1


def test_real_cms_versions_order() -> None:
    assert ordered(REPO) == ["7.4-2", "7.30-1", "7.31-5", "7.31-36", "7.40-1", "8.0.0-rc1"]
    assert ordered(["6.0", "6.0-beta2", "6.0-alpha1", "6.0-rc1", "5.9.9", "6.0-dev", "6.0.1"]) == [
        "5.9.9", "6.0-dev", "6.0-alpha1", "6.0-beta2", "6.0-rc1", "6.0", "6.0.1"]
    assert ordered(["10.1.0-rc1", "10.1.0", "9.5.3", "10.0.12", "4.9.1", "4.9"]) == [
        "4.9", "4.9.1", "9.5.3", "10.0.12", "10.1.0-rc1", "10.1.0"]
    assert ordered(["4.9.1-2", "4.9.1-10", "4.9.1"]) == ["4.9.1", "4.9.1-2", "4.9.1-10"]


def up(kind: str | None, quantity: str | None = None, force: bool = False,
       version: str | None = None) -> Rule:
    return Rule("updaterules", "Drupal", kind, quantity, "yes" if force else None, version)


NEWEST, OLDEST = "8.0.0-rc1", "7.4-2"

# (update rule, current allowed, expected allowed, rule applied)
TABLE = [
    # no rule at all: latest, 1, not forced
    (None, None, [NEWEST], True),
    (None, ["7.31-5"], ["7.31-5"], False),
    (None, ["7.0-gone"], [NEWEST], True),
    # latest / earliest / definite x quantity, no force, nothing allowed yet
    (up("latest"), None, [NEWEST], True),
    (up(None, "2"), None, ["7.40-1", NEWEST], True),
    (up("latest", "3"), [], ["7.31-36", "7.40-1", NEWEST], True),
    (up("earliest"), None, [OLDEST], True),
    (up("earliest", "2"), None, [OLDEST, "7.30-1"], True),
    (up("latest", "99"), None, ordered(REPO), True),
    (up("definite", version="7.31-36"), None, ["7.31-36"], True),
    # no force, versions still allowed: the rule waits
    (up("latest", "2"), ["7.30-1"], ["7.30-1"], False),
    (up("earliest"), ["7.31-36", "7.40-1"], ["7.31-36", "7.40-1"], False),
    (up("definite", version="7.31-36"), ["7.30-1"], ["7.30-1"], False),
    # no force, every allowed version left the repository: the rule applies
    (up("latest", "2"), ["6.0-1", "6.1-1"], ["7.40-1", NEWEST], True),
    (up("earliest"), ["6.0-1"], [OLDEST], True),
    # force: the selection replaces the list at every update
    (up("latest", force=True), ["7.30-1", "7.31-5"], [NEWEST], True),
    (up("latest", "2", force=True), ["7.40-1"], ["7.40-1", NEWEST], True),
    (up("earliest", "2", force=True), [NEWEST], [OLDEST, "7.30-1"], True),
    (up("definite", force=True, version="7.31-5"), [NEWEST], ["7.31-5"], True),
    (up(None, force=True), None, [NEWEST], True),
    # a definite version the repository lacks changes nothing, forced or not
    (up("definite", force=True, version="9.9-9"), ["7.30-1"], ["7.30-1"], False),
    (up("definite", version="9.9-9"), None, [], False),
]


@pytest.mark.parametrize(("rule", "current", "allowed", "applied"), TABLE)
def test_update_rules(rule: Rule | None, current: list[str] | None, allowed: list[str],
                      applied: bool) -> None:
    cur = None if current is None else Current(tuple(current))
    res = resolve_one("Drupal", REPO, cur, rule, None)
    assert res.allowed == allowed
    assert res.applied is applied
    assert res.default == (allowed[-1] if allowed else None)


def dv(kind: str | None, version: str | None = None) -> Rule:
    return Rule("defverrules", "Drupal", kind, version=version)


# (defver rule, allowed (unchanged by the update), current default, expected default)
DEFAULTS = [
    (None, ["7.30-1", "7.31-5"], None, "7.31-5"),
    (dv("latest"), ["7.30-1", "7.31-5"], None, "7.31-5"),
    (dv("earliest"), ["7.30-1", "7.31-5"], None, "7.30-1"),
    (dv("definite", "7.30-1"), ["7.30-1", "7.31-5"], None, "7.30-1"),
    (dv("definite", "1.0-1"), ["7.30-1", "7.31-5"], None, "7.31-5"),
    # the administrator's choice stays while the list does not change
    (dv("latest"), ["7.30-1", "7.31-5"], "7.30-1", "7.30-1"),
    # the administrator forbade the default (it is no longer allowed): the rule picks again
    (dv("latest"), ["7.30-1", "7.31-5"], "7.40-1", "7.31-5"),
    (dv("earliest"), ["7.30-1", "7.31-5"], "7.40-1", "7.30-1"),
    (dv("definite", "7.31-5"), ["7.30-1", "7.31-5"], "7.40-1", "7.31-5"),
]


@pytest.mark.parametrize(("rule", "allowed", "default", "want"), DEFAULTS)
def test_default_rules(rule: Rule | None, allowed: list[str], default: str | None, want: str) -> None:
    # no force and versions allowed: the allowed list is what the current state says
    res = resolve_one("Drupal", REPO, Current(tuple(allowed), default), None, rule)
    assert res.allowed == allowed
    assert res.changed is False
    assert res.default == want


def test_forbidding_the_default_picks_the_next_by_the_same_rule() -> None:
    """The admin allowed three versions with the newest as default, then forbade it."""
    before = Current(("7.30-1", "7.31-5", "7.31-36"), "7.31-36")
    res = resolve_one("Drupal", REPO, before, None, dv("latest"))
    assert res.default == "7.31-36"
    after = Current(("7.30-1", "7.31-5"), "7.31-36")
    res = resolve_one("Drupal", REPO, after, None, dv("latest"))
    assert res.default == "7.31-5" and "default 7.31-36 is no longer allowed" in res.notes


def test_a_forced_update_moves_the_default_with_the_list() -> None:
    before = Current(("7.30-1", "7.31-5"), "7.30-1")
    res = resolve_one("Drupal", REPO, before, up("latest", "2", force=True), dv("earliest"))
    assert res.allowed == ["7.40-1", NEWEST] and res.default == "7.40-1"


def test_whole_document_scripts_and_warnings() -> None:
    s = read(b"""<doc><updaterules>
        <onupdate name="WordPress" quantity="2"/>
        <onupdate name="phpbb" force="yes"/>
      </updaterules><defverrules><defver name="WordPress" type="earliest"/></defverrules></doc>""", "t")
    available = {"WordPress": ["6.4.3-1", "6.5-1", "6.5.2-1"], "phpBB": ["3.3.10-1", "3.3.11-1"]}
    out = {r.name: r for r in resolve(available, s, {"Joomla": Current(("4.0-1",))})}
    assert out["WordPress"].allowed == ["6.5-1", "6.5.2-1"] and out["WordPress"].default == "6.5-1"
    assert out["phpBB"].allowed == ["3.3.11-1"]   # "phpbb" is another name: no rule, latest
    assert out["Joomla"].allowed == [] and out["Joomla"].notes[0] == "not in the repository"
    assert unmatched_rules(available, s) == [
        "<onupdate name=\"phpbb\"> names no script of the repository (did you mean 'phpBB'? "
        "names are case-sensitive)"]
    assert [r.name for r in resolve(available, Settings())] == ["phpBB", "WordPress"]
