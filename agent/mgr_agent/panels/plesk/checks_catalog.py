"""Plesk Extension Catalog files: DESCRIPTION.md, CHANGES.md, ``_meta/`` icons and screenshots.

Rules from *Структура лицензий*: DESCRIPTION.md, CHANGES.md, "Значки и снимки экрана
(_meta/)". Every image is read as bytes and its PNG header checked; the extension's
file names are never trusted.
"""

from __future__ import annotations

import re

from mgr_agent import png
from mgr_agent.checks.base import Context, Files, find
from mgr_agent.findings import Finding

ICONS = {32: "_meta/icons/32x32.png", 64: "_meta/icons/64x64.png", 128: "_meta/icons/128x128.png"}
PAID_ICON = (160, "_meta/icons/160x160.png")
SCREENSHOTS = ("_meta/screenshots/1.png", "_meta/screenshots/2.png", "_meta/screenshots/3.png")
SCREENSHOT_SIZE = (1024, 768)
EXTRA_SCREENSHOT = re.compile(r"^_meta/screenshots/(\d+)\.png$")


def _paid(files: Files) -> bool:
    root = files.xml("meta.xml") if "meta.xml" in files else None
    return root is not None and root.tag == "module" and any(
        (el.text or "").strip() for el in root.findall("buy_url"))


def _png(files: Files, rel: str) -> tuple[png.PngInfo | None, Finding | None]:
    try:
        return png.read_header(files.read(rel)), None
    except png.NotPNG as exc:
        return None, find("png-invalid", "warning", f"not a PNG image: {exc}",
                          "save the image as PNG (a renamed JPEG or GIF is not one)", rel)


def check_docs(files: Files, ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for rel, what in (("DESCRIPTION.md", "what the extension does, its limits and what needs a license"),
                      ("CHANGES.md", "the changes of each version, newest first")):
        if rel not in files:
            out.append(find("catalog-file-missing", "warning",
                            f"{rel} is missing; the catalog shows it on the extension's page",
                            f"add {rel} in Markdown: {what}", rel))
        elif not files.read(rel).strip():
            out.append(find("catalog-file-missing", "warning", f"{rel} is empty",
                            f"write {what} in Markdown", rel))
    return out


def check_icons(files: Files, ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    icons = dict(ICONS)
    if _paid(files):
        icons[PAID_ICON[0]] = PAID_ICON[1]
    for size, rel in sorted(icons.items()):
        if rel not in files:
            out.append(find("icon-missing", "warning",
                            f"no {size}x{size} icon" + (" (paid extensions need it)" if size == 160 else ""),
                            f"add a {size}x{size} PNG with a transparent background as {rel}", rel))
            continue
        info, bad = _png(files, rel)
        if bad is not None:
            out.append(bad)
            continue
        assert info is not None
        if info.size != (size, size):
            out.append(find("icon-size", "warning",
                            f"is {info.width}x{info.height}, it must be {size}x{size}",
                            f"scale the icon to {size}x{size} pixels", rel))
            continue
        try:
            alphas = png.corner_alphas(files.read(rel))
        except png.NotPNG as exc:
            out.append(find("png-invalid", "warning", f"damaged PNG: {exc}", "save the image again", rel))
            continue
        if alphas is not None and all(a == 255 for a in alphas):
            out.append(find("icon-opaque", "warning",
                            "the background is not transparent (all four corners are opaque)",
                            "save the icon with an alpha channel and a transparent background", rel))
    return out


def check_screenshots(files: Files, ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    if SCREENSHOTS[0] not in files:
        out.append(find("screenshot-missing", "warning", "the catalog needs at least one screenshot",
                        f"add a {SCREENSHOT_SIZE[0]}x{SCREENSHOT_SIZE[1]} PNG as {SCREENSHOTS[0]}",
                        SCREENSHOTS[0]))
    for rel in files.under("_meta/screenshots/"):
        match = EXTRA_SCREENSHOT.match(rel)
        if match is None or not 1 <= int(match.group(1)) <= len(SCREENSHOTS) or rel not in SCREENSHOTS:
            out.append(find("screenshot-extra", "warning",
                            "the catalog shows screenshots 1.png, 2.png and 3.png only",
                            "name screenshots 1.png to 3.png, or remove this file", rel))
            continue
        info, bad = _png(files, rel)
        if bad is not None:
            out.append(bad)
        elif info is not None and info.size != SCREENSHOT_SIZE:
            out.append(find("screenshot-size", "warning",
                            f"is {info.width}x{info.height}, it must be "
                            f"{SCREENSHOT_SIZE[0]}x{SCREENSHOT_SIZE[1]}",
                            f"take or scale the screenshot to {SCREENSHOT_SIZE[0]}x{SCREENSHOT_SIZE[1]}",
                            rel))
    return out


VALIDATORS = (check_docs, check_icons, check_screenshots)
