"""``etc/templates/aps_settings.xml``: read it, check it, and edit it in place.

Reading goes through :mod:`mgr_agent.xmlsafe`.  Edits change only the bytes of the one
element concerned (found with :func:`mgr_agent.xmlsafe.spans`): the rest of the file —
comments, attribute quoting, indentation, line endings — is left byte for byte.  Every
edit is verified by reading the result back and comparing its meaning with the intended
one, so a file the editor misunderstood is refused rather than damaged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from mgr_agent import xmlsafe
from mgr_agent.aps import InvalidSettings

Section = Literal["updaterules", "defverrules"]
TYPES = ("latest", "earliest", "definite")
CHILD = {"imagemapping": "apsimg", "updaterules": "onupdate", "defverrules": "defver"}
RULE_ATTRS = {"updaterules": ("name", "type", "quantity", "force"),
              "defverrules": ("name", "type", "quantity")}
POSITIVE = re.compile(r"[1-9][0-9]{0,8}")
_ENCODING = re.compile(rb"""(?:\xef\xbb\xbf)?<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


@dataclass(frozen=True)
class Rule:
    """One ``<onupdate>`` or ``<defver>`` as written (attributes not yet validated)."""

    section: Section
    name: str | None
    type: str | None = None
    quantity: str | None = None
    force: str | None = None
    version: str | None = None
    line: int = 0
    extra: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """The selection type; no ``type`` means latest."""
        return self.type or "latest"

    @property
    def count(self) -> int:
        """``quantity`` (default 1); only meaningful for latest/earliest."""
        return int(self.quantity) if self.quantity and POSITIVE.fullmatch(self.quantity) else 1

    @property
    def forced(self) -> bool:
        return self.force == "yes"

    def meaning(self) -> tuple[str, int, bool, str | None]:
        """What the rule does, so that equivalent spellings compare equal."""
        if self.kind == "definite":
            return ("definite", 1, self.forced, self.version)
        return (self.kind, self.count, self.forced, None)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "type": self.kind, "quantity": self.count,
                "force": self.forced, "version": self.version, "line": self.line}


@dataclass(frozen=True)
class Image:
    name: str | None
    file: str | None
    line: int = 0


@dataclass
class Settings:
    """The meaning of one ``aps_settings.xml``."""

    root_tag: str = "doc"
    defimg: str | None = None
    defimg_line: int = 0
    images: list[Image] = field(default_factory=list)
    update: list[Rule] = field(default_factory=list)
    default: list[Rule] = field(default_factory=list)
    unknown: list[tuple[str, int]] = field(default_factory=list)
    repeated: list[tuple[str, int]] = field(default_factory=list)

    def rules(self, section: Section) -> list[Rule]:
        return self.update if section == "updaterules" else self.default

    def rule(self, section: Section, name: str) -> Rule | None:
        return next((r for r in self.rules(section) if r.name == name), None)

    def to_dict(self) -> dict[str, object]:
        return {"defimg": self.defimg,
                "images": [{"name": i.name, "file": i.file, "line": i.line} for i in self.images],
                "updaterules": [r.to_dict() for r in self.update],
                "defverrules": [r.to_dict() for r in self.default]}


def _line(el: xmlsafe.Element) -> int:
    line = el.sourceline
    return line if isinstance(line, int) else 0


def _text(el: xmlsafe.Element) -> str | None:
    text = (el.text or "").strip()
    return text or None


def read(data: bytes, source: str) -> Settings:
    """Parse ``data`` (raises ``InvalidXML`` naming ``source``)."""
    root = xmlsafe.parse(data, source)
    s = Settings(root_tag=str(root.tag))
    seen: set[str] = set()
    for sec in root:
        if not isinstance(sec.tag, str):
            continue  # comments, processing instructions
        line = _line(sec)
        if sec.tag not in CHILD:
            s.unknown.append((sec.tag, line))
            continue
        if sec.tag in seen:
            s.repeated.append((sec.tag, line))
        seen.add(sec.tag)
        if sec.tag == "imagemapping" and s.defimg is None:
            s.defimg, s.defimg_line = sec.get("defimg"), line
        for el in sec:
            if not isinstance(el.tag, str):
                continue
            el_line = _line(el)
            if el.tag != CHILD[sec.tag]:
                s.unknown.append((f"{sec.tag}/{el.tag}", el_line))
            elif sec.tag == "imagemapping":
                s.images.append(Image(el.get("name"), _text(el), el_line))
            else:
                section: Section = "updaterules" if sec.tag == "updaterules" else "defverrules"
                extra = tuple(sorted(str(a) for a in el.attrib if a not in RULE_ATTRS[section]))
                s.rules(section).append(Rule(section, el.get("name"), el.get("type"), el.get("quantity"),
                                             el.get("force"), _text(el), el_line, extra))
    return s


# ---------------------------------------------------------------- editing
def _esc(text: str, attr: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if attr else text


def rule_element(rule: Rule) -> str:
    """The element for ``rule``: explicit type, quantity only when not 1, force only when yes."""
    tag = CHILD[rule.section]
    attrs = f'name="{_esc(rule.name or "", True)}" type="{rule.kind}"'
    if rule.kind != "definite" and rule.count != 1:
        attrs += f' quantity="{rule.count}"'
    if rule.forced:
        attrs += ' force="yes"'
    if rule.kind == "definite":
        return f"<{tag} {attrs}>{_esc(rule.version or '')}</{tag}>"
    return f"<{tag} {attrs}/>"


def image_element(name: str, file: str) -> str:
    return f'<apsimg name="{_esc(name, True)}">{_esc(file)}</apsimg>'


class Editor:
    """Byte-exact edits of one document; each method returns the new bytes."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.spans = xmlsafe.spans(data, source)
        self.eol = b"\r\n" if b"\r\n" in data else b"\n"
        declared = _ENCODING.match(data)
        self.encoding = declared.group(1).decode("ascii") if declared else "utf-8"

    def _bytes(self, text: str) -> bytes:
        """New markup in the document's own encoding (characters it lacks as references)."""
        return text.encode(self.encoding, "xmlcharrefreplace")

    def _find(self, path: tuple[str, ...], name: str | None = None) -> xmlsafe.Span | None:
        for span in self.spans:
            if span.path == path and (name is None or span.attrs.get("name") == name):
                return span
        return None

    def _indent(self, pos: int) -> bytes:
        """The spaces and tabs between the start of ``pos``'s line and ``pos``."""
        start = self.data.rfind(b"\n", 0, pos) + 1
        lead = self.data[start:pos]
        return lead if lead.strip(b" \t") == b"" else b""

    def _unit(self) -> bytes:
        """One indentation step, as the file's sections use it (two spaces by default)."""
        root = self.spans[0]
        for span in self.spans[1:]:
            if len(span.path) == 2:
                step = self._indent(span.start)[len(self._indent(root.start)):]
                return step or b"  "
        return b"  "

    def _children(self, parent: xmlsafe.Span) -> list[xmlsafe.Span]:
        depth = len(parent.path) + 1
        return [s for s in self.spans
                if len(s.path) == depth and parent.start < s.start and s.end <= parent.end]

    def _append(self, parent: xmlsafe.Span, element: bytes) -> bytes:
        """``element`` as the new last child of ``parent``, indented like its siblings."""
        d = self.data
        kids = self._children(parent)
        indent = self._indent(kids[-1].start) if kids else self._indent(parent.start) + self._unit()
        if parent.open_end == parent.close_start and d[parent.open_end - 2:parent.open_end] == b"/>":
            tag = parent.path[-1].encode()
            opened = d[parent.start:parent.open_end - 2].rstrip() + b">"
            body = (opened + self.eol + indent + element + self.eol + self._indent(parent.start)
                    + b"</" + tag + b">")
            return d[:parent.start] + body + d[parent.end:]
        if kids:
            at = kids[-1].end
            return d[:at] + self.eol + indent + element + d[at:]
        # no child yet: the new one goes on its own line, before the closing tag's line
        closing = (b"" if b"\n" in d[parent.open_end:parent.close_start]
                   else self.eol + self._indent(parent.start))
        return d[:parent.open_end] + self.eol + indent + element + closing + d[parent.open_end:]

    def _remove(self, span: xmlsafe.Span) -> bytes:
        """Drop ``span`` and the line break and indentation before it."""
        d = self.data
        a = span.start
        while a > 0 and d[a - 1] in b" \t":
            a -= 1
        if a > 0 and d[a - 1] == 0x0A:
            a -= 2 if a > 1 and d[a - 2] == 0x0D else 1
        else:
            a = span.start
        return d[:a] + d[span.end:]

    def _put(self, section: str, name: str | None, element: bytes) -> bytes:
        root = self.spans[0]
        sec = self._find((root.path[0], section))
        if sec is None:
            unit = self._unit()
            indent = self._indent(root.start) + unit
            block = (f"<{section}>".encode() + self.eol + indent + unit + element + self.eol + indent
                     + f"</{section}>".encode())
            return self._append(root, block)
        old = self._find((root.path[0], section, CHILD[section]), name) if name is not None else None
        if old is not None:
            return self.data[:old.start] + element + self.data[old.end:]
        return self._append(sec, element)

    def set_rule(self, rule: Rule) -> bytes:
        return self._put(rule.section, rule.name, self._bytes(rule_element(rule)))

    def set_image(self, name: str, file: str) -> bytes:
        return self._put("imagemapping", name, self._bytes(image_element(name, file)))

    def set_defimg(self, file: str) -> bytes:
        root = self.spans[0]
        sec = self._find((root.path[0], "imagemapping"))
        if sec is None:
            section = self._bytes(f'<imagemapping defimg="{_esc(file, True)}"/>')
            return self._append(root, section)
        tag = self.data[sec.start:sec.open_end]
        value = self._bytes(f'"{_esc(file, True)}"')
        m = re.search(rb"""(\sdefimg\s*=\s*)("[^"]*"|'[^']*')""", tag)
        if m:
            new = tag[:m.start(2)] + value + tag[m.end(2):]
        else:
            cut = len(tag) - (2 if tag.endswith(b"/>") else 1)
            new = tag[:cut].rstrip() + b" defimg=" + value + tag[cut:]
        return self.data[:sec.start] + new + self.data[sec.open_end:]

    def remove(self, section: str, name: str) -> bytes:
        root = self.spans[0]
        span = self._find((root.path[0], section, CHILD[section]), name)
        return self.data if span is None else self._remove(span)


def verified(after_data: bytes, source: str, expect: Settings) -> bytes:
    """``after_data`` if it reads back as ``expect`` (the intended meaning), else refuse."""
    after = read(after_data, source)
    if _meaning(after) != _meaning(expect):
        raise InvalidSettings(f"{source}: the edit did not read back as intended; nothing was written",
                              hint="the file has a shape the editor does not know; edit it by hand "
                                   "and report the file")
    return after_data


def _meaning(s: Settings) -> tuple[object, ...]:
    return (s.root_tag, s.defimg, [(i.name, i.file) for i in s.images],
            [(r.name, r.type, r.quantity, r.force, r.version, r.extra) for r in s.update],
            [(r.name, r.type, r.quantity, r.force, r.version, r.extra) for r in s.default])


def expected_rule(s: Settings, rule: Rule) -> Settings:
    """``s`` with ``rule`` set (replacing a rule of the same name, or appended)."""
    out = replace(s, update=list(s.update), default=list(s.default))
    new = replace(rule, type=rule.kind, quantity=str(rule.count) if rule.kind != "definite" and
                  rule.count != 1 else None, force="yes" if rule.forced else None, line=0, extra=())
    rules = out.rules(rule.section)
    for i, r in enumerate(rules):
        if r.name == rule.name:
            rules[i] = new
            break
    else:
        rules.append(new)
    return out


def expected_without(s: Settings, section: str, name: str) -> Settings:
    return replace(s, images=[i for i in s.images if not (section == "imagemapping" and i.name == name)],
                   update=[r for r in s.update if not (section == "updaterules" and r.name == name)],
                   default=[r for r in s.default if not (section == "defverrules" and r.name == name)])


def expected_image(s: Settings, name: str | None, file: str) -> Settings:
    if name is None:
        return replace(s, defimg=file)
    images = [Image(name, file) if i.name == name else i for i in s.images]
    if not any(i.name == name for i in s.images):
        images.append(Image(name, file))
    return replace(s, images=images)
