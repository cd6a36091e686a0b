"""The engine stays split along its seams (issue 10): no engine module over ~400 lines,
no class in them over ~250, and the transaction runner takes one Job, not a row of
parameters."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import mgr_agent
from mgr_agent import steps

PACKAGE = Path(mgr_agent.__file__).parent
ENGINE_MODULES = ["engine", "context", "access", "steps", "recovery", "store", "queries", "state"]


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_modules_and_classes_stay_small(module: str) -> None:
    source = (PACKAGE / f"{module}.py").read_text()
    assert source.count("\n") <= 400, f"{module}.py has {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            assert length <= 260, f"{module}.{node.name} has {length} lines"


def test_the_runner_takes_one_job() -> None:
    assert list(inspect.signature(steps.run).parameters) == ["ctx", "state", "job"]
