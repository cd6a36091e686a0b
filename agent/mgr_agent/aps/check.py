"""``mgr-agent aps check``: the rules of ``aps_settings.xml`` as findings.

Structure (``<doc>`` with ``imagemapping``, ``updaterules``, ``defverrules``); images
(``defimg`` and every ``apsimg`` a file name in ``skins/common/img/`` that is a real
32x32 PNG); rule attributes (``type`` in latest/earliest/definite, a version text exactly
when definite, ``quantity`` a positive integer and only with latest/earliest, ``force``
only ``yes``); each script name at most once per section.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mgr_agent import png
from mgr_agent.aps import IMAGE_SIZE, SETTINGS_REL, ApsPaths
from mgr_agent.aps.settings import CHILD, POSITIVE, TYPES, Rule, Settings, read
from mgr_agent.errors import InvalidXML
from mgr_agent.findings import Finding, ordered


def check_file(paths: ApsPaths, settings_path: Path | None = None) -> tuple[Settings | None, list[Finding]]:
    """Read and check the settings file (the panel's, or ``settings_path``)."""
    path = settings_path or paths.settings
    rel = SETTINGS_REL if settings_path is None else str(settings_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, [Finding("aps-settings-missing", "warning", f"{rel} does not exist: the panel "
                              "uses its defaults (latest version of every script, the default image)",
                              "create it with `mgr-agent aps set-rule` or `set-image`", rel)]
    try:
        settings = read(data, rel)
    except InvalidXML as exc:
        return None, [Finding("aps-xml", "error", exc.message, "make it well-formed XML without "
                              "entities or a DTD", rel)]
    return settings, ordered(check(settings, paths, rel))


def check(s: Settings, paths: ApsPaths, rel: str = SETTINGS_REL) -> list[Finding]:
    out: list[Finding] = []

    def add(code: str, severity: str, line: int, message: str, fix: str) -> None:
        out.append(Finding(code, "error" if severity == "error" else "warning", message, fix, rel,
                           line or None))

    if s.root_tag != "doc":
        add("aps-root", "error", 1, f"the root element is <{s.root_tag}>, the panel reads <doc>",
            "rename the root element to <doc>")
    for tag, line in s.unknown:
        add("aps-unknown-element", "warning", line, f"<{tag}> is not an APS settings element; the "
            f"panel ignores it", "sections are " + ", ".join(f"<{k}> of <{v}>" for k, v in CHILD.items()))
    for tag, line in s.repeated:
        add("aps-section-repeated", "error", line, f"<{tag}> appears more than once",
            "merge the sections into one")
    if s.defimg is None and (s.images or s.defimg_line):
        add("aps-defimg-missing", "warning", s.defimg_line, "<imagemapping> has no defimg: scripts "
            "without an image get none", 'add defimg="aps.png" (or another 32x32 PNG)')
    elif s.defimg is not None:
        out += image_problems(paths, s.defimg, "defimg", s.defimg_line, rel)
    for image in s.images:
        if not image.name:
            add("aps-name-missing", "error", image.line, "<apsimg> without a name attribute",
                "add name=\"SCRIPT\" (the script's name in the repository)")
        if not image.file:
            add("aps-image-empty", "error", image.line, f"<apsimg name=\"{image.name}\"> names no file",
                "put the PNG file name as the element's text")
        else:
            out += image_problems(paths, image.file, f'apsimg "{image.name}"', image.line, rel)
    out += _duplicates("apsimg", [(i.name, i.line) for i in s.images], rel)
    for rules, tag in ((s.update, "onupdate"), (s.default, "defver")):
        for rule in rules:
            out += _rule(rule, tag, rel)
        out += _duplicates(tag, [(r.name, r.line) for r in rules], rel)
    return out


def _duplicates(tag: str, names: list[tuple[str | None, int]], rel: str) -> list[Finding]:
    counts = Counter(n for n, _ in names if n)
    seen: set[str] = set()
    out = []
    for name, line in names:
        if name and counts[name] > 1:
            if name in seen:
                out.append(Finding("aps-name-duplicate", "error", f'<{tag} name="{name}"> appears '
                                   f"{counts[name]} times; the panel would use only one of them",
                                   "keep one element per script name", rel, line or None))
            seen.add(name)
    return out


def _rule(r: Rule, tag: str, rel: str) -> list[Finding]:
    out: list[Finding] = []
    where = f'<{tag} name="{r.name}">'

    def add(code: str, message: str, fix: str, severity: str = "error") -> None:
        out.append(Finding(code, "error" if severity == "error" else "warning", message, fix, rel,
                           r.line or None))

    if not r.name:
        add("aps-name-missing", f"<{tag}> without a name attribute", 'add name="SCRIPT"')
        where = f"<{tag}>"
    if r.type is not None and r.type not in TYPES:
        add("aps-type-invalid", f"{where}: type=\"{r.type}\" is not latest, earliest or definite",
            "use latest, earliest or definite (no type means latest)")
    elif r.kind == "definite" and not r.version:
        add("aps-version-missing", f"{where}: type=\"definite\" needs the version as the element's text",
            f"write <{tag} name=\"{r.name}\" type=\"definite\">VERSION</{tag}>")
    elif r.kind != "definite" and r.version:
        add("aps-version-unexpected", f"{where}: the text {r.version!r} is used only with "
            f"type=\"definite\"", 'add type="definite" or remove the text')
    if r.quantity is not None:
        if r.section == "defverrules":
            add("aps-quantity-unexpected", f"{where}: quantity has no meaning for a default-version "
                "rule (it picks one version)", "remove quantity")
        elif not POSITIVE.fullmatch(r.quantity):
            add("aps-quantity-invalid", f"{where}: quantity=\"{r.quantity}\" is not a positive integer",
                'use a whole number from 1, e.g. quantity="3"')
        elif r.kind == "definite":
            add("aps-quantity-unexpected", f"{where}: quantity applies only to latest and earliest",
                "remove quantity, or change the type")
    if r.force is not None and r.section == "updaterules" and r.force != "yes":
        add("aps-force-invalid", f"{where}: force=\"{r.force}\": the only value is \"yes\"",
            'write force="yes", or remove the attribute for the default behaviour')
    for attr in r.extra:
        add("aps-attribute-unknown", f"{where}: attribute {attr!r} is not read by the panel here",
            "remove it", "warning")
    return out


def image_problems(paths: ApsPaths, file: str, what: str, line: int, rel: str) -> list[Finding]:
    """``file`` must be a plain name of a 32x32 PNG in skins/common/img/."""
    def bad(code: str, message: str, fix: str) -> list[Finding]:
        return [Finding(code, "error", f"{what}: {message}", fix, rel, line or None)]

    if "/" in file or "\\" in file or file in (".", "..") or file.startswith("."):
        return bad("aps-image-name", f"{file!r} is not a plain file name",
                   "put the PNG into skins/common/img/ and give its file name only")
    img = paths.img_dir / file
    try:
        with img.open("rb") as fh:
            head = fh.read(png.HEADER_SIZE)
    except FileNotFoundError:
        return bad("aps-image-missing", f"skins/common/img/{file} does not exist",
                   f"install a 32x32 PNG as skins/common/img/{file} (a plugin package may carry it)")
    except OSError as exc:
        return bad("aps-image-missing", f"skins/common/img/{file} cannot be read: {exc.strerror}",
                   "make it a readable regular file")
    try:
        info = png.read_header(head)
    except png.NotPNG as exc:
        return bad("aps-image-not-png", f"skins/common/img/{file} is not a PNG ({exc})",
                   "convert it to PNG, 32x32 pixels")
    if info.size != IMAGE_SIZE:
        return bad("aps-image-size", f"skins/common/img/{file} is {info.width}x{info.height}, the "
                   "panel shows 32x32", "scale it to 32x32 pixels")
    return []
