"""Throughput of the intake: the XSD floor against kravmottak end to end.

    .venv/bin/python benchmarks/throughput.py [--messages 200] [--bills 1 10 100]

For each bills-per-message size it makes a sandbox, drops N wrapped claims and runs
one `process` pass (unwrap, XSD, read, rules, ledger, AppRec written), and compares
with the floor: lxml parse + XSD validation of the same payloads and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import cli, config  # noqa: E402
from daemon.schemas import Schemas  # noqa: E402
from daemon.service import runner as service  # noqa: E402
from daemon.tools.wrap import wrap  # noqa: E402
from tests.claims import B, C, L, msghead, person_number  # noqa: E402

LINES = (L("NOR05003", "6.96"), L("NPU01685", "23.18", 2), L("NPU21747", "463.39"))
PATIENTS = [person_number(n) for n in range(500)]


def claim(bills: int) -> bytes:
    """A valid lab claim of `bills` bills (1-3 lines each), all new uuids and patients."""
    offset = random.randrange(10_000)
    specs = tuple(
        B(
            LINES[: 1 + i % 3],
            regning_nr=str(i + 1),
            fnr=PATIENTS[(offset + i) % len(PATIENTS)],
            date=f"2026-10-{1 + (offset + i) % 28:02d}T{(offset + i) % 24:02d}:{i % 60:02d}:00",
        )
        for i in range(bills)
    )
    return msghead(C(specs))


def floor(payloads: list[bytes], schemas: Schemas) -> float:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    started = time.perf_counter()
    for p in payloads:
        assert schemas.msghead.validate(etree.fromstring(p, parser))
    return time.perf_counter() - started


def end_to_end(messages: list[bytes]) -> float:
    root = Path(tempfile.mkdtemp(prefix="kravmottak-bench-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["init", str(root / "sb")])
        shutil.copy(ROOT / "config" / "partners.toml", root / "sb" / "partners.toml")
        cfg = root / "sb" / "kravmottak.toml"
        cfg.write_text(
            cfg.read_text().replace("[intake]\n", '[intake]\nfixed_time = "2026-11-23T12:00:00Z"\n')
        )
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
        status = intake.ledger.counts()
        assert status["answered"] == len(messages), status  # every claim valid, none refused
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
