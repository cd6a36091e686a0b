"""Plesk ``meta.xml``: what Plesk needs to install, and what the Extension Catalog requires.

Rules from Plesk's *Extension Structure* / *Структура лицензий* (meta.xml elements,
localisation of the nodes); docs/check.md cites each one.
"""

from __future__ import annotations

import re

from mgr_agent import xmlsafe
from mgr_agent.checks.base import Context, Files, find
from mgr_agent.findings import Finding

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
REQUIRED = ("id", "name", "version", "release")
CATALOG = ("description", "vendor", "category")
SINGLE = ("id", "name", "version", "release", "vendor", "url", "support_url", "help_url", "buy_url",
          "plesk_min_version", "plesk_max_version", "encoder")
REPEATABLE = ("description", "category", "os")
KNOWN = set(SINGLE) | set(REPEATABLE)
URLS = ("url", "support_url", "help_url", "buy_url")
TRANSLATABLE = ("name", "description")
# Plesk's published category codes (the reference copy lost the code column: docs/check.md)
CATEGORIES = frozenset({"backup", "client_tool", "dns", "ecommerce", "help", "mail", "monitoring",
                        "security", "seo", "server_tool", "web_app", "web_dev", "web_server"})
FILLER = ("extension", "plugin", "plesk", "installer", "integration", "module", "addon", "add-on")

INSTALL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
CATALOG_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
VERSION_XY = re.compile(r"^\d+\.\d+(?:\.\d+)?$")
PLESK_VERSION = re.compile(r"^\d+(?:\.\d+){0,3}$")
RELEASE = re.compile(r"^\d+$")
PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\$\{.*?\}|@[A-Z_]+@|%[A-Z_]+%")
RFC1766 = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")
URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)


def _text(el: xmlsafe.Element) -> str:
    return (el.text or "").strip()


def _line(el: xmlsafe.Element) -> int | None:
    line = el.sourceline
    return line if isinstance(line, int) else None


def _vtuple(value: str) -> tuple[int, ...]:
    return tuple(int(p) for p in value.split("."))


def check_meta(files: Files, ctx: Context) -> list[Finding]:
    f = "meta.xml"
    if f not in files:
        return []  # not detected as a Plesk package: reported as `detection`
    root = files.xml(f)
    if root is None:
        return []  # reported by the XML safety check
    if root.tag != "module":
        return [find("meta-root", "error", f"root element is <{root.tag}>, it must be <module>",
                     "make <module> the root element", f, _line(root))]
    out: list[Finding] = []
    plain: dict[str, list[xmlsafe.Element]] = {}
    translated: list[xmlsafe.Element] = []
    for el in root:
        if not isinstance(el.tag, str):
            continue  # comments, processing instructions
        if el.tag not in KNOWN:
            out.append(find("meta-unknown-element", "warning", f"<{el.tag}> is not a meta.xml element",
                            "remove it or fix its spelling (see docs/check.md for the elements)",
                            f, _line(el)))
            continue
        (translated if el.get(XML_LANG) is not None else plain.setdefault(el.tag, [])).append(el)
        if el.tag in plain and len(plain[el.tag]) == 2 and el.tag in SINGLE:
            out.append(find("meta-duplicate-element", "warning",
                            f"<{el.tag}> is given more than once; only the first counts",
                            f"keep one <{el.tag}> (translations take xml:lang)", f, _line(el)))

    def value(tag: str) -> str:
        els = plain.get(tag)
        return _text(els[0]) if els else ""

    for tag in REQUIRED:
        if not value(tag):
            out.append(find("meta-required", "error", f"<{tag}> is required and must not be empty",
                            f"add <{tag}>…</{tag}> to <module>", f, _line(root)))
    for tag in CATALOG:
        if not value(tag):
            out.append(find("meta-catalog-field", "warning",
                            f"<{tag}> is missing; the Extension Catalog requires it",
                            f"add <{tag}>…</{tag}>", f, _line(root)))
    for el in (e for tag in plain.values() for e in tag):
        if PLACEHOLDER.search(_text(el)):
            out.append(find("meta-placeholder", "warning",
                            f"<{el.tag}>{_text(el)}</{el.tag}> is an unfilled template placeholder",
                            "substitute the real value when building the package", f, _line(el)))
    out += _identity(plain, f)
    out += _catalog(plain, f)
    out += _platform(plain, f)
    out += _translations(translated, plain, f)
    return out


def _identity(plain: dict[str, list[xmlsafe.Element]], f: str) -> list[Finding]:
    out: list[Finding] = []
    get = plain.get
    ident = get("id")
    if ident and _text(ident[0]):
        ext = _text(ident[0])
        if not INSTALL_ID.match(ext):
            out.append(find("meta-id", "error",
                            f"<id>{ext}</id> must be lower-case letters, digits and dashes (at most 64, "
                            "not starting or ending with a dash)",
                            "use lower-case words joined by dashes, e.g. my-backup", f, _line(ident[0])))
        elif not CATALOG_ID.match(ext):
            out.append(find("meta-id-style", "warning",
                            f"<id>{ext}</id>: the catalog wants lower-case words joined by single dashes",
                            f"use {re.sub('-+', '-', ext)}", f, _line(ident[0])))
    name = get("name")
    if name and _text(name[0]):
        text, line = _text(name[0]), _line(name[0])
        if len(text) >= 60:
            out.append(find("meta-name-too-long", "warning",
                            f"<name> is {len(text)} characters; the catalog takes fewer than 60",
                            "shorten the name (25 characters or fewer fit the catalog's titles)", f, line))
        elif len(text) > 25:
            out.append(find("meta-name-long", "warning",
                            f"<name> is {len(text)} characters; over 25 it does not fit whole in the "
                            "catalog's promotion titles", "shorten the name to 25 characters", f, line))
        if not text.isascii():
            out.append(find("meta-name-english", "warning",
                            "<name> must be in English; other languages go in "
                            "<name xml:lang=\"…\"> copies",
                            "write the name in English and add translations with xml:lang", f, line))
        words = [w for w in re.split(r"[^a-z0-9-]+", text.lower()) if w]
        filler = [w for w in words if w in FILLER]
        if filler:
            out.append(find("meta-name-filler", "warning",
                            f"<name> uses {', '.join(repr(w) for w in filler)}, which add no meaning",
                            "drop words like extension, plugin, Plesk, installer, integration", f, line))
    for tag, pattern, code, want in (("version", VERSION_XY, "meta-version-format", "X.Y, e.g. 1.0"),
                                     ("release", RELEASE, "meta-release-format", "a number, e.g. 1")):
        els = get(tag)
        if not els or not _text(els[0]):
            continue
        text = _text(els[0])
        if len(text) > 64 or any(c.isspace() for c in text):
            out.append(find("meta-version", "error",
                            f"<{tag}>{text[:64]}</{tag}> must be one word of at most 64 characters",
                            f"set <{tag}> to {want}", f, _line(els[0])))
        elif not pattern.match(text) and not PLACEHOLDER.search(text):
            out.append(find(code, "warning", f"<{tag}>{text}</{tag}> is not shaped {want}",
                            f"set <{tag}> to {want}", f, _line(els[0])))
    return out


def _catalog(plain: dict[str, list[xmlsafe.Element]], f: str) -> list[Finding]:
    out: list[Finding] = []
    for el in plain.get("category", []):
        code = _text(el)
        if code not in CATEGORIES:
            out.append(find("meta-category-unknown", "warning",
                            f"<category>{code}</category> is not one of Plesk's category codes",
                            "use a code: " + ", ".join(sorted(CATEGORIES)), f, _line(el)))
    for tag in URLS:
        for el in plain.get(tag, [])[:1]:
            if not URL.match(_text(el)):
                out.append(find("meta-url", "warning",
                                f"<{tag}>{_text(el)}</{tag}> is not an absolute http(s) URL",
                                f"write <{tag}> as https://…", f, _line(el)))
    if plain.get("buy_url") and not any(_text(e) for e in plain.get("support_url", [])):
        el = plain["buy_url"][0]
        out.append(find("meta-support-url", "warning",
                        "a paid extension (<buy_url>) must give <support_url>",
                        "add <support_url>https://…</support_url>", f, _line(el)))
    return out


def _platform(plain: dict[str, list[xmlsafe.Element]], f: str) -> list[Finding]:
    out: list[Finding] = []
    bounds: dict[str, tuple[int, ...]] = {}
    for tag in ("plesk_min_version", "plesk_max_version"):
        for el in plain.get(tag, [])[:1]:
            text = _text(el)
            if PLESK_VERSION.match(text):
                bounds[tag] = _vtuple(text)
            else:
                out.append(find("meta-plesk-version", "error",
                                f"<{tag}>{text}</{tag}> is not a Plesk version",
                                f"write <{tag}> as numbers and dots, e.g. 18.0", f, _line(el)))
    low, high = bounds.get("plesk_min_version"), bounds.get("plesk_max_version")
    if low is not None and high is not None:
        width = max(len(low), len(high))
        if low + (0,) * (width - len(low)) > high + (0,) * (width - len(high)):
            el = plain["plesk_max_version"][0]
            out.append(find("meta-plesk-range", "error",
                            "<plesk_min_version> is above <plesk_max_version>: no Plesk can install it",
                            "swap or correct the bounds", f, _line(el)))
    oses = plain.get("os", [])
    for el in oses:
        if _text(el) not in ("unix", "win"):
            out.append(find("meta-os", "error", f"<os>{_text(el)}</os> must be unix or win",
                            "use <os>unix</os> and/or <os>win</os>", f, _line(el)))
    if oses and all(_text(e) in ("unix", "win") for e in oses) and not any(
            _text(e) == "unix" for e in oses):
        out.append(find("meta-os-unix", "error",
                        "the extension declares no <os>unix</os>: Plesk for Linux refuses it",
                        "add <os>unix</os> if it runs on Linux", f, _line(oses[0])))
    for el in plain.get("encoder", [])[:1]:
        if _text(el) != "ioncube":
            out.append(find("meta-encoder", "error",
                            f"<encoder>{_text(el)}</encoder>: the only encoder Plesk knows is ioncube",
                            "use <encoder>ioncube</encoder> or remove the element", f, _line(el)))
    return out


def _translations(translated: list[xmlsafe.Element], plain: dict[str, list[xmlsafe.Element]],
                  f: str) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for el in translated:
        lang = el.get(XML_LANG) or ""
        if not RFC1766.match(lang):
            out.append(find("meta-lang-code", "warning",
                            f"<{el.tag} xml:lang=\"{lang}\">: not an RFC 1766 language code",
                            "use a code such as de-DE or ru-RU", f, _line(el)))
        if el.tag not in plain:
            out.append(find("meta-lang-orphan", "warning",
                            f"<{el.tag} xml:lang=\"{lang}\"> translates a <{el.tag}> that is not there",
                            f"add the English <{el.tag}> without xml:lang first", f, _line(el)))
        elif el.tag not in TRANSLATABLE:
            out.append(find("meta-lang-orphan", "warning",
                            f"<{el.tag}> is not a translatable element",
                            "translate only <name> and <description>", f, _line(el)))
        if (el.tag, lang.lower()) in seen:
            out.append(find("meta-duplicate-element", "warning",
                            f"<{el.tag} xml:lang=\"{lang}\"> is given more than once",
                            "keep one translation per language", f, _line(el)))
        seen.add((el.tag, lang.lower()))
    return out


VALIDATORS = (check_meta,)
