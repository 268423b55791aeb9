"""Hardened XML parsing: no entities, no DTD loading, no network, bounded size.

Every byte string that came from outside goes through `parse_untrusted`. It refuses
documents that declare a DTD at all (the health network's messages never need one;
refusing them closes XXE, parameter-entity and "billion laughs" attacks in one place)
and reports the reason as a `Problem` instead of raising.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from daemon.domain import Layer, Problem

_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": False,
    "collect_ids": False,
}


def new_parser() -> etree.XMLParser:
    """A fresh hardened parser (parsers are not thread-safe; make one per use)."""
    return etree.XMLParser(**_PARSER_OPTIONS)


@dataclass(frozen=True, slots=True)
class Parsed:
    root: etree._Element | None
    problem: Problem | None


_PROLOG = re.compile(rb"\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*)*<!DOCTYPE", re.DOTALL)


def _declares_doctype(data: bytes) -> bool:
    """True when the prolog (before the root element) holds a DOCTYPE.

    Checked before lxml sees the bytes, so not even an external subset is opened.
    """
    return _PROLOG.match(data, 0, 65536) is not None


def parse_untrusted(data: bytes, layer: Layer) -> Parsed:
    """Parse `data` safely; on failure return a T01 problem naming line and column."""
    if _declares_doctype(data):
        text = "dokumenttypedeklarasjon (DOCTYPE/DTD) er ikke tillatt"
        return Parsed(None, Problem(layer, "T01", text, "/", 1))
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
    if docinfo.doctype or docinfo.internalDTD is not None:
        text = "dokumenttypedeklarasjon (DOCTYPE/DTD) er ikke tillatt"
        return Parsed(None, Problem(layer, "T01", text, "/", 1))
    # Without a DTD no entity can be declared, and an undeclared reference is a
    # well-formedness error above, so no entity node can survive to this point.
    return Parsed(root, None)
