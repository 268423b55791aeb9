"""Backups and retention: `kravmottak backup DEST` and `kravmottak archive prune`.

`backup` copies the ledger with SQLite's online backup API, consistent even while the
daemon writes to it (no need to stop it), checks the copy (`PRAGMA integrity_check`)
and copies beside it what is needed to read it again: the config, partners,
institutions and the imported registers (tariffs folder). Our private key is *not*
copied: it is a secret with its own custody. A `MANIFEST.json` lists every file with
its size and SHA-256.

`archive prune` removes `archive/YYYY-MM-DD/` folders older than the retention (by the
folder's date): the ledger keeps every outcome, every decision and the bytes of every
answer, so the originals are what goes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from daemon.config import ConfigError, Settings
from daemon.ledger.backends import sqlite_only
from daemon.ledger.sqlite import SqliteLedger

DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def backup(settings: Settings, dest: Path) -> list[tuple[str, int]]:
    """Write the backup into `dest` (new, or an empty folder). Returns (file, size)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} exists and is not an empty folder: give a new one")
    if not dest.parent.is_dir():
        raise ConfigError(f"{dest.parent}: no such folder")
    sqlite_only(settings, "`kravmottak backup`")
    dest.mkdir(exist_ok=True)
    paths = settings.paths
    ledger_copy = dest / paths.ledger.name
    source = SqliteLedger(paths.ledger, readonly=True)
    try:
        source.backup(ledger_copy)
    finally:
        source.close()
    with sqlite3.connect(ledger_copy) as db:
        (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
    if verdict != "ok":
        raise RuntimeError(f"the ledger copy fails its integrity check: {verdict}")
    for path in (settings.source, paths.partners, paths.institutions):
        if path.is_file():
            shutil.copy2(path, dest / path.name)
    if paths.tariffs.is_dir():
        shutil.copytree(paths.tariffs, dest / "tariffs", ignore=shutil.ignore_patterns(".*"))
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    manifest = {
        "ledger": paths.ledger.name,
        "files": [
            {"file": str(p.relative_to(dest)), "bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in files
        ],
    }
    (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [(str(p.relative_to(dest)), p.stat().st_size) for p in files]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def parse_age(text: str) -> int:
    """`400d` or `400` -> 400 days; ValueError otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*d?\s*", text)
    if not found:
        raise ValueError(f"{text!r} is not a number of days (e.g. 400d)")
    return int(found.group(1))


@dataclass(frozen=True)
class Pruned:
    folder: str
    files: int
    bytes: int


def prune(archive: Path, keep_days: int, today: date, *, dry_run: bool) -> list[Pruned]:
    """Remove the day folders of `archive` dated more than `keep_days` before `today`."""
    if not archive.is_dir():
        raise ConfigError(f"archive folder not found: {archive}")
    limit = today - timedelta(days=keep_days)
    out = []
    for folder in sorted(archive.iterdir()):
        if not (folder.is_dir() and DAY_FOLDER.match(folder.name)):
            continue
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if day >= limit:
            continue
        found = [p for p in folder.rglob("*") if p.is_file()]
        out.append(Pruned(folder.name, len(found), sum(p.stat().st_size for p in found)))
        if not dry_run:
            shutil.rmtree(folder)
    return out
