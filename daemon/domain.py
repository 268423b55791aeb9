"""Domain objects: what a claim message *is*, independent of how it arrived.

Everything here is a frozen, slotted dataclass. Money is `Decimal`, never float.
Norwegian nouns are the standard's own words (krav, regning, takst, episode).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from daemon.masking import mask

# --------------------------------------------------------------------------- problems


class Layer(StrEnum):
    """Which layer of the message stack a problem was found in."""

    FILE = "file"  # size limits, unreadable bytes
    MIME = "mime"  # multipart/related structure, Content-ID references
    ENVELOPE = "envelope"  # SOAP 1.1 + ebMS 2.0 header
    AGREEMENT = "agreement"  # From/To/CPAId/Service/Action against the partner registry
    MSGHEAD = "msghead"  # KITH MsgHead 1.2 around the payload
    PAYLOAD = "payload"  # NPR-behandlerkravmelding / Behandlerkrav
    LEDGER = "ledger"  # duplicates and conflicts with earlier messages
    # the claiming institution is not (yet) in our registry, or not for this sender
    # (COM-09): the whole message is refused, and a resend after registering is processed
    REGISTRY = "registry"
    INTERNAL = "internal"  # a fault on our side, not the sender's


@dataclass(frozen=True, slots=True)
class Problem:
    """A technical error that makes a message unusable as a whole.

    `code` is from KITH code list 8221 (E10, T01, T02, T10, S01, X99, ...); `location`
    is an XPath-like path inside the layer, `line`/`column` point into that layer's
    document when known.
    """

    layer: Layer
    code: str
    text: str
    location: str = ""
    line: int | None = None
    column: int | None = None
    scheme: str = "8221"  # the code list `code` is from: 8221 technical, 8223 our remarks

    def __post_init__(self) -> None:
        # a text may quote what the sender wrote; it goes to the AppRec, the ledger and
        # the .err.json: never with a fødselsnummer in it
        object.__setattr__(self, "text", mask(self.text))
        object.__setattr__(self, "location", mask(self.location))

    def where(self) -> str:
        """A short human location, e.g. `payload /Melding/Institusjon[1] line 12`."""
        parts = [str(self.layer)]
        if self.location:
            parts.append(self.location)
        if self.line:
            parts.append(f"line {self.line}" + (f" col {self.column}" if self.column else ""))
        return " ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "layer": str(self.layer),
            "code": self.code,
            "text": self.text,
            "location": self.location,
            "line": self.line,
            "column": self.column,
            "scheme": self.scheme,
        }


# --------------------------------------------------------------------------- ebXML


@dataclass(frozen=True, slots=True)
class PartyRef:
    """An ebXML party: its id (type HER for the health network) and role."""

    party_id: str
    party_type: str
    role: str


@dataclass(frozen=True, slots=True)
class EbxmlHeader:
    """What the eb:MessageHeader (and its siblings) of an ebMS 2.0 message say."""

    from_party: PartyRef
    to_party: PartyRef
    cpa_id: str
    conversation_id: str
    service: str
    service_type: str | None
    action: str
    message_id: str
    timestamp: str
    ref_to_message_id: str | None = None
    ack_requested: bool = False
    ack_signed: bool = False
    duplicate_elimination: bool = False
    manifest: tuple[str, ...] = ()


# --------------------------------------------------------------------------- claim

# NPR-behandlerkravmelding typeTransaksjon (code list 7463): 1-3 are new bills (uten
# egenandel / ikke betalt / betalt egenandel), 4 corrects and 5 credits an earlier bill
TRANSACTION_CORRECTION = "4"
TRANSACTION_CREDIT = "5"
OSLO = ZoneInfo("Europe/Oslo")


@lru_cache(maxsize=65536)
def instant_of(stamp: str) -> str:
    """TransDatoTid as a UTC instant, for comparing bills: a time without an offset is
    Norwegian local time, as the NPR message is written in Norway. Remembered: the
    rules ask for it several times per bill (cProfile of a 100-bill claim)."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=OSLO)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=65536)
def _day_of(text: str) -> date | None:
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        return None


def pseudonym(secret: bytes, ident: str) -> str:
    """A patient's pseudonym: HMAC-SHA256 under a secret kept outside the ledger
    (`[keys] patient_secret`). Without the secret, a key cannot be turned back into a
    fødselsnummer by trying the few hundred thousand numbers of a birth year."""
    digest = hmac.new(secret, f"kravmottak:patient:{ident}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def legacy_pseudonym(ident: str) -> str:
    """The unkeyed pseudonym ledgers made before the HMAC (reversible by brute force):
    used only by `kravmottak db rekey-patients` to find and replace them."""
    return hashlib.sha256(f"kravmottak:patient:{ident}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Patient:
    """The patient a bill concerns. `ident` is a fødselsnummer or D-nummer.

    Personal data: never log this object. Its repr hides the identity and names.
    """

    ident: str | None = field(repr=False)
    ident_type: str | None
    birth_date: str | None
    sex: str | None
    family_name: str | None = field(default=None, repr=False)
    given_name: str | None = field(default=None, repr=False)
    # the pseudonym for duplicate checks (`pseudonym`, made by the reader with the
    # secret): the ledger never stores the identity itself
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Line:
    """One claimed service: an NLK/takst code (`Takst`) or a procedure code (`Kode`).

    kind: "takst" for Kontakt/Takst, "prosedyre" for Tjeneste/Tiltak/Prosedyre/Kode,
    "egenandel" for a Kontakt/Takst whose code the egenandel register names (the bill's
    egenandel part, judged by EG-01..12).
    code_system: for procedures the NPR Kodeverk attribute ("R" = radiology, slash-
    separated `kodeVerdi`); for takster None. `raw_code` is kept exactly as sent.
    """

    kind: str
    raw_code: str
    code_system: str | None
    count: int
    amount: Decimal  # per unit, as sent (takstBelop / kodeBelop)
    code_version: str | None = None
    source_line: int | None = None

    @property
    def total(self) -> Decimal:
        return self.amount * self.count


@dataclass(frozen=True, slots=True)
class Episode:
    episode_id: str
    debitor: str
    municipality: str | None
    patient: Patient
    contact_types: tuple[str, ...]
    diagnoses: tuple[str, ...]
    lines: tuple[Line, ...]
    # a Kontakt of type utredning/behandling/kontroll (8432: 1-3) with a Helseperson:
    # a consultation, whose simple (starred) analyses ISF finances (LAB-07)
    consultation: bool = False
    personnel: tuple[str, ...] = ()  # Helseperson/@polUtforende of its contacts (EG-06)


@dataclass(frozen=True, slots=True)
class Bill:
    """EnkeltRegning: the unit that is approved, reduced or rejected."""

    regning_nr: str
    uuid: str | None
    transaction_type: str
    claimed_at: str
    episode_id: str | None
    sum_amount: Decimal
    claim_basis: str
    egenandel_code: str | None
    episode: Episode | None
    source_line: int | None = None

    @property
    def lines(self) -> tuple[Line, ...]:
        return self.episode.lines if self.episode else ()

    @property
    def is_new(self) -> bool:
        return self.transaction_type not in (TRANSACTION_CORRECTION, TRANSACTION_CREDIT)

    @property
    def instant(self) -> str:
        return instant_of(self.claimed_at)

    @property
    def service_date(self) -> date | None:
        return _day_of(self.claimed_at[:10])

    @property
    def codes(self) -> str:
        """The code set of the bill, order-independent, for duplicate detection (COM-06)."""
        return ",".join(sorted(f"{line.raw_code}x{line.count}" for line in self.lines))


@dataclass(frozen=True, slots=True)
class Unit:
    """Enhet: the department that sends the claim."""

    enhet_id: str
    enhet_kode: str
    resh_id: str
    name: str | None
    claimed_count: int
    claimed_sum: Decimal
    bills: tuple[Bill, ...]


@dataclass(frozen=True, slots=True)
class Claim:
    """A whole NPR-behandlerkravmelding (root `Melding`)."""

    version: str
    period_from: str
    period_to: str
    extracted_on: str
    sender_reference: str
    institution_id: str
    units: tuple[Unit, ...]

    @property
    def bills(self) -> tuple[Bill, ...]:
        return tuple(b for u in self.units for b in u.bills)


@dataclass(frozen=True, slots=True)
class MsgHeadInfo:
    """The parts of the KITH MsgHead an answer has to refer back to."""

    msg_type: str
    msg_id: str
    gen_date: str
    sender_name: str | None
    sender_ids: tuple[tuple[str, str], ...]  # (type, id), e.g. ("HER", "8141253")
    payload_namespace: str | None


# --------------------------------------------------------------------------- decision


class Verdict(StrEnum):
    APPROVED = "approved"  # godkjent
    REDUCED = "reduced"  # avkortet: some lines rejected
    REJECTED = "rejected"  # avvist


@dataclass(frozen=True, slots=True)
class Remark:
    """One finding of a rule, told to the sender in the AppRec (OT = regningNr).

    `line` is the line's number within the bill (1-based) for line rules."""

    rule_id: str
    number: str  # the remark number sent as Error V (8223-style)
    text: str
    regning_nr: str
    line: int | None = None

    def __post_init__(self) -> None:  # see Problem: what we write never holds an fnr
        object.__setattr__(self, "text", mask(self.text))
        object.__setattr__(self, "regning_nr", mask(self.regning_nr))


@dataclass(frozen=True, slots=True)
class Exam:
    """One radiology exam as the same-day rules (RAD-06..11) see it: this message's
    lines, and the approved exams the ledger remembers for the same patient and day.

    `units`: 2 for a bilateral exam. `tele`: the teleradiology part (image, primary,
    secondary) or None for a whole exam. `ambulant`: the line claims the ambulant
    add-on (ZTX0AD) and was paid it. `institution_id` tells whose exam it is: a remark
    may describe the claiming institution's own exams, never another's."""

    code: str
    side: str | None
    modality: str
    kind: str
    regions: tuple[str, ...]
    units: int
    instant: str
    day: str
    regning_nr: str
    line: int
    where: str = ""
    institution_id: str = ""
    uuid: str | None = None
    tele: str | None = None
    ambulant: bool = False

    def describe(self) -> str:
        side = f"/{self.side}" if self.side else ""
        tele = f" {self.tele}" if self.tele else ""
        where = f", {self.where}" if self.where else f", regning {self.regning_nr}"
        return (
            f"{self.code}{side}{tele} ({self.modality or self.kind}, "
            f"{'+'.join(self.regions) or '-'}, {self.instant}{where})"
        )


@dataclass(frozen=True, slots=True)
class LineDecision:
    line: int  # 1-based position within the bill
    code: str
    count: int
    claimed: Decimal  # unit amount × antall, as sent
    approved: Decimal
    verdict: Verdict
    category: str | None = None  # refusjonskategori used for the amount
    payee: str | None = None  # who is paid for this line (LAB-10, RAD-15)
    exam: Exam | None = None  # a radiology line: what the same-day rules remember


@dataclass(frozen=True, slots=True)
class Payment:
    """What a bill moves for one payee: the settlement pays `approved` to `payee`.

    A bill usually has one; lab and radiology lines of one bill may go to two RHFs
    (LAB-10, RAD-15). A correction's payments are the differences from what each payee
    was paid before, a credit's are minus what each was paid. A rejected bill has
    payments of 0, so the payee's vedtak shows it as rejected."""

    payee: str | None
    claimed: Decimal
    approved: Decimal
    # 'refusjon', or 'egenandel': an exempt egenandel paid to the institution (EG-02)
    kind: str = "refusjon"


@dataclass(frozen=True, slots=True)
class BillDecision:
    regning_nr: str
    uuid: str | None
    verdict: Verdict
    claimed: Decimal
    approved: Decimal
    remarks: tuple[Remark, ...] = ()
    lines: tuple[LineDecision, ...] = ()
    payee: str | None = None  # who is paid for the approved amount (LAB-10)
    transaction_type: str = "1"
    payments: tuple[Payment, ...] = ()


# one evaluation: (rule_id, regning_nr or "", line number or 0, fired, inputs)
TraceEntry = tuple[str, str, int, bool, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for a whole claim; `trace` says which rules fired and on what."""

    bills: tuple[BillDecision, ...]
    trace: tuple[TraceEntry, ...] = ()  # the evaluations that fired, with their inputs
    evaluations: int = 0  # how many rule evaluations ran in all
    # (patient key, day, version) of every day the same-day rules judged against: the
    # ledger records the decision only if none of those days has changed since
    same_day_basis: tuple[tuple[str, str, int], ...] = ()

    @property
    def remarks(self) -> tuple[Remark, ...]:
        return tuple(r for b in self.bills for r in b.remarks)

    @property
    def approved_total(self) -> Decimal:
        return sum((b.approved for b in self.bills), Decimal("0"))
