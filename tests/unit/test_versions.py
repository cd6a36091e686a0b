from __future__ import annotations

import pytest

from mgr_agent.versions import compare, is_hash_version


@pytest.mark.parametrize(("a", "b", "want"), [
    ("1.0", "1.0", 0), ("1.0", "1.1", -1), ("1.10", "1.9", 1), ("1.0rc1", "1.0", -1),
    ("1.0", "1.0.1", -1), ("2.0", "1.0-5", 1), ("1.0-2", "1.0-10", -1), ("1.0~beta", "1.0", -1),
    ("18.0.60", "18.0", 1), ("17.8", "18.0", -1), ("1.0a", "1.0b", -1),
])
def test_compare(a: str, b: str, want: int) -> None:
    assert compare(a, b) == want
    assert compare(b, a) == -want


def test_hash_versions_carry_no_order() -> None:
    assert is_hash_version("0+abcdef012345") and not is_hash_version("0.1")
