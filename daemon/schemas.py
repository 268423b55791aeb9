"""The project's XSDs (in `schemas/`), compiled once at start.

Three driver schemas cover every inbound layer and the receipt: `envelope.xsd` (SOAP
1.1 + ebMS 2.0 + XML-DSig), `msghead.xsd` (MsgHead 1.2 with NPR-behandlerkravmelding
0.78 or Behandlerkrav 1.8.3 in its strict `Content`), `apprec.xsd` (AppRec 1.0); a
fourth, `vedtak.xsd`, covers the utbetalingsvedtak we send (MsgHead 1.2 with eResept M22
Oppgjørsresultat or our M23-style Utbetaling). Imports are relative file paths; the
schema parser has the network switched off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from daemon import resources
from daemon.domain import Layer, Problem
from daemon.masking import mask

SCHEMA_DIR = resources.schema_dir()


class SchemaError(Exception):
    """A project schema is missing or does not compile."""


def _compile(path: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        return etree.XMLSchema(etree.parse(str(path), parser))
    except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class Schemas:
    envelope: etree.XMLSchema
    msghead: etree.XMLSchema
    apprec: etree.XMLSchema
    vedtak: etree.XMLSchema  # our ERM22/ERM23 MsgHeads (daemon.settlement.vedtak)

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR) -> Schemas:
        return cls(
            envelope=_compile(directory / "envelope.xsd"),
            msghead=_compile(directory / "msghead.xsd"),
            apprec=_compile(directory / "apprec.xsd"),
            vedtak=_compile(directory / "vedtak.xsd"),
        )


def element_path(el: etree._Element) -> str:
    """`/MsgHead/Document/.../EnkeltRegning[2]`: local names, with a position where
    an element has same-named siblings."""
    steps = []
    while el is not None:
        name = etree.QName(el).localname
        parent = el.getparent()
        if parent is not None:
            same = [s for s in parent if s.tag == el.tag]
            if len(same) > 1:
                name += f"[{same.index(el) + 1}]"
        steps.append(name)
        el = parent
    return "/" + "/".join(reversed(steps))


def readable_path(root: etree._Element, path: str | None) -> str:
    """lxml gives `/*/*[2]/...`; turn it into names the sender recognises."""
    if not path:
        return ""
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return path
    if not found or not isinstance(found[0], etree._Element):
        return path
    return element_path(found[0])


# "{http://...}Status" -> "Status"; an enumeration "{'1', '2'}" in a message is kept
NAMESPACE_IN_MESSAGE = re.compile(r"\{(?:https?|urn):[^}]*\}")


# libxml2 quotes the offending value; the sender has it, and it may be a fødselsnummer
# put in the wrong field (komNrHjem, uuid): the answer names the element, the attribute
# and the rule broken, never the value
QUOTED_VALUES = (
    (re.compile(r"The value '[^']*'"), "The value"),
    (re.compile(r"(: )'[^']*'( is not a valid value)"), r"\1the value\2"),
    (re.compile(r"key-sequence \[[^\]]*\]"), "key-sequence"),
)


def error_text(message: str) -> str:
    """libxml2's message without namespaces and without the values it quotes."""
    text = NAMESPACE_IN_MESSAGE.sub("", message)
    for pattern, replacement in QUOTED_VALUES:
        text = pattern.sub(replacement, text)
    return mask(text)


def validate(schema: etree.XMLSchema, root: etree._Element, layer: Layer) -> list[Problem]:
    """Every schema error of `root`, each with its path, line and column."""
    if schema.validate(root):
        return []
    problems = []
    for entry in schema.error_log:
        text = error_text(entry.message)
        problems.append(
            Problem(
                layer,
                "T02",
                f"XML validerer ikke: {text}",
                readable_path(root, entry.path),
                entry.line or None,
                entry.column or None,
            )
        )
    return problems
