"""Rules engine speed: bills per second through decide() for 10 000 lab bills.

    .venv/bin/python benchmarks/decide.py [--bills 10000]

The claim is read from a real NPR-BKM message (built like tests/claims.py), then
`decide.evaluate` runs every rule on every bill and line with the shipped tariffs.
The ledger's bill history is an in-memory stand-in here: this measures the rules, not
SQLite (the end-to-end figure is benchmarks/throughput.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import config  # noqa: E402
from daemon.claims.read import read_claim  # noqa: E402
from daemon.registers import (  # noqa: E402
    registry,
    tariffs,
)
from daemon.rules import decide  # noqa: E402
from daemon.rules.context import NoBillHistory, RuleContext  # noqa: E402
from tests.claims import B, C, L, msghead, person_number  # noqa: E402

LINES = (L("NOR05003", "6.96"), L("NPU01685", "23.18", 2), L("NPU21747", "463.39"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bills", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    # every bill its own patient: a realistic claim, not 10 000 duplicates of a few
    births = [f"{day:02d}0180" for day in range(1, 29)]  # ~800 valid numbers per birth date
    bills = tuple(
        B(LINES[: 1 + i % 3], regning_nr=str(i), fnr=person_number(i // 28, births[i % 28]))
        for i in range(args.bills)
    )
    root = etree.fromstring(msghead(C(bills)))
    melding = root.find(".//{http://www.npr.no/xmlstds}Melding")
    claim = read_claim(melding)
    settings = config.load(ROOT / "config" / "kravmottak.toml")
    reg = registry.load(ROOT / "config" / "partners.toml", ROOT / "config" / "institutions.toml")
    rc = RuleContext(
        today=datetime(2026, 11, 23, tzinfo=UTC).date(),
        claim=claim,
        tariffs=tariffs.load(tariffs.SHIPPED_DIR),
        institution=reg.institution(claim.institution_id),
        history=NoBillHistory(),
        settings=settings.rules,
    )
    best = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        problems, decision = decide.evaluate(claim, rc, decide.RULEBOOK)
        best = min(best, time.perf_counter() - started)
    lines = sum(len(b.lines) for b in claim.bills)
    approved = sum(1 for b in decision.bills if b.verdict == "approved")
    print(
        f"{'bills':>7} {'lines':>7} {'rules run':>10} {'best s':>8} {'bills/s':>9} {'lines/s':>9}"
    )
    print(
        f"{len(claim.bills):>7} {lines:>7} {decision.evaluations:>10} {best:>8.3f} "
        f"{len(claim.bills) / best:>9.0f} {lines / best:>9.0f}"
    )
    print(f"approved bills: {approved}, problems: {len(problems)}")
    assert approved == len(claim.bills), "the benchmark claim should be all valid"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
