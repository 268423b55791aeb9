"""One big message: is it processed within bounded memory, or refused cleanly?

    .venv/bin/python benchmarks/big_message.py [--mb 100 20] [--max-file-mb 128]

For each size it builds one claim with as many lab bills as make an ebMS file of about
that many megabytes (unsigned, so that it is streamed: a signed payload is verified
whole, see the README's "Big claims"), drops it into a fresh sandbox and runs
`kravmottak process` as a child process, then prints the outcome (AppRec status and
error code), the time, bills/s and the child's peak RSS. A payload over `[intake]
stream_above_bytes` (8 MB) is read as a stream and judged in chunks; a file over
`max_file_bytes` (128 MB by default) is refused unread.

The outcome is asserted, not just printed: a file within the limit must be answered
with status 1 and every bill approved (unique patients, valid lines); a file over it
must be refused with status 2 and T99. Targets (#17): 100 MB processed with peak RSS
below 300 MB and at least 5 000 bills/s.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import assert_all_approved, machine, sandbox  # noqa: E402
from daemon import config  # noqa: E402
from daemon.tools.wrap import wrap  # noqa: E402
from tests.claims import B, C, L, msghead, person_number  # noqa: E402

BYTES_PER_BILL = 430  # an EnkeltRegning and its Pasient with one Takst, measured
# `kravmottak process` in a child that reports its own peak RSS (KiB) on stderr: VmHWM,
# which starts afresh at exec (ru_maxrss would keep the forking parent's pages)
CHILD = (
    "import re, sys; from daemon import cli; "
    "rc = cli.main(['--config', sys.argv[1], 'process']); "
    "status = open('/proc/self/status').read(); "
    "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr); "
    "sys.exit(rc)"
)


def big_claim(bills: int) -> bytes:
    specs = tuple(
        B(
            (L("NOR05003", "6.96"),),
            regning_nr=str(i + 1),
            fnr=person_number(
                i % 700, born=f"{1 + i // 700 % 28:02d}{1 + i // 19600 % 12:02d}7{i // 235200 % 10}"
            ),
            date=f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:{i // 24 % 60:02d}:00",
        )
        for i in range(bills)
    )
    return msghead(C(specs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[100.0, 20.0])
    ap.add_argument("--max-file-mb", type=float, default=128.0, help="[intake] max_file_bytes")
    args = ap.parse_args()
    limit = int(args.max_file_mb * 1024 * 1024)
    print(f"machine: {machine()}")
    print(
        f"{'file MB':>8} {'bills':>8} {'outcome':>22} {'seconds':>8} {'bills/s':>8} "
        f"{'peak RSS MB':>12}"
    )
    for mb in args.mb:
        bills = int(mb * 1_000_000 / BYTES_PER_BILL)
        raw = wrap(big_claim(bills), from_her="90001", cpa_id="kravmottak:demo:1",
                   message_id=f"big-{mb:g}")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            cfg = sandbox(Path(tmp) / "sb", stable_seconds=0.0, max_file_bytes=limit)
            paths = config.load(cfg).paths
            (paths.inbox / "big.msg").write_bytes(raw)
            within = len(raw) <= limit
            del raw
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(cfg)],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            took = time.perf_counter() - started
            rss = int(done.stderr.decode().strip().splitlines()[-1])
            size = sum(p.stat().st_size for p in paths.archive.rglob("*") if p.is_file()) + sum(
                p.stat().st_size for p in paths.quarantine.glob("*.msg")
            )
            (apprec,) = paths.outbox.glob("apprec-*")
            text = apprec.read_bytes()
            status = re.search(rb'<Status V="(\d)"', text)
            code = re.search(rb'<Error V="([A-Z0-9]+)"', text)
            outcome = f"status {status.group(1).decode() if status else '?'}"
            outcome += f" {code.group(1).decode()}" if code else ""
            if within:  # read and judged: every bill approved
                assert outcome == "status 1", outcome
                assert_all_approved(cfg, 1, bills)
            else:  # refused unread
                assert outcome == "status 2 T99", outcome
        rate = f"{bills / took:>8.0f}" if within else f"{'-':>8}"
        print(
            f"{size / 1e6:>8.1f} {bills:>8} {outcome:>22} {took:>8.1f} {rate} {rss / 1024:>12.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
