"""Tariff lookups: 10 000 code and rate look-ups in the shipped tables.

    .venv/bin/python benchmarks/tariff_lookups.py [--lookups 10000]

A guard against a linear scan creeping into `Tariffs.code`/`Tariffs.rate` (target:
well under 50 ms for 10 000). Moved here from the tests: a wall-clock bound fails on a
busy machine. Exit status 1 when the best of `--repeat` runs misses `--limit`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.registers import tariffs  # noqa: E402


def lookups(shipped: tariffs.Tariffs, n: int) -> float:
    """Seconds for `n` look-ups of 100 codes on 20 days."""
    codes = list(shipped.codes)[:: len(shipped.codes) // 100][:100]
    days = [date(2023, m, d) for m in range(1, 11) for d in (1, 15)]
    start = time.perf_counter()
    for i in range(n):
        code = shipped.code(codes[i % len(codes)], days[i % len(days)])
        if code.category:
            shipped.rate(code.category, "stat", days[i % len(days)])
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookups", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--limit", type=float, default=0.5, help="seconds, best run")
    args = ap.parse_args()
    shipped = tariffs.load(tariffs.SHIPPED_DIR)
    best = min(lookups(shipped, args.lookups) for _ in range(args.repeat))
    print(f"{args.lookups} lookups: best {best * 1000:.1f} ms ({args.lookups / best:.0f}/s)")
    return 0 if best < args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
