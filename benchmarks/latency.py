"""Drop-to-AppRec latency of the running daemon (live intake through inotify).

    .venv/bin/python benchmarks/latency.py [--rate 50] [--seconds 60] [--bills 1]

Starts the real daemon (`python -m daemon run`) on a fresh sandbox, drops signed-off
claims into its inbox at a steady rate the way a hospital does (written under a
temporary name, then renamed), and measures for each message the time from the rename
to its AppRec in the outbox (the AppRec file's mtime: it is renamed into place when
complete). Prints p50/p90/p99/max and throughput. The interval poll is set to 5 s, so
the figures show the inotify path, not the poll.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import cli, config  # noqa: E402
from daemon.tools.wrap import wrap  # noqa: E402
from daemon.transport import (  # noqa: E402
    keys,
    mime,
)
from tests.claims import B, C, L, msghead, person_number  # noqa: E402

REF = re.compile(rb"<eb:RefToMessageId>([^<]+)</eb:RefToMessageId>")


def sandbox(root: Path) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["init", str(root)])
    (root / "partners.toml").write_text((ROOT / "config" / "partners.toml").read_text())
    (root / "institutions.toml").write_text((ROOT / "config" / "institutions.toml").read_text())
    cfg = root / "kravmottak.toml"
    text = cfg.read_text().replace("poll_interval_seconds = 1.0", "poll_interval_seconds = 5.0")
    text = text.replace("[intake]\n", '[intake]\nfixed_time = "2026-11-23T12:00:00Z"\n')
    cfg.write_text(text)
    s = config.load(cfg)
    keys.generate(
        s.paths.private_key,
        s.paths.certificate,
        her_id="79768",
        orgnr="889640782",
        name="HELFO",
        days=3650,
    )
    return cfg


def message(n: int, bills: int) -> bytes:
    specs = tuple(
        B(
            (L("NOR05003", "6.96"),),
            regning_nr=str(i + 1),
            # ~740 numbers per birth date: a new date every 700 messages (each new date
            # costs a search for its valid numbers)
            fnr=person_number(
                (n * bills + i) % 700, born=f"{1 + (n * bills + i) // 700 % 28:02d}0375"
            ),
            date=f"2026-10-{1 + i % 28:02d}T{n % 24:02d}:{n // 24 % 60:02d}:00",
        )
        for i in range(bills)
    )
    return wrap(msghead(C(specs)), from_her="90001", cpa_id="kravmottak:demo:1",
                message_id=f"lat-{n}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="messages per second")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--bills", type=int, default=1, help="bills per message")
    args = ap.parse_args()
    total = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sandbox(Path(tmp) / "sandbox")
        paths = config.load(cfg).paths
        payloads = [message(n, args.bills) for n in range(total)]
        out = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(cfg), "run"],
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
        try:
            log = Path(tmp) / "daemon.log"
            deadline = time.monotonic() + 60
            while b'"started"' not in log.read_bytes():
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            dropped: dict[str, float] = {}
            start = time.monotonic()
            for n, raw in enumerate(payloads):
                due = start + n / args.rate
                time.sleep(max(0.0, due - time.monotonic()))
                tmpname = paths.inbox / f".lat-{n}.tmp"
                tmpname.write_bytes(raw)
                dropped[f"lat-{n}"] = time.time()
                os.rename(tmpname, paths.inbox / f"lat-{n}.msg")
            sent_for = time.monotonic() - start
            deadline = time.monotonic() + 300
            while len(list(paths.outbox.glob("apprec-*"))) < total:
                if time.monotonic() > deadline:
                    raise SystemExit("not every message was answered within 5 minutes")
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            out.close()
        latencies = []
        for path in paths.outbox.glob("apprec-*"):
            multipart, _ = mime.parse(path.read_bytes())
            ref = REF.search(multipart.start.data).group(1).decode()
            latencies.append(path.stat().st_mtime - dropped[ref])
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    print(
        f"{total} messages of {args.bills} bill(s), dropped at {args.rate:g}/s for {sent_for:.1f} s"
    )
    print("   p50 ms   p90 ms   p99 ms   max ms   mean ms")
    print(
        f"{pct(50):9.1f}{pct(90):9.1f}{pct(99):9.1f}{latencies[-1] * 1000:9.1f}"
        f"{statistics.mean(latencies) * 1000:10.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
