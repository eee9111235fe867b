"""A page's bytes as text, decoded the way browsers find a page's encoding (pure, no I/O).

The expected text is searched in what a person would see, so the body is decoded as a browser
would (the WHATWG encoding sniffing order, simplified to what a health check needs):

1. a byte order mark (UTF-8, UTF-16 LE/BE): it beats everything else, as in browsers;
2. the ``charset`` of the Content-Type header, when it names an encoding;
3. ``<meta charset=...>`` or ``<meta http-equiv="Content-Type" content="...; charset=...">`` in
   the first 1,024 bytes (HTML pages only, or no Content-Type at all);
4. UTF-8 when the bytes are valid UTF-8 (a page cut at the body limit may end mid-character);
5. windows-1252, the web's legacy default.

As the encoding standard says, the labels ``iso-8859-1``, ``latin1`` and ``us-ascii`` mean
windows-1252 (bytes 0x80-0x9F are € ‘ ’ ... there, not control characters), and a ``<meta>``
naming UTF-16 means UTF-8 (a page whose bytes could be read as ASCII to find it is no UTF-16).
Unknown labels are ignored. Decoding never raises: an invalid byte becomes U+FFFD.

Why it matters: a UTF-8 page served as ``text/html`` without a charset (the default of nginx
and Apache for static files), or a Latin-1 page without any Content-Type, was reported DOWN
("expected text missing") by a decoder that guessed ISO-8859-1 or UTF-8 from the header alone.
"""

from __future__ import annotations

import codecs
import re

META_PRESCAN_BYTES = 1024
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Labels the encoding standard maps elsewhere than Python's codec of the same name.
_WHATWG = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "utf-16": "utf-16-le",
    "unicode": "utf-16-le",
    "x-user-defined": "cp1252",
}
_CHARSET = re.compile(rb"""charset\s*=\s*["']?\s*([A-Za-z0-9._:+-]{1,40})""", re.IGNORECASE)
_META = re.compile(rb"<meta\b[^>]*>", re.IGNORECASE)


def decode(body: bytes, content_type: str | None) -> str:
    """``body`` as text (see the module's order); never raises."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(encoding, errors="replace")
    declared = _label(_header_charset(content_type))
    if declared is None and _may_carry_meta(content_type):
        declared = _meta_charset(body[:META_PRESCAN_BYTES])
    if declared is not None:
        return body.decode(declared, errors="replace")
    if _is_utf8(body):
        return body.decode("utf-8", errors="replace")
    return body.decode("cp1252", errors="replace")


def encoding_label(label: str) -> str | None:
    """The Python codec a charset label means on the web, or None for an unknown label."""
    return _label(label.encode("ascii", "ignore"))


def _header_charset(content_type: str | None) -> bytes | None:
    if not content_type:
        return None
    match = _CHARSET.search(content_type.encode("latin-1", "replace"))
    return match.group(1) if match else None


def _may_carry_meta(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("", "text/html", "application/xhtml+xml")


def _meta_charset(head: bytes) -> str | None:
    for tag in _META.finditer(head):
        match = _CHARSET.search(tag.group(0))
        found = _label(match.group(1)) if match else None
        if found is not None:
            return "utf-8" if found.startswith("utf-16") else found
    return None


def _label(raw: bytes | None) -> str | None:
    if not raw:
        return None
    label = raw.decode("ascii", "ignore").strip().lower()
    if label in _WHATWG:
        return _WHATWG[label]
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    if not info._is_text_encoding:  # type: ignore[attr-defined]  # e.g. "base64", "rot13"
        return None
    return info.name


def _is_utf8(body: bytes) -> bool:
    """Valid UTF-8, allowing an incomplete character at the very end (a body cut at the limit)."""
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(body, final=False)
    except UnicodeDecodeError:
        return False
    return True
