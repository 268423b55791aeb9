"""Throughput of the intake: the XSD floor against kravmottak end to end.

    .venv/bin/python benchmarks/throughput.py [--messages 200] [--bills 1 10 100]

For each bills-per-message size it makes a sandbox, drops N wrapped claims and runs
one `process` pass (unwrap, XSD, read, rules, ledger, AppRec written), and compares
with the floor: lxml parse + XSD validation of the same payloads and nothing else.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import cli, config, service  # noqa: E402
from daemon.schemas import Schemas  # noqa: E402
from daemon.wrap import wrap  # noqa: E402

DEMO = (ROOT / "tests" / "data" / "claim-demo.xml").read_text(encoding="utf-8")
BILL = re.search(r"<EnkeltRegning .*?/>", DEMO, re.S).group(0)
PATIENT = re.search(r"<Pasient>.*?</Pasient>", DEMO, re.S).group(0)


def claim(bills: int) -> bytes:
    """The demo claim grown to `bills` bills of 160.00 each (one patient/episode per bill)."""
    regs, patients = [], []
    for i in range(1, bills + 1):
        regs.append(
            BILL.replace('regningNr="1001"', f'regningNr="{i}"')
            .replace('episodeID="1"', f'episodeID="{i}"')
            .replace("000000000001", f"{i:012d}")
        )
        patients.append(PATIENT.replace('episodeID="1"', f'episodeID="{i}"'))
    text = re.sub(r"<EnkeltRegning .*</Krav>", "\n".join(regs) + "</Krav>", DEMO, flags=re.S)
    text = re.sub(r"<Pasient>.*</Pasient>", "\n".join(patients), text, flags=re.S)
    text = re.sub(
        r'antallRegninger="\d+" sumKravBelop="[\d.]+"',
        f'antallRegninger="{bills}" sumKravBelop="{160 * bills}.00"',
        text,
    )
    return text.replace("5e0b7c1a-3f0e-4f7a-9a1d-0c2b4d6e8f10", str(uuid.uuid4())).encode()


def floor(payloads: list[bytes], schemas: Schemas) -> float:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    started = time.perf_counter()
    for p in payloads:
        assert schemas.msghead.validate(etree.fromstring(p, parser))
    return time.perf_counter() - started


def end_to_end(messages: list[bytes]) -> float:
    root = Path(tempfile.mkdtemp(prefix="kravmottak-bench-"))
    try:
        cli.main(["init", str(root / "sb")])
        shutil.copy(ROOT / "config" / "partners.toml", root / "sb" / "partners.toml")
        settings = config.load(root / "sb" / "kravmottak.toml")
        for i, raw in enumerate(messages):
            (settings.paths.inbox / f"m{i:05d}.msg").write_bytes(raw)
        past = time.time() - 10
        for p in settings.paths.inbox.iterdir():
            import os

            os.utime(p, (past, past))
        intake = service.build(settings)
        started = time.perf_counter()
        intake.drain()
        took = time.perf_counter() - started
        answered = len(list(settings.paths.outbox.glob("apprec-*")))
        assert answered == len(messages), (answered, len(messages))
        intake.ledger.close()
        return took
    finally:
        shutil.rmtree(root)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--bills", type=int, nargs="+", default=[1, 10, 100])
    args = ap.parse_args()
    import logging

    from daemon import logs

    logs.configure("error")
    logging.disable(logging.WARNING)
    schemas = Schemas.load()
    print(
        f"{'bills/msg':>9} {'msgs':>5} {'floor s':>8} {'e2e s':>8} {'ratio':>6} "
        f"{'bills/s':>9} {'msgs/s':>8}"
    )
    for bills in args.bills:
        payloads = [claim(bills) for _ in range(args.messages)]
        messages = [wrap(p, from_her="90001", cpa_id="kravmottak:demo:1") for p in payloads]
        f = floor(payloads, schemas)
        e = end_to_end(messages)
        total = bills * args.messages
        print(
            f"{bills:>9} {args.messages:>5} {f:>8.3f} {e:>8.3f} {e / f:>6.2f} "
            f"{total / e:>9.0f} {args.messages / e:>8.1f}"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
