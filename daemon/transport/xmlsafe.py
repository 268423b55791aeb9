"""Hardened XML parsing: no entities, no DTD loading, no network, no file I/O, bounded size.

Every byte string that came from outside goes through `parse_untrusted`. It refuses
documents that declare a DTD at all (the health network's messages never need one;
refusing them closes XXE, parameter-entity and "billion laughs" attacks in one place)
and reports the reason as a `Problem` instead of raising.

Three locks, each enough on its own against a DOCTYPE's external subset:

1. the prolog is checked for a DOCTYPE *after decoding* (a UTF-8 BOM, UTF-16/32 or a
   declared encoding such as UTF-7 do not hide it) and without a length limit, so
   leading comments of any size do not push it out of sight;
2. the parser has a resolver that answers every external reference (DTD, entity,
   anything libxml2 would load by URL) with an empty document: no file, FIFO or
   URL is ever opened, so no answer can depend on what exists on our disk;
3. after parsing, any DOCTYPE or internal subset the tree carries is refused.

Before parsing, the markup is counted (every element, comment and processing
instruction starts with `<`, every attribute has an `=`), so a payload of millions
of tiny elements is refused before libxml2 builds a tree for it (`max_nodes`).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from lxml import etree

from daemon.domain import Layer, Problem

# what every parse of untrusted bytes sets (the tree parser here, the streamed reader's
# iterparse in daemon.claims.stream)
SAFE_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
    "remove_comments": False,
}
_PARSER_OPTIONS = {
    **SAFE_OPTIONS,
    "collect_ids": False,  # note: with this, libxml2 asks for the external subset; see _Refuse
}

# element, comment and PI count (upper bound: each needs a '<') and attribute count
# (upper bound: each needs a '='); a real claim has about one '<' per 40 bytes
DEFAULT_MAX_NODES = 1_000_000
DEFAULT_MAX_ATTRIBUTES = 2_000_000

DOCTYPE_TEXT = "dokumenttypedeklarasjon (DOCTYPE/DTD) er ikke tillatt"


class _Refuse(etree.Resolver):
    """Answers every external load with an empty document: nothing is ever opened."""

    def resolve(self, url, public_id, context):
        return self.resolve_string("", context)


def new_parser() -> etree.XMLParser:
    """A fresh hardened parser (parsers are not thread-safe; make one per use)."""
    parser = etree.XMLParser(**_PARSER_OPTIONS)
    parser.resolvers.add(_Refuse())
    return parser


@dataclass(frozen=True, slots=True)
class Parsed:
    root: etree._Element | None
    problem: Problem | None


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_NO_BOM = (  # the first '<' in a wide encoding without a BOM (XML 1.0 appendix F)
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<", "utf-16-be"),
    (b"<\x00", "utf-16-le"),
)
_DECLARED = re.compile(rb"""<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")
_ASCII_SUPERSETS = {"utf-8", "ascii", "latin-1", "cp1252"} | {f"iso8859-{n}" for n in range(2, 17)}


def _decoded(data: bytes) -> bytes | str:
    """The document as the parser will read it: bytes when the encoding keeps ASCII
    markup as ASCII bytes, else the decoded text (UTF-16/32, UTF-7, EBCDIC ...)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :] if encoding == "utf-8-sig" else data.decode(encoding, "replace")
    for start, encoding in _NO_BOM:
        if data.startswith(start):
            return data.decode(encoding, "replace")
    declared = _DECLARED.match(data)
    if declared:
        try:
            name = codecs.lookup(declared.group(1).decode("ascii")).name
        except LookupError:  # unknown to Python: the resolver and the tree check hold
            return data
        if name not in _ASCII_SUPERSETS:
            return data.decode(name, "replace")
    return data


_SPACE_B, _SPACE_S = re.compile(rb"\s*"), re.compile(r"\s*")


def _declares_doctype(data: bytes) -> bool:
    """True when the prolog (before the root element) holds a DOCTYPE.

    Checked before lxml sees the bytes, after decoding, in linear time over the whole
    prolog however long its comments are."""
    text = _decoded(data)
    wide = isinstance(text, str)
    space = _SPACE_S if wide else _SPACE_B

    def lit(s: str):
        return s if wide else s.encode("ascii")

    i = 0
    while True:
        i = space.match(text, i).end()
        if text.startswith(lit("<?"), i):
            close = lit("?>")
        elif text.startswith(lit("<!--"), i):
            close = lit("-->")
        else:
            return text[i : i + 9].upper() == lit("<!DOCTYPE")
        end = text.find(close, i + 2)
        if end < 0:
            return False  # never closed: not well-formed, the parser says where
        i = end + len(close)


def parse_untrusted(
    data: bytes,
    layer: Layer,
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
) -> Parsed:
    """Parse `data` safely; on failure return a T01 problem naming line and column."""
    if _declares_doctype(data):
        return Parsed(None, Problem(layer, "T01", DOCTYPE_TEXT, "/", 1))
    nodes, attributes = data.count(b"<"), data.count(b"=")
    if nodes > max_nodes:
        text = f"dokumentet har over {max_nodes} XML-noder; grensen er nådd, det er ikke lest"
        return Parsed(None, Problem(layer, "T99", text, "/"))
    if attributes > max_attributes:
        text = f"dokumentet har over {max_attributes} attributter; det er ikke lest"
        return Parsed(None, Problem(layer, "T99", text, "/"))
    parser = new_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        text = f"ikke velformet XML: {exc.msg}"
        return Parsed(None, Problem(layer, "T01", text, "", line, column))
    except ValueError as exc:  # e.g. unicode strings with encoding declaration
        return Parsed(None, Problem(layer, "T01", f"uleselig XML: {exc}"))
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.system_url:
        return Parsed(None, Problem(layer, "T01", DOCTYPE_TEXT, "/", 1))
    # Without a DTD no entity can be declared, and an undeclared reference is a
    # well-formedness error above, so no entity node can survive to this point.
    return Parsed(root, None)
