"""Big claims read as a stream (#17.4): bounded memory whatever the number of bills.

A payload above `[intake] stream_above_bytes` is not parsed into one tree. lxml's
`iterparse` reads it once; each `EnkeltRegning` and each `Pasient` is validated on its
own against the project's schema (both are global elements of NPR-BKM 0.78, so the
subtree is checked as the schema defines it, with the `Pasient`'s identity
constraints), checked for over-long values, turned into rows of a spill file and
dropped from the tree. What is left is a skeleton (the MsgHead, Melding, Institusjon,
Enhet and Krav with the first bill), validated whole like any payload.

The spill is a SQLite file in the work area (`work/.spill-<hash>.sqlite`, a hidden
name the scan never claims): bills in file order, episodes by id, and later the
rules' state that spans chunks and every bill's decision (`daemon.rules.chunked`).
Its name is unlinked as soon as it is open (SQLite without a journal never opens the
path again), so a kill at any instant leaves nothing behind: the message is read again
from its first byte at restart (nothing of it was recorded).

The schema orders `Institusjon` as one `Enhet` (with every bill) before the `Pasient`
elements, so bills meet their episodes only once the whole payload is read: that is
why the bills wait in the spill and are judged in a second pass.
"""

from __future__ import annotations

import dataclasses
import io
import operator
import pickle
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from lxml import etree

from daemon.claims.read import _episodes, bill_of, egenandel_takster
from daemon.claims.validate import (
    BKM_183,
    CONTENT,
    MSGHEAD,
    NPR_BKM,
    _overlong,
    validate_root,
)
from daemon.domain import Bill, Episode, Layer, Problem
from daemon.records import Context, Work
from daemon.schemas import error_text
from daemon.transport.xmlsafe import DOCTYPE_TEXT, SAFE_OPTIONS, _declares_doctype

N = f"{{{NPR_BKM}}}"
KRAV = f"{CONTENT}/Melding/Institusjon/Enhet/Krav"
INSTITUSJON = f"{CONTENT}/Melding/Institusjon"
DSIG = b"http://www.w3.org/2000/09/xmldsig#"
SPILL_PREFIX = ".spill-"
STREAMED = {f"{N}EnkeltRegning", f"{N}Pasient"}  # the subtrees validated and dropped one by one
MAX_SUBTREE_ERRORS = 100  # XSD errors kept from the streamed subtrees (the rest counted)
_ITERPARSE = SAFE_OPTIONS  # as the tree parser (daemon.transport.xmlsafe)


class _Pickler(pickle.Pickler):
    """Dataclasses pickled as (class, field values): the standard reduction of a slotted
    dataclass asks `dataclasses.fields` on every object, which took half the time of a
    streamed claim (cProfile of a 10 MB claim: 4 of 20 s in `_dataclass_setstate`)."""

    def reducer_override(self, obj):
        get = _getters.get(type(obj), False)
        if get is False:
            get = _getters[type(obj)] = _getter(type(obj))
        if get is None:
            return NotImplemented
        return type(obj), get(obj)


_getters: dict[type, object] = {}


def _getter(cls: type):
    """A function giving a dataclass's init fields as a tuple, or None for anything
    that is not a dataclass made of init fields only."""
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        return None
    fields = dataclasses.fields(cls)
    if not all(f.init for f in fields):
        return None
    names = [f.name for f in fields]
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return operator.attrgetter(*names)


def dumps(value: object) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


loads = pickle.loads  # only ever of what `dumps` wrote into our own spill


def wants_stream(work: Work, ctx: Context) -> bool:
    """Is this payload (after decryption and inflation) read as a stream? Any payload
    over `[intake] stream_above_bytes`; a signed one is then verified whole or refused
    (`Intake._run_streamed`)."""
    payload = work.payload
    return payload is not None and len(payload) > ctx.settings.intake.stream_above_bytes


def signed(payload: bytes) -> bool:
    """Does the payload carry an XML signature (the MsgHead's enveloped one)? Its digest
    is over the canonical form of the whole MsgHead: that cannot be streamed here."""
    return DSIG in payload


def spill_path(work_dir: Path, content_hash: str) -> Path:
    return work_dir / f"{SPILL_PREFIX}{content_hash[:32]}.sqlite"


def remove_spills(work_dir: Path, content_hash: str | None = None) -> list[str]:
    """Remove the spill of one message (or every spill: at start). Returns the names."""
    pattern = f"{SPILL_PREFIX}{content_hash[:32] if content_hash else '*'}.sqlite*"
    removed = []
    for p in work_dir.glob(pattern):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


class Spill:
    """The spill file of one streamed message: rows the rules read back in chunks.
    Not durable on purpose (no fsync, no journal): it is thrown away after the answer,
    and after a crash the message is read again."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA temp_store = FILE;
            PRAGMA cache_size = -8000;
            CREATE TABLE bills (pos INTEGER PRIMARY KEY, uuid TEXT, ttype TEXT,
                                episode_id TEXT, blob BLOB);
            CREATE TABLE episodes (episode_id TEXT PRIMARY KEY, patient INTEGER, blob BLOB);
            CREATE TABLE shared (episode_id TEXT PRIMARY KEY);
            """
        )
        self.db.execute("BEGIN")
        # unlinked while open: SQLite without a journal never opens the path again, and
        # a kill at any instant leaves nothing behind (the kernel frees it)
        path.unlink()

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            self.path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- filling

    def add_bill(self, pos: int, el: etree._Element) -> None:
        attrs = dict(el.attrib)
        uuid = attrs.get("uuid")
        self.db.execute(
            "INSERT INTO bills VALUES (?, ?, ?, ?, ?)",
            (
                pos,
                uuid.strip().upper() if uuid else None,
                attrs.get("typeTransaksjon", ""),
                attrs.get("episodeID"),
                dumps((attrs, el.sourceline)),
            ),
        )

    def add_patient(self, index: int, episodes: list[Episode]) -> None:
        for ep in episodes:
            row = self.db.execute(
                "SELECT patient FROM episodes WHERE episode_id = ?", (ep.episode_id,)
            ).fetchone()
            if row is not None and row[0] != index:
                self.db.execute("INSERT OR IGNORE INTO shared VALUES (?)", (ep.episode_id,))
            self.db.execute(
                "INSERT OR REPLACE INTO episodes VALUES (?, ?, ?)",
                (ep.episode_id, index, dumps(ep)),
            )

    # ---------------------------------------------------------------- reading

    def shared_episodes(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT episode_id FROM shared ORDER BY 1")]

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM bills").fetchone()[0]

    def bills(self, chunk: int) -> Iterator[list[tuple[int, Bill]]]:
        """The bills in file order, joined to their episodes, `chunk` at a time."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT b.pos, b.blob, e.blob FROM bills b"
                " LEFT JOIN episodes e ON e.episode_id = b.episode_id"
                " WHERE b.pos > ? ORDER BY b.pos LIMIT ?",
                (last, chunk),
            ).fetchall()
            if not rows:
                return
            out = []
            for pos, blob, episode in rows:
                attrs, line = pickle.loads(blob)
                joined = episode is not None and attrs.get("episodeID")
                ep = pickle.loads(episode) if joined else None
                out.append((pos, bill_of(attrs, line, ep)))
            last = rows[-1][0]
            yield out

    def light_bills(self) -> Iterator[tuple[str, Decimal, str]]:
        """(typeTransaksjon, sumBelop, TransDatoTid) of every bill, in file order: what
        the claim's totals (COM-04) and the backdating check need."""
        for (blob,) in self.db.execute("SELECT blob FROM bills ORDER BY pos"):
            attrs, _line = pickle.loads(blob)
            sum_text = attrs.get("sumBelop")
            amount = Decimal(sum_text) if sum_text else Decimal(0)
            yield attrs.get("typeTransaksjon", ""), amount, attrs.get("TransDatoTid", "")


@dataclass
class Streamed:
    """What the streamed read found: the skeleton root (MsgHead without the streamed
    subtrees), the spill, and the problems."""

    root: etree._Element | None
    spill: Spill
    problems: list[Problem]


def stream_read(work: Work, ctx: Context, spill: Spill) -> Streamed:
    """Read the payload once: every bill and patient validated on its own, spilled, and
    dropped; the skeleton validated as a whole. Problems as `validate` reports them."""
    payload = work.payload
    if _declares_doctype(payload):
        return Streamed(None, spill, [Problem(Layer.MSGHEAD, "T01", DOCTYPE_TEXT, "/", 1)])
    schema = ctx.schemas.msghead
    problems: list[Problem] = []
    errors = 0
    bills = patients = 0
    first_bill: etree._Element | None = None
    secret = ctx.patient_secret
    copay = egenandel_takster(ctx)
    nodes = ctx.settings.intake.max_xml_nodes
    every = ctx.settings.intake.progress_every_bills
    parser = etree.iterparse(
        io.BytesIO(payload), events=("start", "end", "comment", "pi"), **_ITERPARSE
    )
    depth = inside = outside = 0  # depth in a streamed subtree; nodes in it; outside all
    try:
        for event, el in parser:
            if event != "end":
                # the node cap of `parse_untrusted` for the skeleton and for each subtree:
                # checked as each node starts, before a bomb of tiny elements is built
                if depth:
                    depth += event == "start"
                    inside += 1
                elif event == "start" and el.tag in STREAMED and _in_npr(el):
                    depth, inside = 1, 1
                else:
                    outside += 1
                if inside > nodes or outside > nodes:
                    text = (
                        f"dokumentet har over {nodes} XML-noder; grensen er nådd, det er ikke lest"
                    )
                    return Streamed(None, spill, [Problem(Layer.MSGHEAD, "T99", text, "/")])
                continue
            if not depth:
                continue
            depth -= 1
            if depth:
                continue
            parent = el.getparent()
            if el.tag == f"{N}EnkeltRegning":
                bills += 1
                where = f"{KRAV}/EnkeltRegning[{bills}]"
                if first_bill is None:
                    first_bill = el  # stays in the skeleton (Krav needs one)
                else:
                    errors += _check(schema, el, where, problems, errors)
                spill.add_bill(bills - 1, el)
                if ctx.progress is not None and bills % every == 0:
                    ctx.progress("read", bills, 0)  # how many in all: known at the end
                if el is not first_bill:
                    parent.remove(el)
            else:
                patients += 1
                where = f"{INSTITUSJON}/Pasient[{patients}]"
                errors += _check(schema, el, where, problems, errors)
                if not errors:
                    spill.add_patient(patients, _episodes(el, secret, copay))
                parent.remove(el)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        text = f"ikke velformet XML: {exc.msg}"
        return Streamed(None, spill, [Problem(Layer.MSGHEAD, "T01", text, "", line, column)])
    root = parser.root
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.system_url:
        return Streamed(None, spill, [Problem(Layer.MSGHEAD, "T01", DOCTYPE_TEXT, "/", 1)])
    if errors > MAX_SUBTREE_ERRORS:
        text = f"{errors - MAX_SUBTREE_ERRORS} flere valideringsfeil i regninger og pasienter"
        problems.append(Problem(Layer.PAYLOAD, "T02", text, INSTITUSJON))
    return Streamed(root, spill, problems)


def _in_npr(el: etree._Element) -> bool:
    parent = el.getparent()
    return parent is not None and etree.QName(parent).namespace == NPR_BKM


def _check(
    schema: etree.XMLSchema, el: etree._Element, where: str, problems: list[Problem], errors: int
) -> int:
    """Validate one streamed subtree as the schema's global element it is; the number
    of errors found (the first MAX_SUBTREE_ERRORS of all are kept)."""
    found = 0
    for p in _overlong(el):
        found += 1
        if errors + found <= MAX_SUBTREE_ERRORS:
            problems.append(p)
    if schema.validate(el):
        return found
    for entry in schema.error_log:
        found += 1
        if errors + found <= MAX_SUBTREE_ERRORS:
            text = f"XML validerer ikke: {error_text(entry.message)}"
            problems.append(
                Problem(Layer.PAYLOAD, "T02", text, where, entry.line or None, entry.column or None)
            )
    return found


def stream_validate(work: Work, ctx: Context, spill: Spill) -> Work:
    """The streamed `validate` + the reader's checks, for a payload over the limit."""
    found = stream_read(work, ctx, spill)
    if found.root is None:
        return work.failed(*found.problems)
    work = validate_root(work, ctx, found.root, skeleton=True)
    if work.problems or found.problems:
        return work.failed(*found.problems)
    melding = found.root.find(f"{{{MSGHEAD}}}Document/{{{MSGHEAD}}}RefDoc/{{{MSGHEAD}}}Content/*")
    if etree.QName(melding).namespace == BKM_183:
        text = (
            "Behandlerkrav 1.8.3 (privatpraktiserende) er gyldig, men behandles ikke av "
            "denne mottakeren; send NPR-behandlerkravmelding 0.78"
        )
        return work.failed(Problem(Layer.PAYLOAD, "T10", text, CONTENT))
    shared = spill.shared_episodes()
    if shared:
        text = (
            f"episodeID {', '.join(shared)} finnes under flere pasienter; regninger som viser "
            "til dem kan ikke knyttes til én pasient"
        )
        return work.failed(Problem(Layer.PAYLOAD, "T99", text, INSTITUSJON))
    return work.with_(msghead=found.root)
