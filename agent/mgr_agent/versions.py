"""Version comparison for plugin and APS script versions ("1.2", "1.10-3", "2.0rc1", "7.31-36")."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"(\d+)|([A-Za-z]+)|(~)")
# pre-release words in their usual order; synonyms share a rank; other words come after
_WORD_RANK = {"dev": 0, "snapshot": 0, "alpha": 1, "a": 1, "beta": 2, "b": 2, "pre": 3,
              "preview": 3, "rc": 4, "c": 4}


def _word(word: str) -> str:
    """A word's sort value: its rank digit (synonyms are equal), else 9 and the word."""
    w = word.lower()
    rank = _WORD_RANK.get(w)
    return f"{rank}" if rank is not None else f"9{w}"


def _key(version: str) -> list[tuple[int, int | str]]:
    """Sort key: numbers compare as numbers, words as words, "~" sorts before anything."""
    key: list[tuple[int, int | str]] = []
    for number, word, tilde in _TOKEN.findall(version):
        if tilde:
            key.append((0, 0))
        elif number:
            key.append((3, int(number)))
        else:
            key.append((2, _word(word)))
    key.append((1, 0))  # end marker: sorts after "~", before any further number
    return key


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to, or newer than ``b``.

    Pre-release words sort before the release: ``1.0rc1 < 1.0 < 1.0.1``, and among
    themselves ``dev < alpha (a) < beta (b) < pre (preview) < rc (c) <`` other words
    (alphabetical).  A release after a dash is just more numbers: ``7.31-5 < 7.31-36``.
    """
    ka, kb = _key(a), _key(b)
    for (ta, va), (tb, vb) in zip(ka, kb, strict=False):
        if (ta, va) == (tb, vb):
            continue
        if ta == 2 and tb == 1:  # a has a word where b ends: pre-release
            return -1
        if ta == 1 and tb == 2:
            return 1
        if ta != tb:
            return -1 if ta < tb else 1
        return -1 if va < vb else 1  # type: ignore[operator]
    return (len(ka) > len(kb)) - (len(ka) < len(kb))


def is_hash_version(version: str) -> bool:
    """Versions derived from the content hash carry no order."""
    return version.startswith("0+")
