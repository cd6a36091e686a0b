"""What one command declaration holds, the values it is called with, and the context it
runs in.  Nothing here imports the engine: a command's module only names what it needs
inside its operation, so the CLI starts without lxml, psutil, requests or sqlite3."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TextIO

from mgr_agent.errors import UsageError

if TYPE_CHECKING:
    import threading

    from mgr_agent.engine import Engine
    from mgr_agent.layout import Layout
    from mgr_agent.result import Result

# the types an argument may have in the daemon API (a bool is never taken for an int)
ApiType = tuple[type, ...]
STR: ApiType = (str,)
BOOL: ApiType = (bool,)
INT: ApiType = (int,)
NUM: ApiType = (int, float)

Paint = Callable[[str, str], str]
"""``paint(text, sgr)``: ``text`` in colour on a terminal, as it is otherwise."""

Route = Literal["daemon", "daemon-unless-root", "local", "api-only"]


# ------------------------------------------------------------------ value checks (exit 2)
def sha256_hex(text: str) -> str:
    """``--sha256``: exactly 64 hexadecimal digits."""
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256: expected 64 hexadecimal digits")
    return text


def positive(text: str) -> int:
    """A count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count (1 or more)")
    return value


def seconds(text: str) -> float:
    """A duration: seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 or more seconds")
    return value


def is_url(text: str) -> bool:
    """An install source to download first (``download.py`` fetches it)."""
    return text.startswith(("https://", "http://"))


# ------------------------------------------------------------------ declarations
class Arg(NamedTuple):
    """One argument: its argparse form and its form in the daemon API.

    ``name`` is both the argparse ``dest`` and the API argument's name.  ``api`` is its
    type in the API (None: the CLI only); ``cli=False`` makes it an API-only argument.
    ``invert``: a ``--no-…`` flag on the command line, the API's boolean is its opposite.
    ``source``: a package location; a URL goes to the API as ``url``, a path as an absolute
    ``path`` (its open file is sent along with the request)."""

    name: str
    help: str = ""
    flags: tuple[str, ...] = ()          # () makes a positional argument
    api: ApiType | None = None
    type: Callable[[str], object] | None = None
    choices: Sequence[str] | None = None
    default: object = None
    metavar: str | None = None
    nargs: Literal["?"] | None = None
    action: Literal["store_true", "append"] | None = None
    required: bool = False               # the API refuses a request without it
    cli: bool = True
    invert: bool = False
    source: bool = False

    @property
    def api_default(self) -> object:
        """The value the operation sees when the request leaves the argument out."""
        if self.invert:
            return True
        if self.action == "store_true":
            return False
        return self.default

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        options: dict[str, Any] = {"help": self.help}   # argparse's keyword arguments
        if self.action == "store_true" or self.invert:
            options["action"] = "store_true"
        elif self.action == "append":
            options.update(action="append", default=[])
        else:
            options["default"] = self.default
        if self.type is not None:
            options["type"] = self.type
        if self.choices is not None:
            options["choices"] = list(self.choices)
        if self.metavar is not None:
            options["metavar"] = self.metavar
        if self.nargs is not None:
            options["nargs"] = self.nargs
        if self.flags:
            dest = f"no_{self.name}" if self.invert else self.name
            if dest != self.flags[-1].lstrip("-").replace("-", "_"):
                options["dest"] = dest
            parser.add_argument(*self.flags, **options)
        else:
            parser.add_argument(self.name, **options)


Operation = Callable[["Context", "Args"], "Result"]
Streamer = Callable[["Context", "Args"], int]
Renderer = Callable[["Result", Paint], str]
Configure = Callable[[argparse.ArgumentParser, "Parents"], None]


class Parents(NamedTuple):
    """The shared option groups, for a command that builds its own sub-commands (``aps``)."""

    common: argparse.ArgumentParser      # --root -v --json --wait --no-daemon
    runtime: argparse.ArgumentParser     # --no-restart --health-window


class Command(NamedTuple):
    """One command: everything the parser, the CLI, the daemon API and the renderer need.

    ``route``: ``daemon`` runs in the daemon when it answers (a change: takes the lock,
    ``--wait``, ``--no-daemon``); ``daemon-unless-root`` reads through the daemon for
    anyone but root (the state is root:mgr-agent 0750); ``local`` runs in the calling
    process; ``api-only`` has no CLI form (``ping``).  ``served``: the daemon API offers
    it (always for ``daemon`` and ``daemon-unless-root``).  Exactly one of ``run`` (a
    typed ``Result``) and ``stream`` (prints as it goes; an exit code) is given.
    ``light``: the operation imports nothing that logs (``logging``) unless it makes the
    engine, so the CLI sets up logging only then (``Context.before_engine``): a start
    without the ``logging`` package, for the quick reads (``list``, ``history``, ``logs``)."""

    name: str
    help: str
    args: tuple[Arg, ...] = ()
    description: str | None = None       # the command's --help text (default: ``help``)
    run: Operation | None = None
    stream: Streamer | None = None
    render: Renderer | None = None
    route: Route = "local"
    served: bool = False
    mutates: bool = False                # --wait; journald and metrics after an in-process run
    options: Literal["all", "output", "root"] = "output"   # the global options after the command
    json_data: bool = False              # --json carries "data" (null too) on success
    one_of: tuple[str, ...] = ()         # the API needs exactly one of these
    configure: Configure | None = None   # sub-commands of their own (``aps``)
    shape: type | None = None            # the TypedDict of its result's ``data``
    many: bool = False                   # ``data`` is a list of ``shape``
    light: bool = False                  # logs nothing unless through the engine (see below)

    @property
    def in_api(self) -> bool:
        return self.served or self.route in ("daemon", "daemon-unless-root", "api-only")

    def api_args(self) -> dict[str, ApiType]:
        return {a.name: a.api for a in self.args if a.api is not None}

    def required(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args if a.required)


# ------------------------------------------------------------------ values
class Args:
    """The values a command runs with, by API name, read with a type: the same for an
    in-process run (from argparse) and a daemon request (checked by ``api.parse_request``)."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self.values = dict(values)

    def __repr__(self) -> str:
        return f"Args({self.values!r})"

    def get(self, key: str) -> object:
        return self.values.get(key)

    def text(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise UsageError(f"{key}: expected text, got {value!r}")
        return value

    def need(self, key: str) -> str:
        value = self.text(key)
        if not value:
            raise UsageError(f"argument {key!r} is required")
        return value

    def flag(self, key: str) -> bool:
        return bool(self.values.get(key))

    def count(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key}: expected a whole number, got {value!r}")
        return value

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{key}: expected a number, got {value!r}")
        return float(value)

    def path(self, key: str) -> Path | None:
        value = self.text(key)
        return None if value is None else Path(value)

    def texts(self, key: str) -> list[str]:
        value = self.values.get(key) or []
        if not isinstance(value, list):
            raise UsageError(f"{key}: expected a list, got {value!r}")
        return [str(v) for v in value]


def _quiet(_: str) -> None:
    pass


def _nothing() -> None:
    pass


class Record(Protocol):
    """One item a streaming command shows as it comes (a panel log's record): JSON for
    scripts and the daemon's ``record`` events, a line of text for people."""

    def to_json(self) -> Mapping[str, object]: ...

    def text(self, colour: bool = False) -> str: ...


def _nowhere(_: Record) -> None:
    raise AssertionError("a streaming command runs with a Context.show")


class Context:
    """Where a command runs: the root, how progress is reported, the engine's settings.
    The CLI makes one in-process; the daemon one per request.  (A plain class, as are the
    declarations: ``dataclasses`` costs the CLI's start-up a few milliseconds.)"""

    def __init__(self, layout: Layout, *, progress: Callable[[str], None] = _quiet,
                 lock_wait: float | None = None, actor: str = "cli", out: TextIO | None = None,
                 as_json: bool = False, verbose: int = 0, degraded: str = "") -> None:
        self.layout = layout
        self.progress = progress
        self.lock_wait = lock_wait
        self.actor = actor
        self.out: TextIO = sys.stdout if out is None else out
        self.as_json = as_json
        self.verbose = verbose
        self.stop: threading.Event | None = None   # set when a streaming client went away
        self.show: Callable[[Record], None] = _nowhere   # where a streaming command's records go
        self.degraded = degraded                    # the daemon's own state, for ``ping``
        self._engine: Engine | None = None
        self.before_engine: Callable[[], None] = _nothing   # the CLI's late set-up (``light``)

    def engine(self, args: Args | None = None) -> Engine:
        """The engine for this run (made once; imported only by commands that need it)."""
        if self._engine is None:
            self.before_engine()
            from mgr_agent.engine import Engine  # noqa: PLC0415 - keeps the CLI's start light

            restart = True if args is None else args.values.get("restart") is not False
            window = None if args is None else args.number("health_window")
            self._engine = Engine(self.layout, progress=self.progress, lock_wait=self.lock_wait,
                                  restart=restart, health_window=window, actor=self.actor)
        return self._engine
