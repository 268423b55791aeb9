"""Throughput of the intake against a floor no implementation can go below.

    .venv/bin/python benchmarks/throughput.py [--messages 200] [--bills 1 10 100]
        [--ledger postgresql://...|temp] [--workers 1 2]

For each bills-per-message size it generates signed claims (seeded, every patient used
once, no defects), measures the floor on them, then drops them into a fresh sandbox
and times one `drain` of the real intake (MIME, envelope, agreement, signatures, XSD,
rules, ledger, AppRec and Ack signed and written, originals archived). Afterwards it
asserts that every AppRec has status 1 and every bill was approved in full: refused
bills are not throughput. `--ledger`: the ledger on that PostgreSQL server, a fresh
database per size (`kravmottak_bench_<bills>`, made with the URL's rights); default
the sandbox's SQLite file; `temp`: a throw-away cluster started here (tests/pg.py).
`--workers 1 2`: the same table per worker count, e2e then being N real daemons
(`kravmottak run --worker-id wI`, started and ready before the claims are dropped) from
the first claim written to the last one archived; more than one needs PostgreSQL.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    assert_all_approved,
    fresh_database,
    machine,
    sandbox,
    signed_claims,
)
from daemon import config, logs  # noqa: E402
from daemon.ledger import migrate  # noqa: E402
from daemon.registers import registry  # noqa: E402
from daemon.schemas import Schemas  # noqa: E402
from daemon.service import runner as service  # noqa: E402
from daemon.transport import keys, mime, trust  # noqa: E402

FLOOR = """\
floor: per message, MIME split, lxml parse + XSD validation of the SOAP envelope and
of the MsgHead (with the claim inside), verification of both inbound XML signatures
(ebXML header over envelope and payload, MsgHead enveloped) against the partner's
certificate, one RSA-2048 signature for the AppRec and one for the Acknowledgment
(asked for), and one fsync per batch of {batch} messages (the group commit's size).
Measured in the same run on the same messages; e2e = the real intake's drain."""
EB = "http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd"
XLINK = "http://www.w3.org/1999/xlink"


def floor(
    messages: list[bytes], schemas: Schemas, trusted: trust.Trusted, ours, batch: int, at
) -> float:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    scratch = tempfile.NamedTemporaryFile(prefix="floor-")  # noqa: SIM115
    started = 0.0
    for n, raw in enumerate([messages[0], *messages], start=-1):  # [0] again: warm-up
        if n == 0:
            started = time.perf_counter()
        multipart, problem = mime.parse(raw)
        assert problem is None
        envelope = etree.fromstring(multipart.start.data, parser)
        assert schemas.envelope.validate(envelope)
        # the manifest's one cid (read without ebms.read_header: not part of the floor)
        (href,) = [r.get(f"{{{XLINK}}}href") for r in envelope.iter(f"{{{EB}}}Reference")]
        attachments = {p.content_id: p.data for p in multipart.attachments}
        assert trust.verify_envelope(envelope, attachments, (href,), trusted, at, required=True)
        msghead = etree.fromstring(attachments[href[4:]], parser)
        assert schemas.msghead.validate(msghead)
        assert trust.verify_msghead(msghead, trusted, at, required=True)
        for answer in (b"apprec", b"ack"):
            ours.private_key.sign(answer + raw[:64], padding.PKCS1v15(), hashes.SHA256())
        if n % batch == batch - 1 or n == len(messages) - 1:
            scratch.write(b"x")
            scratch.flush()
            os.fsync(scratch.fileno())
    took = time.perf_counter() - started
    scratch.close()
    return took


def end_to_end(cfg: Path, named: list[tuple[str, bytes]]) -> float:
    from benchmarks import generate as g

    settings = config.load(cfg)
    g.write(settings.paths.inbox, named, age_seconds=10)
    intake = service.build(settings)
    try:
        started = time.perf_counter()
        intake.drain()
        return time.perf_counter() - started
    finally:
        intake.ledger.close()


def end_to_end_workers(cfg: Path, named: list[tuple[str, bytes]], workers: int) -> float:
    """N daemons on one inbox: ready first, then the claims dropped; the seconds from
    the first write to the last original archived."""
    import signal
    import subprocess

    from benchmarks import generate as g

    settings = config.load(cfg)
    logs_dir = cfg.parent / "worker-logs"
    logs_dir.mkdir(exist_ok=True)
    procs = []
    for i in range(workers):
        err = open(logs_dir / f"w{i + 1}.log", "wb")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "daemon", "--config", str(cfg), "run"]
        procs.append((subprocess.Popen([*command, "--worker-id", f"w{i + 1}"], stderr=err), err))

    def wait(condition, what: str) -> None:
        deadline = time.monotonic() + 600
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            for proc, _ in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited ({proc.returncode}): see {logs_dir}")
            time.sleep(0.005)

    def started(i: int) -> bool:
        return b'"event": "started"' in (logs_dir / f"w{i + 1}.log").read_bytes()

    def archived() -> int:
        return sum(1 for p in settings.paths.archive.rglob("*") if p.is_file())

    try:
        wait(lambda: all(started(i) for i in range(workers)), "the workers to start")
        t0 = time.perf_counter()
        g.write(settings.paths.inbox, named, age_seconds=10)
        wait(lambda: archived() >= len(named), "every claim archived")
        return time.perf_counter() - t0
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, err in procs:
            proc.wait(timeout=120)
            err.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--bills", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--ledger", help="postgresql://...: a fresh database per size on it")
    ap.add_argument(
        "--workers", type=int, nargs="+", help="daemons on one inbox (more than 1: PostgreSQL)"
    )
    args = ap.parse_args()
    if args.workers and max(args.workers) > 1 and not args.ledger:
        ap.error("several workers need a PostgreSQL ledger: --ledger URL or --ledger temp")
    cluster = None
    if args.ledger == "temp":
        from tests import pg

        bindir = pg.binaries()
        if bindir is None:
            ap.error("--ledger temp: PostgreSQL's initdb/pg_ctl not found")
        cluster = pg.Cluster(bindir).start()
        args.ledger = cluster.url("postgres")
    try:
        for workers in args.workers or [None]:
            if workers is not None:
                print(f"\n== {workers} worker(s)")
            table(args, workers)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


def table(args: argparse.Namespace, workers: int | None) -> None:
    logs.configure("error")
    logging.disable(logging.WARNING)
    schemas = Schemas.load()
    print(f"machine: {machine()}")
    print(f"ledger: {'PostgreSQL, ' + migrate.redact(args.ledger) if args.ledger else 'SQLite'}")
    rows = []
    batch = 1
    with tempfile.TemporaryDirectory(prefix="kravmottak-bench-") as tmp:
        for bills in args.bills:
            name = f"kravmottak_bench_{bills}" + (f"_w{workers}" if workers else "")
            url = fresh_database(args.ledger, name) if args.ledger else None
            cfg = sandbox(Path(tmp) / f"sb-{bills}", ledger=url)
            settings = config.load(cfg)
            batch = getattr(settings.intake, "commit_batch_messages", 1)
            named = signed_claims(cfg, args.messages, bills, seed=bills)
            partner = registry.load(settings.paths.partners, settings.paths.institutions)
            (sender,) = [p for p in partner.partners if p.her_id == "90001"]  # the generator's
            ours = keys.load_pair(settings.paths.private_key, settings.paths.certificate, None)
            at = datetime(2026, 11, 23, 12, tzinfo=UTC)
            trusted = trust.Trusted(sender.certs)
            f = floor([raw for _, raw in named], schemas, trusted, ours, batch, at)
            if workers is None:
                e = end_to_end(cfg, named)
            else:
                e = end_to_end_workers(cfg, named, workers)
            assert_all_approved(cfg, args.messages, bills)
            rows.append((bills, args.messages, f, e))
    print(FLOOR.format(batch=batch))
    if workers is not None:
        print(f"e2e here: {workers} daemon(s), from the first claim written to the last archived")
    print(
        f"{'bills/msg':>9} {'msgs':>5} {'floor s':>8} {'e2e s':>8} {'ratio':>6} "
        f"{'bills/s':>9} {'msgs/s':>8}"
    )
    for bills, msgs, f, e in rows:
        print(
            f"{bills:>9} {msgs:>5} {f:>8.3f} {e:>8.3f} {e / f:>6.2f} "
            f"{bills * msgs / e:>9.0f} {msgs / e:>8.1f}"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"every AppRec status 1, every bill approved; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
