"""aps_settings.xml: reading, the check's findings with real PNGs, byte-exact edits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from mgr_agent.aps import ApsPaths, InvalidSettings, settings
from mgr_agent.aps.check import check_file
from mgr_agent.aps.settings import Editor, Rule, read
from tests.unit.test_png_findings import make_png

# verbatim from the ispmanager documentation page "APS scripts"
REFERENCE_EXAMPLE = b"""<doc>
  <imagemapping defimg="aps.png">
    <apsimg name="Drupal">drupal.png</apsimg>
    <apsimg name="joomla">joomla.png</apsimg>
    <apsimg name="WordPress">wordpress.png</apsimg>
    <apsimg name="Prestashop">prestashop.png</apsimg>
    <apsimg name="phpBB">phpbb.png</apsimg>
  </imagemapping>
  <updaterules>
    <onupdate name="Drupal" type="latest"/>
    <onupdate name="joomla" type="latest" quantity="1"/>
    <onupdate name="WordPress"/>
    <onupdate name="Prestashop" quantity="2"/>
    <onupdate name="phpBB" force="yes"/>
  </updaterules>
  <defverrules>
    <defver name="Drupal"/>
    <defver name="joomla" type="latest"/>
    <defver name="WordPress"/>
    <defver name="Prestashop"/>
    <defver name="phpBB"/>
  </defverrules>
</doc>
"""
# the example of the ispmanager "APS scripts" page, plus a definite rule, comments, odd quoting
EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- managed partly by hand: keep this comment -->
<doc>
  <imagemapping defimg="aps.png">
    <apsimg name="Drupal">drupal.png</apsimg>
    <apsimg name='joomla'>joomla.png</apsimg>   <!-- single quotes stay -->
    <apsimg name="WordPress">wordpress.png</apsimg>
  </imagemapping>
  <updaterules>
    <onupdate name="Drupal" type="definite">7.31-36</onupdate>
    <onupdate name="joomla" type="latest" quantity="1"/>
    <onupdate name="WordPress"/>
    <onupdate   name="Prestashop"  quantity="2" />
    <onupdate name="phpBB" force="yes"/>
  </updaterules>
  <defverrules>
    <defver name="Drupal"/>
    <defver name="joomla" type="latest"/>
  </defverrules>
</doc>
"""


def mgr_tree(tmp_path: Path, images: dict[str, bytes]) -> ApsPaths:
    paths = ApsPaths(tmp_path / "mgr")
    paths.img_dir.mkdir(parents=True)
    paths.settings.parent.mkdir(parents=True)
    for name, data in images.items():
        (paths.img_dir / name).write_bytes(data)
    return paths


def test_reads_the_reference_example() -> None:
    s = read(REFERENCE_EXAMPLE, "aps_settings.xml")
    assert s.defimg == "aps.png" and [i.name for i in s.images][:2] == ["Drupal", "joomla"]
    prestashop = s.rule("updaterules", "Prestashop")
    assert prestashop is not None and prestashop.kind == "latest" and prestashop.count == 2
    phpbb = s.rule("updaterules", "phpBB")
    assert phpbb is not None and phpbb.forced and phpbb.count == 1
    assert s.rule("defverrules", "joomla") == Rule("defverrules", "joomla", "latest", line=s.default[1].line)


def test_check_accepts_right_pngs_and_names_each_bad_one(tmp_path: Path) -> None:
    paths = mgr_tree(tmp_path, {"aps.png": make_png(32, 32), "drupal.png": make_png(32, 32, 2),
                                "joomla.png": make_png(64, 64),
                                "wordpress.png": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"})
    paths.settings.write_bytes(EXAMPLE)
    _, findings = check_file(paths)
    got = {(f.code, f.line) for f in findings}
    assert got == {("aps-image-size", 6), ("aps-image-not-png", 7)}, findings
    size = next(f for f in findings if f.code == "aps-image-size")
    assert "joomla.png is 64x64" in size.message and size.file == "etc/templates/aps_settings.xml"


@pytest.mark.parametrize(("rule", "code"), [
    ('<onupdate name="A" type="newest"/>', "aps-type-invalid"),
    ('<onupdate name="A" type="definite"/>', "aps-version-missing"),
    ('<onupdate name="A" type="definite">  </onupdate>', "aps-version-missing"),
    ('<onupdate name="A" type="latest">1.0</onupdate>', "aps-version-unexpected"),
    ('<onupdate name="A">1.0</onupdate>', "aps-version-unexpected"),
    ('<onupdate name="A" quantity="0"/>', "aps-quantity-invalid"),
    ('<onupdate name="A" quantity="-2"/>', "aps-quantity-invalid"),
    ('<onupdate name="A" quantity="two"/>', "aps-quantity-invalid"),
    ('<onupdate name="A" type="definite" quantity="2">1.0</onupdate>', "aps-quantity-unexpected"),
    ('<onupdate name="A" force="no"/>', "aps-force-invalid"),
    ('<onupdate name="A" force="YES"/>', "aps-force-invalid"),
    ('<onupdate type="latest"/>', "aps-name-missing"),
    ('<onupdate name="A"/><onupdate name="A" type="earliest"/>', "aps-name-duplicate"),
    ('<onupdate name="A" flavour="x"/>', "aps-attribute-unknown"),
    ('<rule name="A"/>', "aps-unknown-element"),
])
def test_each_update_rule_error(tmp_path: Path, rule: str, code: str) -> None:
    paths = mgr_tree(tmp_path, {})
    paths.settings.write_text(f"<doc>\n<updaterules>\n{rule}\n</updaterules>\n</doc>\n")
    _, findings = check_file(paths)
    assert [(f.code, f.line) for f in findings] == [(code, 3)], findings


@pytest.mark.parametrize(("body", "codes"), [
    ('<defverrules><defver name="A" type="definite">2.0</defver></defverrules>', []),
    ('<defverrules><defver name="A" quantity="2"/></defverrules>', ["aps-quantity-unexpected"]),
    ('<defverrules><defver name="A" force="yes"/></defverrules>', ["aps-attribute-unknown"]),
    ('<defverrules><defver name="A" type="definite"/></defverrules>', ["aps-version-missing"]),
    ('<defverrules><defver name="A"/><defver name="A"/></defverrules>', ["aps-name-duplicate"]),
    ('<updaterules/><updaterules/>', ["aps-section-repeated"]),
    ('<imagemapping><apsimg name="A">../../etc/passwd</apsimg></imagemapping>', ["aps-defimg-missing",
                                                                                "aps-image-name"]),
    ('<imagemapping defimg="aps.png"><apsimg name="A"/></imagemapping>', ["aps-image-empty",
                                                                        "aps-image-missing"]),
])
def test_defver_images_and_sections(tmp_path: Path, body: str, codes: list[str]) -> None:
    paths = mgr_tree(tmp_path, {})
    paths.settings.write_text(f"<doc>{body}</doc>")
    _, findings = check_file(paths)
    assert sorted(f.code for f in findings) == codes, findings


def test_bad_xml_and_missing_file_are_findings(tmp_path: Path) -> None:
    paths = mgr_tree(tmp_path, {})
    assert [f.code for f in check_file(paths)[1]] == ["aps-settings-missing"]
    paths.settings.write_text('<!DOCTYPE d [<!ENTITY x "y">]><doc>&x;</doc>')
    assert [f.code for f in check_file(paths)[1]] == ["aps-xml"]
    paths.settings.write_text("<doc><updaterules></doc>")
    assert [(f.code, f.severity) for f in check_file(paths)[1]] == [("aps-xml", "error")]
    paths.settings.write_text("<settings/>")
    assert [f.code for f in check_file(paths)[1]] == ["aps-root"]


# ---------------------------------------------------------------- byte-exact edits
def edit(data: bytes, rule: Rule) -> bytes:
    before = read(data, "t")
    new = Editor(data, "t").set_rule(rule)
    return settings.verified(new, "t", settings.expected_rule(before, rule))


def test_replacing_a_rule_touches_only_its_element() -> None:
    rule = Rule("updaterules", "WordPress", "latest", "3", "yes")
    new = edit(EXAMPLE, rule)
    assert new == EXAMPLE.replace(b'<onupdate name="WordPress"/>',
                                  b'<onupdate name="WordPress" type="latest" quantity="3" force="yes"/>')


def test_adding_a_rule_follows_the_sibling_indentation_and_crlf() -> None:
    data = EXAMPLE.replace(b"\n", b"\r\n")
    new = edit(data, Rule("defverrules", "phpBB", "definite", version="3.3.11-1"))
    assert new == data.replace(b'<defver name="joomla" type="latest"/>\r\n',
                               b'<defver name="joomla" type="latest"/>\r\n'
                               b'    <defver name="phpBB" type="definite">3.3.11-1</defver>\r\n')


@pytest.mark.parametrize(("doc", "want"), [
    (b"<doc>\n  <updaterules/>\n</doc>\n",
     b'<doc>\n  <updaterules>\n    <onupdate name="A" type="earliest"/>\n  </updaterules>\n</doc>\n'),
    (b"<doc>\n  <updaterules></updaterules>\n</doc>\n",
     b'<doc>\n  <updaterules>\n    <onupdate name="A" type="earliest"/>\n  </updaterules>\n</doc>\n'),
    (b"<doc>\n\t<imagemapping/>\n</doc>",
     b'<doc>\n\t<imagemapping/>\n\t<updaterules>\n\t\t<onupdate name="A" type="earliest"/>\n'
     b"\t</updaterules>\n</doc>"),
    (b"<doc>\n</doc>\n",
     b'<doc>\n  <updaterules>\n    <onupdate name="A" type="earliest"/>\n  </updaterules>\n</doc>\n'),
])
def test_adding_into_empty_or_missing_sections(doc: bytes, want: bytes) -> None:
    assert edit(doc, Rule("updaterules", "A", "earliest")) == want


def test_remove_and_images_keep_everything_else() -> None:
    before = read(EXAMPLE, "t")
    ed = Editor(EXAMPLE, "t")
    removed = ed.remove("updaterules", "Prestashop")
    assert removed == EXAMPLE.replace(b'\n    <onupdate   name="Prestashop"  quantity="2" />', b"")
    settings.verified(removed, "t", settings.expected_without(before, "updaterules", "Prestashop"))
    joomla = ed.set_image("joomla", "joomla-new.png")
    assert joomla == EXAMPLE.replace(b"<apsimg name='joomla'>joomla.png</apsimg>",
                                     b'<apsimg name="joomla">joomla-new.png</apsimg>')
    assert ed.set_defimg("generic.png") == EXAMPLE.replace(b'defimg="aps.png"', b'defimg="generic.png"')
    bare = Editor(b"<doc><imagemapping a='1'/></doc>", "t").set_defimg("x&y.png")
    assert bare == b"<doc><imagemapping a='1' defimg=\"x&amp;y.png\"/></doc>"
    assert read(bare, "t").defimg == "x&y.png"


def test_an_edit_that_does_not_read_back_is_refused() -> None:
    before = read(EXAMPLE, "t")
    wrong = Editor(EXAMPLE, "t").set_rule(Rule("updaterules", "joomla", "earliest"))
    with pytest.raises(InvalidSettings, match="did not read back"):
        settings.verified(wrong, "t", settings.expected_rule(before, Rule("updaterules", "joomla", "latest")))


def test_names_with_markup_are_escaped() -> None:
    new = edit(b"<doc/>", Rule("updaterules", 'A "quoted" <b> & c', "latest"))
    assert read(new, "t").update[0].name == 'A "quoted" <b> & c'


def test_edits_keep_a_declared_encoding_and_a_bom() -> None:
    cp1251 = ('<?xml version="1.0" encoding="windows-1251"?>\n<doc>\n  <!-- Привет -->\n'
              '  <updaterules>\n    <onupdate name="Битрикс"/>\n  </updaterules>\n</doc>\n').encode("cp1251")
    new = edit(cp1251, Rule("updaterules", "Битрикс", "earliest"))
    assert new == cp1251.replace('name="Битрикс"/>'.encode("cp1251"),
                                 'name="Битрикс" type="earliest"/>'.encode("cp1251"))
    other = edit(cp1251, Rule("updaterules", "日本", "latest"))
    assert b'<onupdate name="&#26085;&#26412;" type="latest"/>' in other
    bom = b"\xef\xbb\xbf" + EXAMPLE
    assert edit(bom, Rule("updaterules", "phpBB", "earliest")) == bom.replace(
        b'<onupdate name="phpBB" force="yes"/>', b'<onupdate name="phpBB" type="earliest"/>')


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # typed: a bare ("Cs",) argument infers tuple[str]
XML_TEXT = st.text(st.characters(min_codepoint=0x20, blacklist_categories=SURROGATES,
                                 blacklist_characters="\ufffe\uffff"), min_size=1, max_size=30)


@settings_h(max_examples=150, deadline=None)
@given(name=XML_TEXT.filter(lambda n: n == n.strip() and n not in {"Drupal", "joomla", "WordPress",
                                                                      "Prestashop", "phpBB"}),
       section=st.sampled_from(["updaterules", "defverrules"]),
       kind=st.sampled_from(["latest", "earliest", "definite"]), quantity=st.integers(1, 9),
       force=st.booleans(), version=XML_TEXT.filter(lambda v: v == v.strip()), crlf=st.booleans())
def test_set_then_unset_any_new_rule_gives_the_file_back(name: str, section: str, kind: str,
                                                        quantity: int, force: bool, version: str,
                                                        crlf: bool) -> None:
    data = EXAMPLE.replace(b"\n", b"\r\n") if crlf else EXAMPLE
    upd = section == "updaterules"
    rule = Rule("updaterules" if upd else "defverrules", name, kind,
                str(quantity) if upd and kind != "definite" else None,
                "yes" if upd and force else None, version if kind == "definite" else None)
    new = edit(data, rule)
    assert read(new, "t").rule(rule.section, name) is not None
    back = Editor(new, "t").remove(section, name)
    assert back == data
