"""decide/page.py's decode: a page's bytes as the text a browser shows, the encoding found in
this order: a byte order mark, the Content-Type header's charset, a <meta> in the first 1,024
bytes, UTF-8 when the bytes are valid UTF-8, else windows-1252. Labels mean what the WHATWG
encoding standard says (iso-8859-1, latin1 and us-ascii are windows-1252); unknown labels are
ignored; decoding never raises (an invalid byte is U+FFFD)."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from website_health_check.decide.page import decode

pytestmark = pytest.mark.unit

REPLACEMENT = "\ufffd"
UTF8_E_ACUTE = "é".encode()  # b"\xc3\xa9": "Ã©" when read as windows-1252


# -- 1. the byte order mark beats everything -------------------------------------------------


@pytest.mark.parametrize(
    ("bom", "codec"),
    [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")],
)
@pytest.mark.parametrize("content_type", [None, "text/html", "text/html; charset=ISO-8859-1"])
def test_a_byte_order_mark_decides_and_is_not_part_of_the_text(
    bom: bytes, codec: str, content_type: str | None
) -> None:
    text = "<p>Größe – €</p>"
    assert decode(bom + text.encode(codec), content_type) == text


def test_a_bom_beats_the_header_and_the_meta() -> None:
    body = codecs.BOM_UTF8 + b'<meta charset="windows-1252">' + UTF8_E_ACUTE
    assert decode(body, "text/html; charset=windows-1252") == '<meta charset="windows-1252">é'


# -- 2. the header's charset -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html; charset=ISO-8859-1",
        "text/html; charset=iso-8859-1",
        'text/html; charset="ISO-8859-1"',
        "TEXT/HTML; CHARSET=Iso-8859-1",
        "text/html;charset=latin1",
        "text/html; charset=windows-1252",
        "text/html; charset=cp1252; foo=bar",
    ],
)
def test_the_header_charset_wins_over_valid_utf8(content_type: str) -> None:
    assert decode(UTF8_E_ACUTE, content_type) == "Ã©"


def test_the_header_charset_wins_over_the_meta() -> None:
    body = b'<html><head><meta charset="windows-1252"></head><body>' + UTF8_E_ACUTE + b"</body></html>"
    assert (
        decode(body, "text/html; charset=utf-8")
        == '<html><head><meta charset="windows-1252"></head><body>é</body></html>'
    )


@pytest.mark.parametrize("label", ["iso-8859-1", "ISO-8859-1", "latin1", "us-ascii", "windows-1252"])
def test_latin1_and_ascii_labels_mean_windows_1252(label: str) -> None:
    # 0x80-0x9F are control characters in ISO-8859-1 but € ‘ ’ “ ” in windows-1252, as browsers read them.
    assert decode(b"\x80 \x91q\x92 \x93q\x94 caf\xe9", f"text/html; charset={label}") == "€ ‘q’ “q” café"


def test_other_header_charsets_are_used() -> None:
    assert decode("Größe".encode("utf-16-le"), "text/plain; charset=utf-16le") == "Größe"
    assert decode(b"\xa4", "text/html; charset=iso-8859-15") == "€"  # ¤ in windows-1252
    assert decode("Привет".encode("koi8-r"), "text/html; charset=KOI8-R") == "Привет"


@pytest.mark.parametrize("label", ["x-klingon", "no-such-charset", "", "base64"])
def test_an_unknown_header_charset_is_ignored(label: str) -> None:
    content_type = f"text/html; charset={label}"
    assert decode("Größe".encode(), content_type) == "Größe"  # valid UTF-8: UTF-8
    assert decode(b"caf\xe9 \x80", content_type) == "café €"  # not UTF-8: windows-1252
    meta = b'<meta charset="iso-8859-15">\xa4'
    assert decode(meta, content_type) == '<meta charset="iso-8859-15">€'  # the meta still counts


# -- 3. <meta> in the first 1,024 bytes ------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/html", None, "text/html; charset=bogus"])
def test_meta_charset_is_used_without_a_header_charset(content_type: str | None) -> None:
    body = '<html><head><meta charset="windows-1252"></head><body>naïve ‘quotes’</body></html>'
    assert decode(body.encode("cp1252"), content_type) == body


@pytest.mark.parametrize(
    "tag",
    [
        b'<meta charset="iso-8859-15">',
        b"<meta charset=iso-8859-15>",
        b"<META CHARSET='ISO-8859-15'>",
        b'<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-15">',
        b"<meta content='text/html; charset=ISO-8859-15' http-equiv='content-type'>",
    ],
)
def test_both_meta_forms_are_read(tag: bytes) -> None:
    body = b"<html><head>" + tag + b"</head><body>\xa4</body></html>"
    assert decode(body, "text/html").endswith("<body>€</body></html>")  # ¤ in windows-1252


def test_meta_wins_over_valid_utf8() -> None:
    body = b'<meta charset="windows-1252">' + UTF8_E_ACUTE
    assert decode(body, "text/html") == '<meta charset="windows-1252">Ã©'


def test_a_meta_after_the_first_1024_bytes_is_not_read() -> None:
    padding = b"<!--" + b"x" * 1100 + b"-->"
    body = padding + b'<meta charset="iso-8859-15">\xa4'
    assert decode(body, "text/html").endswith("¤")  # not valid UTF-8: windows-1252, not iso-8859-15


# -- 4. UTF-8 when valid, 5. else windows-1252 -----------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/html", "text/html; charset=unknown-thing"])
def test_valid_utf8_is_utf8(content_type: str | None) -> None:
    text = "<p>Größe und Preis – € 😀</p>"
    assert decode(text.encode(), content_type) == text


@pytest.mark.parametrize("content_type", [None, "text/html"])
def test_anything_else_is_windows_1252(content_type: str | None) -> None:
    assert decode("<p>Café crème, naïve ‘quotes’ – €</p>".encode("cp1252"), content_type) == (
        "<p>Café crème, naïve ‘quotes’ – €</p>"
    )
    assert decode(b"<html><body>Caf\xe9 cr\xe8me</body></html>", content_type) == (
        "<html><body>Café crème</body></html>"
    )


def test_ascii_and_empty_bodies() -> None:
    assert decode(b"", None) == ""
    assert decode(b"", "text/html; charset=utf-8") == ""
    assert decode(b"<p>plain</p>", None) == "<p>plain</p>"


# -- never raises ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"ok \xff\xfe here", "text/html; charset=utf-8"),  # invalid UTF-8 in a declared UTF-8 page
        (codecs.BOM_UTF8 + b"ok \xc3 here", None),  # a BOM, then an invalid sequence
        (codecs.BOM_UTF16_LE + b"o\x00k\x00!", None),  # an odd number of UTF-16 bytes
        (codecs.BOM_UTF16_BE + b"\xd8\x00\x00a", None),  # a lone surrogate
        (b'<meta charset="utf-8">\xff', "text/html"),  # a meta that lies
        (b"\x81\x8d\x8f\x90\x9d", "text/html; charset=utf-8"),
    ],
)
def test_invalid_bytes_become_replacement_characters(body: bytes, content_type: str | None) -> None:
    assert REPLACEMENT in decode(body, content_type)


def test_the_bytes_windows_1252_leaves_undefined_do_not_raise() -> None:
    # 0x81, 0x8D, 0x8F, 0x90, 0x9D have no character in windows-1252 (Python's cp1252 refuses them).
    text = decode(b"\x81\x8d\x8f\x90\x9d caf\xe9", None)
    assert isinstance(text, str) and text.endswith(" café")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2048), content_type=st.none() | st.text(max_size=80))
def test_decode_never_raises(body: bytes, content_type: str | None) -> None:
    assert isinstance(decode(body, content_type), str)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=256),
    label=st.sampled_from(["utf-8", "iso-8859-1", "utf-16", "utf-16be", "shift_jis", "gb18030", "x"]),
    prefix=st.sampled_from(
        ["", "<meta charset={}>", '<meta http-equiv="Content-Type" content="charset={}">']
    ),
)
def test_decode_never_raises_for_declared_charsets(body: bytes, label: str, prefix: str) -> None:
    page = prefix.format(label).encode() + body
    assert isinstance(decode(page, f"text/html; charset={label}"), str)
    assert isinstance(decode(page, "text/html"), str)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_utf8_text_comes_back_as_it_was(text: str) -> None:
    # A page that declares another encoding in a <meta> is read in that one (as browsers do),
    # and a leading U+FEFF is a byte order mark, not text: neither is this property's case.
    assume("<meta" not in text.lower())
    assert decode(text.encode("utf-8"), "text/html") == text.removeprefix("\ufeff")
