"""Drop-to-AppRec latency of the running daemon (live intake through inotify).

    .venv/bin/python benchmarks/latency.py [--rate 50] [--seconds 60] [--bills 1]

Starts the real daemon (`python -m daemon run`) on a fresh sandbox, drops signed-off
claims into its inbox at a steady rate the way a hospital does (written under a
temporary name, then renamed), and measures for each message the time from the rename
to the moment its AppRec is visible in the outbox under its final name: an inotify
watch on the outbox (IN_MOVED_TO, the daemon's atomic rename) stamps each name as it
appears, not the file's mtime (set before its fsync and rename). Prints p50/p90/p99/max.
The interval poll is set to 5 s, so the figures show the inotify path, not the poll.
Afterwards it asserts every AppRec has status 1 and every bill was approved: the
claims are seeded and signed (`benchmarks.common.signed_claims`), each patient once.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import assert_all_approved, machine, sandbox, signed_claims  # noqa: E402
from daemon import config  # noqa: E402
from daemon.transport import mime  # noqa: E402

REF = re.compile(rb"<eb:RefToMessageId>([^<]+)</eb:RefToMessageId>")
MID = re.compile(rb"<eb:MessageId>([^<]+)</eb:MessageId>")
IN_MOVED_TO = 0x80


class Appearances(threading.Thread):
    """When each file appears in a folder under its final name (inotify IN_MOVED_TO,
    read by a thread blocked on the descriptor): name -> time.time() of the event."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, bytes(folder), IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # closed: the run is over
                return
            now = time.time()
            at = 0
            while at < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, at)
                name = data[at + 16 : at + 16 + length].rstrip(b"\0").decode()
                self.seen.setdefault(name, now)
                at += 16 + length

    def close(self) -> None:
        os.close(self.fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="messages per second")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--bills", type=int, default=1, help="bills per message")
    args = ap.parse_args()
    total = int(args.rate * args.seconds)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sandbox(Path(tmp) / "sandbox", poll_interval_seconds=5.0)
        paths = config.load(cfg).paths
        named = signed_claims(cfg, total, args.bills, seed=50, prefix="lat")
        out = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(cfg), "run"],
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
        watch = Appearances(paths.outbox)
        watch.start()
        try:
            log = Path(tmp) / "daemon.log"
            deadline = time.monotonic() + 60
            while b'"started"' not in log.read_bytes():
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            dropped: dict[str, float] = {}
            start = time.monotonic()
            for n, (name, raw) in enumerate(named):
                due = start + n / args.rate
                time.sleep(max(0.0, due - time.monotonic()))
                tmpname = paths.inbox / f".{name}.tmp"
                tmpname.write_bytes(raw)
                dropped[MID.search(raw).group(1).decode()] = time.time()
                os.rename(tmpname, paths.inbox / name)
            sent_for = time.monotonic() - start
            deadline = time.monotonic() + 300
            while sum(n.startswith("apprec-") for n in list(watch.seen)) < total:
                if time.monotonic() > deadline:
                    raise SystemExit("not every message was answered within 5 minutes")
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            out.close()
            watch.close()
        assert_all_approved(cfg, total, args.bills)
        latencies = []
        for path in paths.outbox.glob("apprec-*"):
            multipart, _ = mime.parse(path.read_bytes())
            ref = REF.search(multipart.start.data).group(1).decode()
            latencies.append(watch.seen[path.name] - dropped[ref])
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
    print("every AppRec status 1, every bill approved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
