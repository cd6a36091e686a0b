"""What the rules of ``aps_settings.xml`` leave users: allowed versions and the default.

For each script of the repository, an update goes like this (docs/aps.md has examples):

1. The versions allowed before the update that the repository still offers are kept
   as the *current* list (a version the repository dropped cannot be installed).
2. The ``onupdate`` rule (none means ``latest``, quantity 1) selects versions: the
   newest or oldest ``quantity`` of them, or the one ``definite`` version.
3. Without ``force="yes"`` the selection is used only when the current list is empty;
   with it, the selection replaces the list at every update.  A selection that finds
   nothing (a definite version the repository lacks) changes nothing.
4. The ``defver`` rule (none means ``latest``) picks the default among the allowed
   versions whenever the list changed or lost its default (a version the administrator
   forbade); an unchanged list keeps the default it had.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from mgr_agent.aps.settings import Rule, Settings
from mgr_agent.versions import compare

_order = functools.cmp_to_key(compare)


@dataclass(frozen=True)
class Current:
    """What users were allowed before the update (from ``--current``)."""

    allowed: tuple[str, ...] = ()
    default: str | None = None


@dataclass
class Resolution:
    """One script after the update."""

    name: str
    available: list[str]
    allowed: list[str]
    default: str | None
    update_rule: str
    default_rule: str
    applied: bool              # the onupdate selection was used
    changed: bool              # the allowed list differs from the current one
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "available": self.available, "allowed": self.allowed,
                "default": self.default, "update_rule": self.update_rule,
                "default_rule": self.default_rule, "rule_applied": self.applied,
                "changed": self.changed, "notes": self.notes}


def ordered(versions: list[str] | tuple[str, ...]) -> list[str]:
    """Distinct versions, oldest first (see :func:`mgr_agent.versions.compare`)."""
    return sorted(dict.fromkeys(versions), key=_order)


def describe(rule: Rule | None) -> str:
    if rule is None:
        return "none (latest)"
    text = rule.kind
    if rule.kind == "definite":
        text += f" {rule.version}"
    elif rule.section == "updaterules":
        text += f" x{rule.count}"
    return text + (" force" if rule.forced else "")


def select(rule: Rule | None, versions: list[str]) -> list[str]:
    """The versions ``rule`` picks from ``versions`` (oldest first)."""
    if not versions:
        return []
    kind = rule.kind if rule else "latest"
    count = rule.count if rule and rule.section == "updaterules" else 1
    if kind == "definite":
        assert rule is not None
        return [v for v in versions if v == rule.version]
    return versions[-count:] if kind == "latest" else versions[:count]


def resolve_one(name: str, available: list[str], current: Current | None, update: Rule | None,
                default: Rule | None) -> Resolution:
    versions = ordered(available)
    before = [v for v in ordered(current.allowed) if v in versions] if current else []
    notes = []
    if current:
        gone = [v for v in current.allowed if v not in versions]
        if gone:
            notes.append(f"no longer in the repository: {', '.join(gone)}")
    picked = select(update, versions)
    forced = update is not None and update.forced
    if update is not None and update.kind == "definite" and not picked and versions:
        notes.append(f"definite version {update.version} is not in the repository; the rule "
                     "changes nothing")
    applied = bool(picked) and (forced or not before)
    allowed = picked if applied else before
    changed = current is None or allowed != ordered(current.allowed)
    kept = current.default if current else None
    if kept is not None and kept in allowed and not changed:
        chosen: str | None = kept
    else:
        chosen = _default(default, allowed, notes)
        if kept is not None and kept not in allowed:
            notes.append(f"default {kept} is no longer allowed")
    return Resolution(name, versions, allowed, chosen, describe(update), describe(default),
                      applied, changed, notes)


def _default(rule: Rule | None, allowed: list[str], notes: list[str]) -> str | None:
    if not allowed:
        return None
    if rule is not None and rule.kind == "definite":
        if rule.version in allowed:
            return rule.version
        notes.append(f"default version {rule.version} is not allowed; the latest allowed is the "
                     "default instead")
        return allowed[-1]
    return allowed[0] if rule is not None and rule.kind == "earliest" else allowed[-1]


def resolve(available: dict[str, list[str]], settings: Settings | None,
            current: dict[str, Current] | None = None) -> list[Resolution]:
    """Every script of ``available`` (and of ``current``), by name."""
    s = settings or Settings()
    cur = current or {}
    out = []
    for name in sorted(set(available) | set(cur), key=lambda n: (n.casefold(), n)):
        res = resolve_one(name, available.get(name, []), cur.get(name), s.rule("updaterules", name),
                          s.rule("defverrules", name))
        if name not in available:
            res.notes.insert(0, "not in the repository")
        out.append(res)
    return out


def unmatched_rules(available: dict[str, list[str]], settings: Settings) -> list[str]:
    """Warnings for rules naming no script of the repository (names are case-sensitive)."""
    lower = {n.lower(): n for n in available}
    out = []
    for rule in settings.update + settings.default:
        if rule.name and rule.name not in available:
            near = lower.get(rule.name.lower())
            hint = f" (did you mean {near!r}? names are case-sensitive)" if near else ""
            tag = "onupdate" if rule.section == "updaterules" else "defver"
            out.append(f'<{tag} name="{rule.name}"> names no script of the repository{hint}')
    return out
