"""``mgr-agent aps …``: the sub-commands' arguments, the call of each operation, and text
rendering; its entry in the command table is ``commands/aps.py``."""

from __future__ import annotations

import argparse
import difflib
from typing import TYPE_CHECKING, cast

from mgr_agent.errors import UsageError

if TYPE_CHECKING:
    from mgr_agent.aps.settings import Section
    from mgr_agent.commands.aps import ApsData, Repository
    from mgr_agent.commands.spec import Args, Context, Paint, Parents
    from mgr_agent.result import Result

SECTIONS = {"update": "updaterules", "default": "defverrules"}


def add_arguments(aps: argparse.ArgumentParser, parents: Parents) -> None:
    """The sub-commands of ``aps`` (its own parser is made from the command table)."""
    from pathlib import Path  # noqa: PLC0415

    common, runtime = parents.common, parents.runtime
    verbs = aps.add_subparsers(dest="aps_command", required=True, metavar="SUBCOMMAND")

    def verb(name: str, help_: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(name, parents=[common, *parents], help=help_,
                                                           description=help_)
        return parser

    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument("--dry-run", action="store_true", help="report the change and its diff, write nothing")
    insecure = argparse.ArgumentParser(add_help=False)
    insecure.add_argument("--insecure", action="store_true",
                          help="allow fetching the repository description over plain http")

    p = verb("repo", "ApsExtRepository lines of etc/ispmgr.conf")
    repo = p.add_subparsers(dest="repo_command", required=True, metavar="ACTION")
    repo.add_parser("list", parents=[common], help="list the connected repositories")
    for name, help_ in (("add", "connect a repository (idempotent); restarts the core"),
                        ("remove", "disconnect a repository (idempotent); restarts the core")):
        extra = [insecure] if name == "add" else []
        r = repo.add_parser(name, parents=[common, runtime, dry, *extra], help=help_, description=help_)
        r.add_argument("url", help="URL of the repository description (XML)")
        if name == "add":
            r.add_argument("--check", action="store_true",
                           help="fetch the description first and refuse it unless it is well-formed XML")

    p = verb("check", "validate etc/templates/aps_settings.xml and its images")
    p.add_argument("--settings", type=Path, metavar="FILE", help="check FILE instead (images still "
                   "from the root's skins/common/img)")

    p = verb("resolve", "show the versions the rules leave users and the default of each script",
             insecure)
    p.add_argument("--versions", type=Path, metavar="FILE",
                   help='available versions: a repository description (XML) or JSON {"NAME": [...]}')
    p.add_argument("--repo", metavar="URL", help="fetch the available versions from a repository")
    p.add_argument("--current", type=Path, metavar="FILE",
                   help='what users are allowed now: JSON {"NAME": [...]} or '
                        '{"NAME": {"allowed": [...], "default": "V"}}')
    p.add_argument("--settings", type=Path, metavar="FILE", help="rules from FILE instead")

    p = verb("set-rule", "set the update or default-version rule of a script", dry)
    p.add_argument("section", choices=sorted(SECTIONS), help="update (onupdate) or default (defver)")
    p.add_argument("name", help="the script's name as the repository spells it")
    p.add_argument("--type", choices=["latest", "earliest", "definite"],
                   help="default: latest, or definite when --version is given")
    p.add_argument("--quantity", type=int, metavar="N", help="how many versions (update rules; default 1)")
    p.add_argument("--force", action="store_true", help='force="yes": apply at every update (update rules)')
    p.add_argument("--version", dest="rule_version", metavar="VERSION", help="the version of type definite")

    p = verb("unset-rule", "remove the update or default-version rule of a script", dry)
    p.add_argument("section", choices=sorted(SECTIONS))
    p.add_argument("name")

    p = verb("set-image", "map a script (or the default) to a 32x32 PNG in skins/common/img/", dry)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--script", metavar="NAME", help="the script's name")
    who.add_argument("--default", action="store_true", help="set defimg, the image of other scripts")
    p.add_argument("file", help="file name in skins/common/img/ (the file must be there)")

    p = verb("unset-image", "remove a script's image mapping", dry)
    p.add_argument("name")


def dispatch(ctx: Context, args: Args) -> Result:
    from mgr_agent.aps import ops  # noqa: PLC0415 - keeps the CLI's start fast

    engine = ctx.engine(args)
    c = args.text("aps_command")
    dry = args.flag("dry_run")
    if c == "repo":
        if args.text("repo_command") == "list":
            return ops.repo_list(engine)
        return ops.repo_change(engine, args.need("url"), add=args.text("repo_command") == "add",
                               verify=args.flag("check"), insecure=args.flag("insecure"), dry_run=dry)
    if c == "check":
        return ops.check_settings(engine, args.path("settings"))
    if c == "resolve":
        return ops.resolve_rules(engine, versions_file=args.path("versions"), repo_url=args.text("repo"),
                                 current_file=args.path("current"), insecure=args.flag("insecure"),
                                 settings_file=args.path("settings"))
    if c == "set-rule":
        rule = ops.make_rule(cast("Section", SECTIONS[args.need("section")]), args.need("name"),
                             args.text("type"), args.count("quantity"),
                             args.flag("force"), args.text("rule_version"))
        return ops.set_rule(engine, rule, dry_run=dry)
    if c == "unset-rule":
        return ops.unset(engine, SECTIONS[args.need("section")], args.need("name"), dry_run=dry)
    if c == "set-image":
        script = None if args.flag("default") else args.text("script")
        return ops.set_image(engine, script, args.need("file"), dry_run=dry)
    if c == "unset-image":
        return ops.unset(engine, "imagemapping", args.need("name"), dry_run=dry)
    raise UsageError(f"aps {c}: unknown subcommand")


def render(result: Result, paint: Paint) -> str:
    """Text for people; ``--json`` prints ``result.to_json()`` instead."""
    from mgr_agent.commands import render as shared  # noqa: PLC0415
    from mgr_agent.findings import Finding  # noqa: PLC0415

    if not result.action.startswith("aps-"):
        return shared.change(result, paint)
    d = cast("ApsData", result.data or {})
    lines: list[str] = []
    if result.action == "aps-repo-list":
        rows = cast("list[Repository]", d["repositories"])
        lines += [r["url"] for r in rows] or ["no ApsExtRepository lines in etc/ispmgr.conf"]
    elif result.action == "aps-check":
        lines += [Finding(**f).text() for f in d["findings"]]
        if result.error is None:
            lines.append(paint("ok", "32") + f": {d['file']}"
                         + (f" ({len(d['findings'])} warning(s))" if d["findings"] else ""))
    elif result.action == "aps-resolve":
        for s in d["scripts"]:
            allowed = ", ".join(s["allowed"]) or "none"
            lines.append(f"{s['name']}: allowed {allowed}; default {s['default'] or 'none'}")
            lines.append(f"  rules: update {s['update_rule']}, default {s['default_rule']}; "
                         f"available {len(s['available'])}"
                         + ("" if s["changed"] else "; unchanged"))
            lines += [f"  note: {n}" for n in s["notes"]]
        if not d["scripts"]:
            lines.append("no scripts in the repository")
    else:
        lines += result.notes
        diff = d.get("diff")
        if diff and any(n.startswith("would ") for n in result.notes):
            lines += [ln.rstrip("\n") for ln in difflib.unified_diff(
                diff["before"].splitlines(True), diff["after"].splitlines(True),
                f"a/{diff['path']}", f"b/{diff['path']}")]
    for warning in result.warnings:
        lines.append(paint("warning: ", "33") + warning)
    if result.error is not None:
        lines.append(paint("error: ", "31;1") + result.error.message)
        if result.error.hint:
            lines.append(f"  hint: {result.error.hint}")
    return "\n".join(lines)
