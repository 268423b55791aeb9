"""Realistic inbound ebMS messages with NPR-behandlerkravmelding 0.78 claims.

    .venv/bin/python benchmarks/generate.py --messages 1000 --bills 3 --lines 4 \\
        --radiology 0.3 --invalid 0.05 --seed 7 --sign --encrypt --gzip \\
        --config SANDBOX/kravmottak.toml --register --out SANDBOX/var/inbox

What a hospital's ebXML handler would drop in our inbox, as the real registers make
them: made-up patients with valid fødselsnumre (mod 11, one patient per bill), real NLK
codes at their real rates (`config/tariffs`), real radiology codes from the radiology
register with the amount the rules compute (`daemon.rules.radiology.amount_for`),
komNrHjem spread over real municipality numbers of the four RHFs, service dates in the
months before the sandboxes' fixed day (2026-11-23), the institutions of a registry.

Every choice avoids what the rules refuse, so a line is approved unless it was made
wrong on purpose (`--invalid`: a share of the lines gets one defect, and the defect
names the rule that must fire). `plan()` returns the claims as values with what the
daemon should decide for each bill; `generate()` renders them; `expected_approved()`
tells a checker what each bill should be paid.

Deterministic: the same arguments give the same bytes, encryption included (the CMS
content key and padding come from the seed: test data only). With `--sign` the
sender's key pair is derived from the seed as well, and written with a partner entry
to `OUT/sender/` (`--register` adds it to a sandbox's partners.toml).
"""

from __future__ import annotations

import argparse
import functools
import gzip as gzip_module
import math
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from xml.sax.saxutils import quoteattr

from asn1crypto import cms as asn1cms
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from daemon.registers import ncrp, registry, tariffs  # noqa: E402
from daemon.registers.radiology_tariffs import RadCode  # noqa: E402
from daemon.registers.registry import Institution, Partner  # noqa: E402
from daemon.registers.rhf import RhfTable  # noqa: E402
from daemon.registers.tariffs import NlkCode, Tariffs  # noqa: E402
from daemon.rules import lab as lab_rules  # noqa: E402
from daemon.rules import radiology as radiology_rules  # noqa: E402
from daemon.tools.wrap import wrap  # noqa: E402
from daemon.transport import keys, trust  # noqa: E402

TODAY = date(2026, 11, 23)  # the sandboxes' fixed day (`[intake] fixed_time`)
DEMO_HER, DEMO_CPA = "90001", "kravmottak:demo:1"
OUR_HER = "79768"
CERTS_FROM = datetime(2025, 1, 1, tzinfo=UTC)  # the sender certificate: 2025-2034
ZERO, CENT = Decimal("0"), Decimal("0.01")
HPV_DIAGNOSIS = "Z124"  # Z12.4 screening for cervical cancer: qualifies an HPV test (LAB-08)
CONSULTATION_SHARE = 0.3  # lab bills taken in a consultation (LAB-07: no starred codes)
RETIREES_FROM = 1935  # the oldest patients are born this year
# who gets lab bills: institutions approved for `lab`; a medical-genetics lab (services
# `genetics` only) may only claim MG codes (LAB-05), which the generator never makes

# Real municipality numbers (2024 structure) of each RHF's counties (config/tariffs/rhf.toml).
MUNICIPALITIES = {
    "Helse Sør-Øst RHF": (
        "0301", "3101", "3103", "3105", "3107", "3201", "3203", "3205", "3207", "3209",
        "3301", "3303", "3305", "3401", "3403", "3405", "3407", "3411", "3901", "3903",
        "3905", "3907", "3909", "4001", "4003", "4005", "4201", "4202", "4203", "4204",
    ),
    "Helse Vest RHF": (
        "1101", "1103", "1106", "1108", "1119", "1120", "1124", "1127",
        "4601", "4602", "4613", "4614", "4624", "4626", "4627", "4631", "4640", "4647",
    ),
    "Helse Midt-Norge RHF": (
        "1505", "1506", "1511", "1515", "1516", "1520", "1577",
        "5001", "5006", "5007", "5021", "5025", "5028", "5031", "5035", "5037", "5038",
    ),
    "Helse Nord RHF": (
        "1804", "1806", "1813", "1820", "1824", "1833", "1860", "1865", "1870",
        "5501", "5503", "5601", "5603", "5605", "5607",
    ),
}  # fmt: skip
# where patients live: roughly the RHFs' shares of the population
RHF_WEIGHTS = {
    "Helse Sør-Øst RHF": 56,
    "Helse Vest RHF": 20,
    "Helse Midt-Norge RHF": 14,
    "Helse Nord RHF": 10,
}

LAB_DEFECTS = ("LAB-09", "LAB-02", "LAB-02-expired", "LAB-02-outside", "LAB-03")
LAB_DEFECTS_CONSULTATION = ("LAB-07",)  # a starred code in a consultation
LAB_DEFECTS_NO_DIAGNOSIS = ("LAB-08",)  # an HPV test without a qualifying condition
RAD_DEFECTS = ("RAD-14", "RAD-03", "RAD-02", "RAD-13")
RAD_DEFECTS_NUCLEAR = ("RAD-04",)  # no radiopharmaceutical
BAD_CODE_STRINGS = (  # RAD-03, each with its position error
    "{code}//ZTX0XA",  # the side code in position 3
    "{code}/ZTX0BA",  # a teleradiology code in position 2
    "{code}////",  # an empty fifth field (trailing empties are tolerated up to the 4th)
    "{code}/ZTX0XA/ZTX0FE/ZXF10/",  # a trailing slash after a tilleggskode
    "{code}//ZTX0EA//ZTX0FA",  # an empty field in position 4
)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Spec:
    """What to generate. `lines` is the most lines a bill gets (1..lines each);
    `radiology` the share of bills that are radiology (of institutions that may claim
    both); `invalid` the share of lines made wrong on purpose."""

    messages: int = 100
    bills: int = 1
    lines: int = 3
    radiology: float = 0.0
    invalid: float = 0.0
    seed: int = 0
    sign: bool = False
    encrypt: bool = False
    gzip: bool = False
    from_her: str = DEMO_HER
    cpa_id: str = DEMO_CPA
    to_her: str = OUR_HER
    today: date = TODAY
    days_back: int = 150  # service dates from today - days_back to yesterday (COM-08: 183)
    prefix: str = "gen"

    def __post_init__(self) -> None:
        if self.messages < 0 or self.bills < 1 or self.lines < 1:
            raise ValueError("messages >= 0, bills >= 1 and lines >= 1")
        for name in ("radiology", "invalid"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share between 0 and 1")
        if not 1 <= self.days_back <= 183:
            raise ValueError("days_back between 1 and 183 (COM-08)")


@dataclass(frozen=True, slots=True)
class PlannedLine:
    """One line as sent. `kind` lab (Kontakt/Takst) or radiology (Prosedyre/Kode);
    `code` as sent (a code string for radiology); `amount` per unit (lab) or per exam;
    `defect` the rule that must reject it (None: it must be approved)."""

    kind: str
    code: str
    amount: Decimal
    count: int = 1
    code_system: str = "R"  # Kodeverk of a procedure line (R, or K for NCSP)
    defect: str | None = None

    @property
    def total(self) -> Decimal:
        return self.amount * self.count

    @property
    def rule(self) -> str | None:
        """The rule id the defect makes fire (LAB-02-expired → LAB-02)."""
        return "-".join(self.defect.split("-")[:2]) if self.defect else None


@dataclass(frozen=True, slots=True)
class PlannedBill:
    regning_nr: str
    uuid: str
    episode_id: str
    fnr: str
    municipality: str
    instant: str  # TransDatoTid, Norwegian local time
    payee: str  # RHF:<name> or INST:<orgnr>, what the ledger records
    lines: tuple[PlannedLine, ...]
    consultation: bool = False
    diagnoses: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.lines[0].kind

    @property
    def claimed(self) -> Decimal:
        return sum((line.total for line in self.lines), ZERO)

    @property
    def approved(self) -> Decimal:
        return sum((line.total for line in self.lines if line.defect is None), ZERO)

    @property
    def verdict(self) -> str:
        if not any(line.defect for line in self.lines):
            return "approved"
        return "rejected" if self.approved == ZERO else "reduced"

    @property
    def service_date(self) -> date:
        return date.fromisoformat(self.instant[:10])


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    index: int
    name: str  # the file name in the inbox
    message_id: str  # ebXML MessageId
    conversation_id: str
    msg_id: str  # MsgHead MsgId
    gen_date: datetime  # MsgHead GenDate and ebXML Timestamp
    institution: Institution
    bills: tuple[PlannedBill, ...]

    @property
    def status(self) -> str:
        """The AppRec status the daemon must answer: 1 OK, 3 OK with remarks."""
        return "3" if any(b.verdict != "approved" for b in self.bills) else "1"

    @property
    def claimed(self) -> Decimal:
        return sum((b.claimed for b in self.bills), ZERO)


@functools.cache
def default_tariffs() -> Tariffs:
    return tariffs.load(tariffs.SHIPPED_DIR)


def load_institutions(path: Path | None = None) -> tuple[Institution, ...]:
    """The registry's institutions (default: config/institutions.toml, Demo sykehus HF)."""
    found = registry.load_institutions(path or ROOT / "config" / "institutions.toml")
    if not found:
        raise ValueError(f"no institutions in {path}")
    return found


def sector(inst: Institution) -> str:
    """As `RuleContext.sector`: private labs with a driftsavtale have their own rates."""
    return inst.sector


def plan(
    spec: Spec,
    institutions: Sequence[Institution] | None = None,
    register: Tariffs | None = None,
) -> list[PlannedMessage]:
    """The messages as values, with what the daemon must decide for each bill. Pure and
    deterministic: the same spec gives the same plan."""
    institutions = tuple(institutions or load_institutions())
    register = register or default_tariffs()
    rng = random.Random(spec.seed)
    codes = _Codes(register, spec)
    people = _People(rng)
    regning = iter(range(100_001, 10**9))
    claimable = [i for i in institutions if {"lab", "radiology"} & set(i.services)]
    if not claimable:
        raise ValueError("no institution may claim lab or radiology (services)")
    out = []
    for index in range(spec.messages):
        inst = claimable[rng.randrange(len(claimable))]
        # a message covers up to a month of service dates, ending in the window
        end = spec.today - timedelta(days=rng.randint(1, spec.days_back))
        start = max(end - timedelta(days=30), spec.today - timedelta(days=spec.days_back))
        bills = []
        for n in range(1, spec.bills + 1):
            day = start + timedelta(days=rng.randint(0, (end - start).days))
            radiology = _radiology_bill(inst, spec, rng)
            lines = rng.randint(1, spec.lines)
            fnr = people.new()
            municipality = _municipality(rng)
            instant = (
                f"{day.isoformat()}T{rng.randint(7, 16):02d}:{rng.randint(0, 59):02d}:"
                f"{rng.randint(0, 59):02d}"
            )
            common = {
                "regning_nr": str(next(regning)),
                "uuid": _uuid(rng, braces=True),
                "episode_id": str(n),
                "fnr": fnr,
                "municipality": municipality,
                "instant": instant,
            }
            if radiology:
                bill = codes.radiology_bill(rng, inst, day, lines, common)
            else:
                bill = codes.lab_bill(rng, inst, day, lines, common)
            bills.append(bill)
        # made and sent in the days before it is received (the sandboxes' clock stands at
        # `today`), after the last service it bills: the daemon refuses a
        # GenDate/Timestamp far from receipt or before the services (issue #14)
        made = max(end + timedelta(days=1), spec.today - timedelta(days=rng.randint(1, 5)))
        gen = datetime.combine(made, datetime.min.time(), UTC) + timedelta(
            hours=rng.randint(5, 10), minutes=rng.randint(0, 59)
        )
        out.append(
            PlannedMessage(
                index=index,
                name=f"{spec.prefix}-{spec.seed}-{index:06d}.msg",
                message_id=_uuid(rng),
                conversation_id=_uuid(rng),
                msg_id=_uuid(rng),
                gen_date=gen,
                institution=inst,
                bills=tuple(bills),
            )
        )
    return out


def _uuid(rng: random.Random, *, braces: bool = False) -> str:
    value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return f"{{{value.upper()}}}" if braces else value


def _radiology_bill(inst: Institution, spec: Spec, rng: random.Random) -> bool:
    lab, rad = "lab" in inst.services, "radiology" in inst.services
    if lab and rad:
        return rng.random() < spec.radiology
    return rad


def _municipality(rng: random.Random) -> str:
    (rhf,) = rng.choices(list(RHF_WEIGHTS), weights=list(RHF_WEIGHTS.values()))
    return rng.choice(MUNICIPALITIES[rhf])


class _People:
    """Made-up fødselsnumre, each used once: a random birth date, an individual number
    of the right century range, both mod-11 control digits computed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def new(self) -> str:
        while True:
            born = date(RETIREES_FROM, 1, 1) + timedelta(days=self.rng.randint(0, 32_000))
            if born.year >= 2000:
                individual = self.rng.randint(500, 999)
            else:
                individual = self.rng.randint(0, 499)
            number = person_number(born, individual)
            if number is not None and number not in self.used:
                self.used.add(number)
                return number


def person_number(born: date, individual: int) -> str | None:
    """The fødselsnummer of a birth date and individual number; None when no control
    digit exists for them (a remainder of 10)."""
    base = [int(c) for c in f"{born:%d%m%y}{individual:03d}"]
    k1 = _control(base, (3, 7, 6, 1, 8, 9, 4, 5, 2))
    if k1 is None:
        return None
    k2 = _control([*base, k1], (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
    return None if k2 is None else "".join(map(str, base)) + f"{k1}{k2}"


def _control(digits: list[int], weights: tuple[int, ...]) -> int | None:
    k = 11 - sum(w * d for w, d in zip(weights, digits, strict=True)) % 11
    return None if k == 10 else (0 if k == 11 else k)


class _Codes:
    """The codes a bill may use on a day, and the amounts the rules will compute."""

    def __init__(self, register: Tariffs, spec: Spec) -> None:
        self.register, self.spec = register, spec
        first = spec.today - timedelta(days=spec.days_back)
        last = spec.today
        self.lab = sorted(
            (
                c
                for c in register.codes.values()
                if c.category is not None
                and c.field_prefix != lab_rules.MEDICAL_GENETICS  # LAB-04/06
                and c.valid_on(first)
                and c.valid_on(last)
                and len(register.versions(c.code)) == 1  # no mid-window re-categorising
            ),
            key=lambda c: c.code,
        )
        self.lab_plain = [c for c in self.lab if not c.starred and not lab_rules.is_hpv(c)]
        self.lab_starred = [c for c in self.lab if c.starred]
        self.lab_hpv = [c for c in self.lab if lab_rules.is_hpv(c)]
        self.lab_expired = sorted(
            (c for c in register.codes.values() if c.valid_to and c.valid_to < first),
            key=lambda c: c.code,
        )
        self.lab_outside = sorted(
            (c for c in register.codes.values() if c.category is None), key=lambda c: c.code
        )
        rad = register.radiology
        self.radiology: dict[str, list[RadCode]] = {}  # group → codes
        for code in sorted(rad.codes.values(), key=lambda c: c.code):
            if code.category is None or not (code.valid_on(first) and code.valid_on(last)):
                continue
            if len(rad.versions(code.code)) != 1:
                continue
            self.radiology.setdefault(_group(code), []).append(code)
        self.radiopharmaceuticals = sorted(
            a.code for a in rad.addons.values() if a.role == "radiopharmaceutical"
        )
        self.guidance = sorted(a.code for a in rad.addons.values() if a.role == "guidance")
        self.contrast = sorted(a.code for a in rad.addons.values() if a.role == "contrast")
        self.rhf: RhfTable = register.rhf

    # ------------------------------------------------------------------ lab

    def lab_rate(self, code: NlkCode, inst: Institution, day: date) -> Decimal:
        rate = self.register.rate(code.category, sector(inst), day)
        if rate is None:
            raise ValueError(f"no {sector(inst)} rate for {code.category} on {day}")
        return rate

    def lab_bill(
        self, rng: random.Random, inst: Institution, day: date, count: int, common: dict
    ) -> PlannedBill:
        consultation = rng.random() < CONSULTATION_SHARE
        pool = self.lab_plain if consultation else [*self.lab_plain, *self.lab_starred]
        chosen: list[NlkCode] = []
        for _ in range(count):
            screening = self.lab_hpv and rng.random() < 0.03  # now and then a cervix test
            code = rng.choice(self.lab_hpv if screening else pool)
            if code not in chosen:
                chosen.append(code)
        lines = [
            PlannedLine("lab", c.code, self.lab_rate(c, inst, day), count=_antall(rng))
            for c in chosen
        ]
        diagnoses = (HPV_DIAGNOSIS,) if any(lab_rules.is_hpv(c) for c in chosen) else ()
        used = {line.code for line in lines}
        for i, line in enumerate(lines):
            if rng.random() < self.spec.invalid:
                defects = [*LAB_DEFECTS]
                if consultation and self.lab_starred:
                    defects += LAB_DEFECTS_CONSULTATION
                if not diagnoses and self.lab_hpv:
                    defects += LAB_DEFECTS_NO_DIAGNOSIS
                lines[i] = self._lab_defect(rng, rng.choice(defects), line, inst, day, used)
                used.add(lines[i].code)
        return PlannedBill(
            **common,
            payee=lab_rules.payee(inst),
            lines=tuple(lines),
            consultation=consultation,
            diagnoses=diagnoses,
        )

    def _lab_defect(
        self,
        rng: random.Random,
        defect: str,
        line: PlannedLine,
        inst: Institution,
        day: date,
        used: set[str],
    ) -> PlannedLine:
        def unused(pool: list[NlkCode]) -> NlkCode:
            return rng.choice([c for c in pool if c.code not in used] or pool)

        if defect == "LAB-09":  # the rate of another category, or a rounding slip
            wrong = line.amount + rng.choice((Decimal("1.00"), Decimal("10.00"), CENT))
            return replace(line, amount=wrong, defect=defect)
        if defect == "LAB-02":  # a code the list does not have
            while True:
                code = f"NPU{rng.randint(90_000, 99_999)}"
                if self.register.code(code) is None:
                    return replace(line, code=code, defect=defect)
        if defect == "LAB-02-expired":  # a code that ended before the window
            code = unused(self.lab_expired)
            return replace(line, code=code.code, defect=defect)
        if defect == "LAB-02-outside":  # Patologi: in NLK, outside the scheme
            code = unused(self.lab_outside)
            return replace(line, code=code.code, defect=defect)
        if defect == "LAB-03":
            return replace(line, count=0, defect=defect)
        if defect == "LAB-07":
            code = unused(self.lab_starred)
            return PlannedLine("lab", code.code, self.lab_rate(code, inst, day), defect=defect)
        if defect == "LAB-08":
            code = unused(self.lab_hpv)
            return PlannedLine("lab", code.code, self.lab_rate(code, inst, day), defect=defect)
        raise ValueError(defect)

    # ------------------------------------------------------------------ radiology

    def radiology_bill(
        self, rng: random.Random, inst: Institution, day: date, count: int, common: dict
    ) -> PlannedBill:
        """Exams of one patient on one day: at most one per limited group (CT, MR, UL,
        intervention, nuclear), so RAD-06/07/09 never fire; X-ray exams are
        unlimited but never the same code twice (RAD-08/10)."""
        groups = sorted(self.radiology)
        lines: list[PlannedLine] = []
        taken: set[str] = set()
        codes: set[str] = set()
        ambulant = False
        for _ in range(count):
            open_groups = [g for g in groups if g == "RG" or g not in taken]
            group = rng.choice(open_groups)
            candidates = [c for c in self.radiology[group] if c.code not in codes]
            if not candidates:
                continue
            code = rng.choice(candidates)
            taken.add(group)
            codes.add(code.code)
            cs = self._code_string(rng, code, inst, with_ambulant=not ambulant)
            ambulant = ambulant or "ZTX0AD" in cs.addons
            amount = self.radiology_amount(cs, code, inst, day)
            system = "R" if code.code_system == "NCRP" else "K"
            lines.append(PlannedLine("radiology", str(cs), amount, code_system=system))
        for i, line in enumerate(lines):
            if rng.random() < self.spec.invalid:
                lines[i] = self._radiology_defect(rng, line)
        rhf = self.rhf.for_municipality(common["municipality"], day)
        return PlannedBill(**common, payee=f"RHF:{rhf.name}", lines=tuple(lines))

    def _code_string(
        self, rng: random.Random, code: RadCode, inst: Institution, *, with_ambulant: bool
    ) -> ncrp.CodeString:
        side = tele = third = None
        tail: list[str] = []
        if code.code_system == "NCRP":
            limbs = {"Overekstremitet", "Underekstremitet", "Mamma"} & set(code.regions)
            if limbs and rng.random() < 0.6:
                side = rng.choices(("ZTX0XA", "ZTX0XB", "ZTX0XC"), weights=(4, 4, 1))[0]
            if sector(inst) == "stat" and rng.random() < 0.05:  # RAD-12: HF only
                tele = rng.choice(("ZTX0BA", "ZTX0BB", "ZTX0BC"))
            contrast = code.modality in ("CT", "CTA", "CT+CTA", "MR", "MRA", "MR+MRA")
            if contrast and rng.random() < 0.5:
                tail.append(rng.choice(self.contrast))
            if code.kind == "nuclear":  # RAD-04
                tail.append(rng.choice(self.radiopharmaceuticals))
            if with_ambulant and rng.random() < 0.05:  # RAD-11: once a bill
                tail.append("ZTX0AD")
        elif code.needs_guidance:  # RAD-05: NCSP interventions need ZXM
            tail.append(rng.choice(self.guidance))
        if tele is None and tail and rng.random() < 0.5:
            third, tail = tail[0], tail[1:]  # the rule text's own style: CODE//ADDON
        return ncrp.CodeString(code.code, side, tele, third, tuple(tail))

    def radiology_amount(
        self, cs: ncrp.CodeString, code: RadCode, inst: Institution, day: date
    ) -> Decimal:
        """What RAD-14 computes (the rules' own `amount_for`)."""
        amount = radiology_rules.amount_for(
            cs,
            code,
            SimpleNamespace(service_date=day),
            SimpleNamespace(tariffs=self.register, sector=sector(inst)),
        )
        if isinstance(amount, str):
            raise ValueError(f"{cs}: {amount}")
        return amount.kroner

    def _radiology_defect(self, rng: random.Random, line: PlannedLine) -> PlannedLine:
        cs = ncrp.parse(line.code)
        code = self.register.radiology.code(cs.procedure)
        defects = [*RAD_DEFECTS]
        if code.kind == "nuclear":
            defects += RAD_DEFECTS_NUCLEAR
        defect = rng.choice(defects)
        if defect == "RAD-14":
            wrong = line.amount + rng.choice((Decimal("1.00"), Decimal("100.00"), CENT))
            return replace(line, amount=wrong, defect=defect)
        if defect == "RAD-03":
            text = rng.choice(BAD_CODE_STRINGS).format(code=cs.procedure)
            return replace(line, code=text, code_system="R", defect=defect)
        if defect == "RAD-02":  # a code of the right shape that the register lacks
            while True:
                unknown = f"SX{rng.choice('QVW')}{rng.randint(0, 9)}ZZ"
                if self.register.radiology.code(unknown) is None:
                    return replace(line, code=unknown, code_system="R", defect=defect)
        if defect == "RAD-13":  # an unknown tilleggskode after the fixed fields
            unknown = f"ZTX9{rng.choice('QRSTUVW')}{rng.choice('QRSTUVW')}"
            return replace(line, code=f"{cs.procedure}///{unknown}", defect=defect)
        if defect == "RAD-04":
            kept = tuple(a for a in cs.addons if a not in self.radiopharmaceuticals)
            bare = ncrp.CodeString(cs.procedure, cs.side_code, cs.tele_code, None, kept)
            return replace(line, code=str(bare), defect=defect)
        raise ValueError(defect)


def _group(code: RadCode) -> str:
    """The same-day group of `daemon.rules.sameday.group_of`; RG: conventional X-ray."""
    if code.kind in ("intervention", "nuclear"):
        return code.kind
    for group, modalities in (("CT", ("CT", "CTA", "CT+CTA")), ("MR", ("MR", "MRA", "MR+MRA"))):
        if code.modality in modalities:
            return group
    return "UL" if code.modality == "UL" else "RG"


def _antall(rng: random.Random) -> int:
    return rng.choices((1, 2, 3), weights=(85, 10, 5))[0]


# --------------------------------------------------------------------------- expectations


def expected_approved(
    spec: Spec, institutions: Sequence[Institution] | None = None
) -> dict[tuple[str, str], Decimal]:
    """What each bill must be paid: (institution orgnr, uuid) → approved amount."""
    return expected_of(plan(spec, institutions))


def expected_of(messages: Iterable[PlannedMessage]) -> dict[tuple[str, str], Decimal]:
    return {(m.institution.orgnr, b.uuid): b.approved for m in messages for b in m.bills}


@dataclass(frozen=True)
class Summary:
    messages: int
    bills: int
    lines: int
    lab_bills: int
    radiology_bills: int
    defects: Counter = field(default_factory=Counter)  # rule → lines
    verdicts: Counter = field(default_factory=Counter)  # approved / reduced / rejected
    statuses: Counter = field(default_factory=Counter)  # AppRec status → messages
    claimed: Decimal = ZERO
    approved: Decimal = ZERO
    payees: dict[str, Decimal] = field(default_factory=dict)  # payee → approved

    def lines_of_text(self) -> list[str]:
        out = [
            f"messages {self.messages}, bills {self.bills} (lab {self.lab_bills}, "
            f"radiology {self.radiology_bills}), lines {self.lines}",
            "bills approved {approved}, reduced {reduced}, rejected {rejected}".format(
                **{k: self.verdicts.get(k, 0) for k in ("approved", "reduced", "rejected")}
            ),
            "AppRec status 1: {}, status 3: {}".format(
                self.statuses.get("1", 0), self.statuses.get("3", 0)
            ),
            f"claimed {self.claimed:.2f}, to be approved {self.approved:.2f}",
        ]
        if self.defects:
            out.append("defects: " + ", ".join(f"{k} {v}" for k, v in sorted(self.defects.items())))
        for payee, amount in sorted(self.payees.items()):
            out.append(f"  {payee}: {amount:.2f}")
        return out


def summarize(messages: Sequence[PlannedMessage]) -> Summary:
    bills = [b for m in messages for b in m.bills]
    payees: dict[str, Decimal] = {}
    for b in bills:
        payees[b.payee] = payees.get(b.payee, ZERO) + b.approved
    return Summary(
        messages=len(messages),
        bills=len(bills),
        lines=sum(len(b.lines) for b in bills),
        lab_bills=sum(b.kind == "lab" for b in bills),
        radiology_bills=sum(b.kind == "radiology" for b in bills),
        defects=Counter(line.rule for b in bills for line in b.lines if line.defect),
        verdicts=Counter(b.verdict for b in bills),
        statuses=Counter(m.status for m in messages),
        claimed=sum((b.claimed for b in bills), ZERO),
        approved=sum((b.approved for b in bills), ZERO),
        payees=payees,
    )


# --------------------------------------------------------------------------- rendering


def msghead(m: PlannedMessage, spec: Spec) -> bytes:
    """The MsgHead 1.2 with the NPR-behandlerkravmelding 0.78 of one planned message."""
    inst = m.institution
    bills = "".join(
        f'<EnkeltRegning uuid={quoteattr(b.uuid)} typeTransaksjon="1" kravGrunnlag="1" '
        f'regningNr="{b.regning_nr}" TransDatoTid="{b.instant}" episodeID="{b.episode_id}" '
        f'sumBelop="{b.claimed:.2f}"/>'
        for b in m.bills
    )
    patients = "".join(_patient(b) for b in m.bills)
    days = sorted(b.service_date for b in m.bills)
    total = sum((b.claimed for b in m.bills), ZERO)
    gen = f"{m.gen_date:%Y-%m-%dT%H:%M:%S}Z"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">
  <MsgInfo>
    <Type V="POM" DN="Poliklinisk oppgjørsmelding"/>
    <MIGversion>v1.2 2006-05-24</MIGversion>
    <GenDate>{gen}</GenDate>
    <MsgId>{m.msg_id}</MsgId>
    <Sender><Organisation><OrganisationName>{_xml(inst.name)}</OrganisationName>
      <Ident><Id>{inst.orgnr}</Id><TypeId V="ENH" S="2.16.578.1.12.4.1.1.9051"/></Ident>
      <Ident><Id>{spec.from_her}</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9051"/></Ident>
    </Organisation></Sender>
    <Receiver><Organisation><OrganisationName>HELFO</OrganisationName>
      <Ident><Id>{spec.to_her}</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9051"/></Ident>
    </Organisation></Receiver>
  </MsgInfo>
  <Document><RefDoc><MsgType V="XML"/><Content>
    <Melding xmlns="http://www.npr.no/xmlstds" versjon="0.78" fraDatoPeriode="{days[0]}"
             tilDatoPeriode="{days[-1]}" uttakDato="{m.gen_date:%Y-%m-%d}"
             kontPerson="Oppgjørskontoret" meldEpost1="oppgjor@{inst.orgnr}.example"
             meldRefNr="{spec.prefix}-{spec.seed}-{m.index}">
      <Institusjon institusjonID="{inst.orgnr}">
        <Enhet enhetID="1" enhetKode="8151" reshID="101797">
          <Krav antallRegninger="{len(m.bills)}" sumKravBelop="{total:.2f}">{bills}</Krav>
        </Enhet>
        {patients}
      </Institusjon>
    </Melding>
  </Content></RefDoc></Document>
</MsgHead>
""".encode()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _patient(b: PlannedBill) -> str:
    sex = "1" if int(b.fnr[8]) % 2 else "2"  # the individual number's last digit
    if b.kind == "radiology":  # as the NCRP sample: an examination by a radiologist
        contact = '<Kontakt kontaktType="1"><Helseperson polUtforende="16"/></Kontakt>'
    elif b.consultation:  # LAB-07: kontaktType 1-3 with a Helseperson
        contact = '<Kontakt kontaktType="1"><Helseperson polUtforende="1"/>'
    else:  # a sample sent in: indirect contact
        contact = '<Kontakt kontaktType="5">'
    if b.kind == "lab":
        contact += "".join(
            f'<Takst kode="{x.code}" antall="{x.count}" takstBelop="{x.amount:.2f}"/>'
            for x in b.lines
        )
        contact += "</Kontakt>"
    diagnoses = "".join(
        f'<Tilstand tilstNr="{n}"><Kode kodeNr="1" Kodeverk="D" kodeVersjon="2026" '
        f'kodeVerdi="{d}"/></Tilstand>'
        for n, d in enumerate(b.diagnoses, start=1)
    )
    procedures = ""
    if b.kind == "radiology":
        procedures = (
            '<Tjeneste><Tiltak typeTiltak="1">'
            + "".join(
                f'<Prosedyre prosNr="{n}"><Kode kodeNr="1" Kodeverk="{x.code_system}" '
                f'kodeVersjon="2026" kodeVerdi={quoteattr(x.code)} kodeBelop="{x.amount:.2f}"/>'
                "</Prosedyre>"
                for n, x in enumerate(b.lines, start=1)
            )
            + "</Tiltak></Tjeneste>"
        )
    return (
        f'<Pasient><PasientEx kjonn="{sex}"><Ident typeId="FNR" id="{b.fnr}"/></PasientEx>'
        f'<Episode episodeID="{b.episode_id}" debitor="1" komNrHjem="{b.municipality}">'
        f"{contact}{diagnoses}{procedures}</Episode></Pasient>"
    )


def render(
    m: PlannedMessage,
    spec: Spec,
    sender: trust.KeyPair | None = None,
    recipient: x509.Certificate | None = None,
) -> bytes:
    """One planned message as the partner's handler sends it: the MsgHead signed
    (`spec.sign`), gzipped (`spec.gzip`), encrypted to `recipient` (`spec.encrypt`), in
    an ebMS envelope signed over itself and the payload."""
    if spec.sign and sender is None:
        raise ValueError("spec.sign needs the sender's key pair")
    if spec.encrypt and recipient is None:
        raise ValueError("spec.encrypt needs our (the receiver's) certificate")
    payload = msghead(m, spec)
    if spec.sign:
        signed = trust.sign_msghead(etree.fromstring(payload), sender)
        payload = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
    data = payload
    if spec.gzip:
        data = gzip_module.compress(data, mtime=0)
    encrypted = None
    if spec.encrypt:
        encrypted = encrypt_seeded(data, recipient, random.Random(f"{spec.seed}/{m.index}/cms"))
    return _wrap(m, spec, payload, sender if spec.sign else None, encrypted)


def _wrap(m, spec, payload, signer, encrypted) -> bytes:
    """`daemon.tools.wrap.wrap`, with the CMS part made by `encrypt_seeded`: wrap encrypts
    with a random key, which would make the bytes differ from run to run."""
    if encrypted is None:
        return wrap(
            payload,
            from_her=spec.from_her,
            cpa_id=spec.cpa_id,
            to_her=spec.to_her,
            message_id=m.message_id,
            conversation_id=m.conversation_id,
            timestamp=m.gen_date,
            gzip=spec.gzip,
            signer=signer,
        )
    from daemon.domain import PartyRef
    from daemon.transport import ebms, mime

    route = ebms.Route(
        from_party=PartyRef(spec.from_her, "HER", "Behandler"),
        to_party=PartyRef(spec.to_her, "HER", "KontrollUtbetaler"),
        cpa_id=spec.cpa_id,
        conversation_id=m.conversation_id,
        service="BehandlerKrav",
        action="OppgjorsMelding",
        message_id=m.message_id,
        timestamp=f"{m.gen_date.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
    )
    cid = f"payload-{m.message_id}@sender"
    env = ebms.envelope(route, manifest=(cid,), ack_requested=True)
    if signer is not None:
        env = trust.sign_envelope(env, {cid: encrypted}, signer)
    soap = mime.Part(f"soap-{m.message_id}@sender", "text/xml", ebms.to_bytes(env))
    return mime.build([soap, mime.Part(cid, "application/pkcs7-mime", encrypted)])


def encrypt_seeded(data: bytes, recipient: x509.Certificate, rng: random.Random) -> bytes:
    """CMS EnvelopedData (RSA PKCS#1 v1.5 key transport, AES-256-CBC), like
    `daemon.transport.trust.encrypt`, but with the content key, IV and padding drawn from `rng`
    so that a seed gives the same bytes. For generated test data only."""
    key, iv = rng.randbytes(32), rng.randbytes(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    public = recipient.public_key().public_numbers()
    size = (public.n.bit_length() + 7) // 8
    filler = bytes(rng.randrange(1, 256) for _ in range(size - 3 - len(key)))
    block = int.from_bytes(b"\x00\x02" + filler + b"\x00" + key, "big")
    encrypted_key = pow(block, public.e, public.n).to_bytes(size, "big")
    recipient_info = asn1cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": asn1cms.RecipientIdentifier(
                name="issuer_and_serial_number",
                value=asn1cms.IssuerAndSerialNumber(
                    {
                        "issuer": asn1x509.Name.load(recipient.issuer.public_bytes()),
                        "serial_number": recipient.serial_number,
                    }
                ),
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": encrypted_key,
        }
    )
    enveloped = asn1cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [asn1cms.RecipientInfo(name="ktri", value=recipient_info)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
                "encrypted_content": ciphertext,
            },
        }
    )
    return asn1cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


# --------------------------------------------------------------------------- the sender


@functools.cache
def sender_keys(
    seed: int, her_id: str = DEMO_HER, orgnr: str = "983974678", name: str = "Demo sykehus HF"
) -> trust.KeyPair:
    """The sending partner's key pair and self-signed certificate (2025-2034), derived
    from the seed: the same seed gives the same key, so signed messages are the same
    bytes on every run. RSA 2048 from seeded primes: test keys only."""
    rng = random.Random(f"{seed}/sender/{her_id}")
    e = 65537
    while True:
        p, q = _prime(1024, rng, e), _prime(1024, rng, e)
        if p != q:
            break
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    key = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    ).private_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} HER {her_id} (generated)"),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO-{orgnr}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(rng.getrandbits(120) | 1 << 120)
        .not_valid_before(CERTS_FROM)
        .not_valid_after(CERTS_FROM + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            keys.OUR_KEY_USAGE,  # a partner's enterprise certificate: the same uses
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return trust.KeyPair(key, cert)


_SMALL_PRIMES = tuple(
    p for p in range(3, 2000, 2) if all(p % f for f in range(3, p, 2) if f * f <= p)
)


def _prime(bits: int, rng: random.Random, e: int) -> int:
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1  # top two bits: a full-size modulus
        if any(n % p == 0 for p in _SMALL_PRIMES) or math.gcd(e, n - 1) != 1:
            continue
        if _miller_rabin(n, rng):
            return n


def _miller_rabin(n: int, rng: random.Random, rounds: int = 40) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def partner_for(spec: Spec, certificate: Path, orgnr: str, name: str) -> Partner:
    """The agreement that lets the daemon take these messages: the sender's HER-id and
    CPA, its certificate, signatures required when signed, encryption both ways when
    encrypted, gzipped answers when gzipped."""
    return Partner(
        her_id=spec.from_her,
        cpa_id=spec.cpa_id,
        orgnr=orgnr,
        name=f"{name} (generated sender)",
        certificates=(str(certificate),),
        require_signature=spec.sign,
        encrypts_to_us=spec.encrypt,
        encrypt=spec.encrypt,
        compress=spec.gzip,
    )


def write_sender(folder: Path, spec: Spec, institutions: Sequence[Institution]) -> Partner:
    """Write the sender's key pair and a `partner.toml` with its agreement to `folder`;
    return the agreement (`register` adds it to a sandbox)."""
    inst = institutions[0]
    pair = sender_keys(spec.seed, spec.from_her, inst.orgnr, inst.name)
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / "sender.key.pem", folder / "sender.cert.pem"
    pem = pair.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    cert_path.write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    partner = partner_for(spec, cert_path.resolve(), inst.orgnr, inst.name)
    registry.save_partners(folder / "partner.toml", [partner])
    return partner


def register(config_path: Path, partner: Partner) -> None:
    """Add (or replace) the generated sender's agreement in a sandbox's partners.toml.
    The daemon reads it at start and on SIGHUP."""
    from daemon import config

    registry.upsert_partner(config.load(config_path).paths.partners, partner)


def claimable_problems(
    institutions: Sequence[Institution], her_id: str, orgnr: str | None
) -> list[str]:
    """Institutions the sender may not claim for (COM-09): neither its own orgnr nor
    naming the sender's HER-id in `senders`."""
    return [
        f'{i.orgnr} {i.name}: add senders = ["{her_id}"] or it is rejected (COM-09)'
        for i in institutions
        if i.orgnr != orgnr and her_id not in i.senders
    ]


# --------------------------------------------------------------------------- generating


def generate(
    spec: Spec,
    *,
    institutions: Sequence[Institution] | None = None,
    sender: trust.KeyPair | None = None,
    recipient: x509.Certificate | None = None,
    jobs: int = 1,
) -> list[tuple[str, bytes]]:
    """The messages as (file name, bytes), in order. `sender` defaults to
    `sender_keys(spec.seed, …)` when signing; `recipient` is our certificate (needed to
    encrypt). `jobs` > 1 renders in that many processes (the bytes are the same)."""
    institutions = tuple(institutions or load_institutions())
    messages = plan(spec, institutions)
    return render_all(messages, spec, institutions, sender=sender, recipient=recipient, jobs=jobs)


def render_all(
    messages: Sequence[PlannedMessage],
    spec: Spec,
    institutions: Sequence[Institution],
    *,
    sender: trust.KeyPair | None = None,
    recipient: x509.Certificate | None = None,
    jobs: int = 1,
) -> list[tuple[str, bytes]]:
    if spec.sign and sender is None:
        sender = sender_keys(spec.seed, spec.from_her, institutions[0].orgnr, institutions[0].name)
    if jobs <= 1 or len(messages) < 2:
        return [(m.name, render(m, spec, sender, recipient)) for m in messages]
    key_pem = (
        sender.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if sender
        else None
    )
    cert_pem = sender.certificate.public_bytes(serialization.Encoding.PEM) if sender else None
    recipient_pem = recipient.public_bytes(serialization.Encoding.PEM) if recipient else None
    chunk = max(1, len(messages) // (jobs * 8))
    with ProcessPoolExecutor(
        jobs, initializer=_worker_init, initargs=(spec, key_pem, cert_pem, recipient_pem)
    ) as pool:
        rendered = list(pool.map(_worker_render, messages, chunksize=chunk))
    return [(m.name, data) for m, data in zip(messages, rendered, strict=True)]


_WORKER: dict = {}


def _worker_init(spec, key_pem, cert_pem, recipient_pem) -> None:
    sender = None
    if key_pem:
        key = serialization.load_pem_private_key(key_pem, password=None)
        sender = trust.KeyPair(key, x509.load_pem_x509_certificate(cert_pem))
    recipient = x509.load_pem_x509_certificate(recipient_pem) if recipient_pem else None
    _WORKER.update(spec=spec, sender=sender, recipient=recipient)


def _worker_render(m: PlannedMessage) -> bytes:
    return render(m, _WORKER["spec"], _WORKER["sender"], _WORKER["recipient"])


def write(folder: Path, named: Iterable[tuple[str, bytes]], *, age_seconds: float = 5) -> int:
    """Write each message the way a sender drops it: a temporary dot-name, then a
    rename. The mtime is set `age_seconds` in the past, so the daemon's stability
    wait is over. Returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    past = time.time() - age_seconds
    total = 0
    for name, data in named:
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.utime(tmp, (past, past))
        os.rename(tmp, folder / name)
        total += len(data)
    return total


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--bills", type=int, default=1, help="bills per message")
    ap.add_argument("--lines", type=int, default=3, help="most lines per bill")
    ap.add_argument("--radiology", type=float, default=0.0, help="share of radiology bills")
    ap.add_argument("--invalid", type=float, default=0.0, help="share of lines made wrong")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sign", action="store_true", help="sign the MsgHead and the envelope")
    ap.add_argument("--encrypt", action="store_true", help="CMS-encrypt the payload to us")
    ap.add_argument("--gzip", action="store_true", help="gzip the payload")
    ap.add_argument("--out", type=Path, required=True, help="folder (e.g. an inbox)")
    ap.add_argument("--institutions", type=Path, help="an institutions.toml to claim for")
    ap.add_argument("--config", type=Path, help="a sandbox config: our certificate, registry")
    ap.add_argument("--recipient-cert", type=Path, help="our certificate (for --encrypt)")
    ap.add_argument("--register", action="store_true", help="add the sender to --config")
    ap.add_argument("--from-her", default=DEMO_HER)
    ap.add_argument("--cpa-id", default=DEMO_CPA)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="render processes")
    ap.add_argument(
        "--today",
        type=date.fromisoformat,
        default=TODAY,
        help="the day the claims are judged on (default: the sandboxes' fixed day)",
    )
    args = ap.parse_args(argv)
    try:
        spec = Spec(
            messages=args.messages,
            bills=args.bills,
            lines=args.lines,
            radiology=args.radiology,
            invalid=args.invalid,
            seed=args.seed,
            sign=args.sign,
            encrypt=args.encrypt,
            gzip=args.gzip,
            from_her=args.from_her,
            cpa_id=args.cpa_id,
            today=args.today,
        )
    except ValueError as exc:
        ap.error(str(exc))
    settings = None
    if args.config:
        from daemon import config

        settings = config.load(args.config)
    institutions_file = args.institutions or (settings.paths.institutions if settings else None)
    institutions = load_institutions(institutions_file)
    recipient = None
    if spec.encrypt:
        cert_file = args.recipient_cert or (settings.paths.certificate if settings else None)
        if cert_file is None:
            ap.error("--encrypt needs --recipient-cert or --config (our certificate)")
        recipient = x509.load_pem_x509_certificate(cert_file.read_bytes())
    if args.register and settings is None:
        ap.error("--register needs --config")
    for problem in claimable_problems(institutions, spec.from_her, institutions[0].orgnr):
        print(f"warning: {problem}", file=sys.stderr)

    started = time.perf_counter()
    messages = plan(spec, institutions)
    planned = time.perf_counter()
    named = render_all(messages, spec, institutions, recipient=recipient, jobs=args.jobs)
    rendered = time.perf_counter()
    size = write(args.out, named)
    if spec.sign or spec.encrypt:
        partner = write_sender(args.out / "sender", spec, institutions)
        print(f"sender key, certificate and partner.toml in {args.out / 'sender'}")
        if args.register:
            register(args.config, partner)
            print(f"registered partner {partner.her_id}/{partner.cpa_id} in {args.config}")
    print(f"wrote {len(named)} messages ({size / 1e6:.1f} MB) to {args.out}")
    for line in summarize(messages).lines_of_text():
        print(line)
    print(
        f"plan {planned - started:.2f} s, render {rendered - planned:.2f} s "
        f"({'signed, ' if spec.sign else ''}{args.jobs} process(es))"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
