"""A mutable value class without ``dataclasses`` (whose import the quick read commands
avoid): a dataclass's equality and repr over the fields a subclass names in ``_FIELDS``."""

from __future__ import annotations


class Value:
    """Equal when of the same class with equal fields; unhashable (mutable); repr
    ``Name(field=value, ...)``, as a ``@dataclass`` would give."""

    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Value)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclasses were

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({fields})"
