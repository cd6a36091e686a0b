"""The only place XML is parsed: no entity expansion, no network, no DTDs, bounded size.

:func:`spans` also gives the byte offsets of each element, so that a panel file can be
edited in place without rewriting (and reformatting) the rest of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.parsers import expat

from mgr_agent.errors import InvalidXML

if TYPE_CHECKING:
    from lxml import etree

    Element = etree._Element

MAX_XML_BYTES = 4 * 1024 * 1024


def __getattr__(name: str) -> object:
    """``Element`` (lxml's element type) for code that needs it at run time: lxml is
    imported by the first parse, not by every start of the CLI (issue 13)."""
    if name == "Element":
        from lxml import etree  # noqa: PLC0415

        return etree._Element
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _entity_errors() -> frozenset[int]:
    from lxml import etree  # noqa: PLC0415

    return frozenset({etree.ErrorTypes.ERR_UNDECLARED_ENTITY, etree.ErrorTypes.ERR_ENTITY_LOOP,
                      etree.ErrorTypes.WAR_UNDECLARED_ENTITY})


def _entity_problem(text: str) -> str:
    """libxml2's words for an entity error, said plainly."""
    low = text.lower()
    if "amplification" in low or "huge" in low:
        return "its XML entities expand far beyond the file's size (an entity-expansion bomb)"
    if "loop" in low:
        return "its XML entities refer to themselves in a loop"
    if "not defined" in low or "undeclared" in low:
        return "it uses an XML entity that is not declared"
    return "it declares or uses XML entities"


def _parser() -> etree.XMLParser:
    from lxml import etree  # noqa: PLC0415

    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=False,
    )


def parse(data: bytes, source: str, *, max_bytes: int = MAX_XML_BYTES) -> Element:
    """Parse ``data`` (named ``source`` in errors) and return its root element.

    Refuses anything over ``max_bytes``, any DOCTYPE that declares entities or points
    at an external DTD, any entity reference, and anything that is not well-formed.
    """
    from lxml import etree  # noqa: PLC0415

    if len(data) > max_bytes:
        raise InvalidXML(
            f"{source}: {len(data)} bytes is over the XML size limit of {max_bytes}",
            path=source,
            rule="xml-size",
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        # entity bombs, loops and undeclared entities stop libxml2 before our checks run
        text = str(exc)
        about_entities = "entity" in text.lower() or getattr(exc, "code", None) in _entity_errors()
        if about_entities:
            raise InvalidXML(f"{source}: {_entity_problem(text)}; entities are not allowed in "
                             "packages", path=source, rule="xml-entities", parser=text) from exc
        raise InvalidXML(f"{source}: not well-formed XML: {exc}", path=source,
                         rule="xml-syntax") from exc
    except ValueError as exc:  # e.g. encoding declarations lxml refuses
        raise InvalidXML(f"{source}: cannot be parsed as XML: {exc}", path=source,
                         rule="xml-syntax") from exc
    info: Any = root.getroottree().docinfo
    if info.system_url or info.public_id:
        raise InvalidXML(
            f"{source}: refers to an external DTD ({info.system_url or info.public_id}); "
            "external DTDs are not allowed in packages",
            path=source,
            rule="xml-external-dtd",
        )
    dtd: Any = info.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise InvalidXML(
            f"{source}: declares XML entities in its DOCTYPE; entities are not allowed in packages",
            path=source,
            rule="xml-entities",
        )
    for node in root.iter(etree.Entity):
        raise InvalidXML(
            f"{source}: uses the undeclared entity {node.text!s}; entities are not allowed",
            path=source,
            rule="xml-entities",
        )
    return root


def text_of(element: Element, tag: str) -> str | None:
    """Stripped text of the first direct child ``tag``, or None."""
    child = element.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


@dataclass(frozen=True)
class Span:
    """Where one element sits in the bytes of its document (for byte-exact edits).

    ``start``..``open_end`` is the start tag, ``close_start``..``end`` the end tag (both
    equal ``open_end`` for an empty-element tag ``<x/>``); the content is
    ``open_end``..``close_start``.  ``path`` is the tag names from the root down.
    """

    path: tuple[str, ...]
    attrs: dict[str, str]
    start: int
    open_end: int
    close_start: int
    end: int


def _tag_end(data: bytes, pos: int) -> int:
    """Index just after the ``>`` closing the tag that starts at ``pos`` (quotes respected)."""
    quote = 0
    for i in range(pos + 1, len(data)):
        c = data[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x3E:
            return i + 1
    raise ValueError(f"unterminated tag at byte {pos}")


def spans(data: bytes, source: str) -> list[Span]:
    """Every element of ``data`` with its byte offsets, in document order.

    The document is first checked by :func:`parse` (same refusals); only then does
    expat, which reports the byte index of each tag, walk it again.
    """
    parse(data, source)
    found: list[Span] = []
    stack: list[tuple[str, dict[str, str], int, int]] = []
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def start(name: str, attrs: dict[str, str]) -> None:
        pos = parser.CurrentByteIndex
        stack.append((name, attrs, pos, _tag_end(data, pos)))

    def end(_name: str) -> None:
        name, attrs, pos, open_end = stack.pop()
        path = (*(s[0] for s in stack), name)
        if data[open_end - 2:open_end] == b"/>":
            found.append(Span(path, attrs, pos, open_end, open_end, open_end))
        else:
            close = parser.CurrentByteIndex
            found.append(Span(path, attrs, pos, open_end, close, _tag_end(data, close)))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(data, True)
    return sorted(found, key=lambda s: s.start)
