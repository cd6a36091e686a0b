"""The command table is the one declaration of every command: the CLI's parser, the daemon
API's ops and arguments, and docs/usage.md's command list must all agree with it, and the
check below must notice a command added in one place only."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mgr_agent import api, cli, commands
from mgr_agent.commands import parser as parser_mod
from mgr_agent.commands.spec import BOOL, STR, Arg, Args, Command, Context
from mgr_agent.layout import Layout
from mgr_agent.result import Result

USAGE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions}


def disagreements(table: dict[str, Command], parser: argparse.ArgumentParser,
                  api_args: dict[str, dict[str, tuple[type, ...]]], mutating: tuple[str, ...],
                  docs: str) -> list[str]:
    """Every way the parser, the API and the docs differ from the table."""
    found: list[str] = []
    in_cli = {c.name for c in table.values() if c.route != "api-only"}
    in_api = {c.name for c in table.values() if c.in_api}
    subs = _subparsers(parser)
    found += [f"{n}: in the parser, not in the table" for n in sorted(set(subs) - in_cli)]
    found += [f"{n}: in the table, not in the parser" for n in sorted(in_cli - set(subs))]
    found += [f"{n}: in the API, not in the table" for n in sorted(set(api_args) - in_api)]
    found += [f"{n}: in the table, not in the API" for n in sorted(in_api - set(api_args))]
    for command in table.values():
        name = command.name
        if name in subs:
            for arg in command.args:
                dest = f"no_{arg.name}" if arg.invert else arg.name
                if arg.cli and dest not in _dests(subs[name]):
                    found.append(f"{name}: argument {dest!r} missing from the parser")
        if name in api_args and api_args[name] != command.api_args():
            found.append(f"{name}: API arguments {sorted(api_args[name])} != table "
                         f"{sorted(command.api_args())}")
        if name in api_args and (name in mutating) != (command.route == "daemon"):
            found.append(f"{name}: the API and the table disagree whether it is a change")
        if name in in_cli and f"### {name}" not in docs and f"`{name}" not in docs:
            found.append(f"{name}: not documented in docs/usage.md")
    return found


def test_parser_api_and_docs_agree_with_the_table() -> None:
    assert disagreements(commands.COMMANDS, cli._parser(), api.ARGS, api.MUTATING,
                         USAGE.read_text(encoding="utf-8")) == []


def test_the_api_is_what_it_was() -> None:
    """Backward compatible: the same ops with the same argument names and types."""
    common = {"wait": (int, float), "restart": (bool,), "health_window": (int, float)}
    before: dict[str, dict[str, tuple[type, ...]]] = {
        "install": {"path": (str,), "url": (str,), "sha256": (str,), "panel": (str,),
                    "dry_run": (bool,), "allow_downgrade": (bool,), "reinstall": (bool,),
                    "strict": (bool,), **common},
        "uninstall": {"name": (str,), "panel": (str,), "purge": (bool,), "dry_run": (bool,),
                      "force": (bool,), **common},
        "rollback": {"name": (str,), "panel": (str,), **common},
        "recover": {"wait": (int, float)},
        "restart-core": {"wait": (int, float)},
        "debug": {"module": (str,), "level": (int,), "off": (bool,), **common},
        "list": {}, "info": {"name": (str,), "panel": (str,)},
        "verify": {"name": (str,), "panel": (str,)},
        "history": {"name": (str,), "limit": (int,)},
        "check": {"path": (str,), "panel": (str,), "sha256": (str,), "strict": (bool,)},
        "logs": {"n": (int,), "follow": (bool,), "plugin": (str,), "level": (str,), "since": (str,)},
        "ping": {},
    }
    assert before == api.ARGS
    assert set(api.MUTATING) == {"install", "uninstall", "rollback", "recover", "restart-core", "debug"}
    assert api.REQUIRED == {"uninstall": ("name",), "rollback": ("name",), "info": ("name",),
                            "check": ("path",)}


def _extra(args: tuple[Arg, ...] = (Arg("name", "which", api=STR),)) -> Command:
    def run(_ctx: Context, args: Args) -> Result:
        return Result(action="frobbed", name=args.text("name"))

    return Command("frob", "frobnicate a plugin", args=args, run=run, route="daemon-unless-root")


def test_a_command_added_in_one_place_only_is_noticed() -> None:
    docs = USAGE.read_text(encoding="utf-8")
    table = dict(commands.COMMANDS)
    parser = cli._parser()
    # in the table only: not in the parser, not in the API, not documented
    wider = {**table, "frob": _extra()}
    problems = disagreements(wider, parser, api.ARGS, api.MUTATING, docs)
    assert "frob: in the table, not in the parser" in problems
    assert "frob: in the table, not in the API" in problems
    assert "frob: not documented in docs/usage.md" in problems
    # derived from the wider table, only the docs lag behind
    derived_parser = parser_mod.build(commands.cli_commands(wider))
    derived_api = {c.name: c.api_args() for c in commands.api_commands(wider)}
    assert disagreements(wider, derived_parser, derived_api, api.MUTATING, docs) == [
        "frob: not documented in docs/usage.md"]
    assert disagreements(wider, derived_parser, derived_api, api.MUTATING,
                         docs + "\n### frob NAME\n") == []
    # in the API only, or in the parser only
    assert disagreements(table, parser, {**api.ARGS, "frob": {"name": (str,)}}, api.MUTATING, docs) == [
        "frob: in the API, not in the table"]
    assert disagreements(table, derived_parser, api.ARGS, api.MUTATING, docs) == [
        "frob: in the parser, not in the table"]
    # an argument the API knows but the table does not
    wrong: dict[str, dict[str, tuple[type, ...]]] = {**api.ARGS, "list": {"limit": (int,)}}
    assert disagreements(table, parser, wrong, api.MUTATING, docs) == [
        "list: API arguments ['limit'] != table []"]


def test_an_added_command_needs_nothing_but_its_entry() -> None:
    """A new entry is parsed, sent to the daemon, checked and run by the API, and rendered,
    with no other edit."""
    wider = {**commands.COMMANDS, "frob": _extra(args=(
        Arg("name", "which", api=STR, required=True),
        Arg("loud", "shout", ("--loud",), api=BOOL, action="store_true")))}
    frob = wider["frob"]
    ns = parser_mod.build(commands.cli_commands(wider)).parse_args(["frob", "demo", "--loud"])
    values, sent = commands.values_of(frob, ns)
    assert sent is None
    assert commands.request_of(frob, values) == {"name": "demo", "loud": True}
    assert {c.name: c.api_args() for c in commands.api_commands(wider)}["frob"] == {
        "name": (str,), "loud": (bool,)}
    result = commands.execute(frob, Context(Layout.at("/")), commands.args_of_request(frob, {"name": "demo"}))
    assert (result.action, result.name) == ("frobbed", "demo")
    assert commands.render_text(frob, result, lambda text, _sgr: text) == "frobbed demo (None)"


@pytest.mark.parametrize(("op", "given", "expected"), [
    ("history", {}, {"name": None, "limit": 50}),
    ("install", {"path": "/x.zip"}, {"restart": True, "dry_run": False, "path": "/x.zip"}),
    ("install", {"path": "/x.zip", "restart": False}, {"restart": False}),
    ("uninstall", {"name": "demo", "purge": True}, {"purge": True, "force": False}),
])
def test_the_daemon_fills_the_same_defaults_as_the_cli(op: str, given: dict[str, object],
                                                       expected: dict[str, object]) -> None:
    args = commands.args_of_request(commands.COMMANDS[op], given)
    assert {k: args.values[k] for k in expected} == expected
    words = {"history": ["history"], "install": ["install", "/x.zip"],
             "uninstall": ["uninstall", "demo"]}[op] + (["--purge"] if given.get("purge") else [])
    words += ["--no-restart"] if given.get("restart") is False else []
    values, _ = commands.values_of(commands.COMMANDS[op], cli._parser().parse_args(words))
    assert {k: values[k] for k in expected} == expected


def test_a_url_goes_to_the_daemon_as_url_and_a_path_as_an_absolute_path(tmp_path: Path) -> None:
    install = commands.COMMANDS["install"]
    url = "https://example.org/p.zip"
    values, sent = commands.values_of(install, cli._parser().parse_args(
        ["install", url, "--sha256", "a" * 64]))
    assert commands.request_of(install, values) == {"url": url, "sha256": "a" * 64} and sent is None
    values, sent = commands.values_of(install, cli._parser().parse_args(["install", "p.zip"]))
    assert commands.request_of(install, values) == {"path": str(Path("p.zip").absolute())}
    assert sent == str(Path("p.zip").absolute())
