"""The folders: inbox → work → archive | quarantine, and the outbox.

- A file is *claimed* by `os.rename` from `inbox/` into `work/` (same filesystem):
  exactly one worker wins the rename, the others get `FileNotFoundError`.
- A file is left alone while a writer may still be busy with it: hidden names,
  temporary suffixes, and anything whose mtime is younger than `stable_seconds`.
- Every file we write is written to a temporary name, fsynced, renamed, and its
  folder fsynced, so a reader never sees half a file and a crash never leaves one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daemon.config import Intake, Paths
from daemon.masking import mask


@dataclass(frozen=True, slots=True)
class Candidate:
    path: Path
    size: int
    mtime: float


def ensure_folders(paths: Paths) -> None:
    for folder in paths.folders():
        folder.mkdir(parents=True, exist_ok=True)


def _incomplete_name(name: str, intake: Intake) -> bool:
    return name.startswith(".") or name.endswith(intake.temp_suffixes)


def scan(
    inbox: Path,
    intake: Intake,
    now: float | None = None,
    seen: dict[str, tuple[int, float, float]] | None = None,
    complete: set[str] | frozenset[str] = frozenset(),
) -> tuple[list[Candidate], int]:
    """Files ready to claim (oldest first), and how many are still settling.

    Ready: mtime at least `stable_seconds` old. A file whose mtime lies in the future
    (a writer with a skewed clock) is ready once its size and mtime have not changed
    for `stable_seconds` of our own time; `seen` carries those observations between
    scans (name → (size, mtime, first seen)). `complete`: names the inotify watcher saw
    renamed into the inbox or closed after writing: whole, so ready without the wait."""
    now = time.time() if now is None else now
    ready, settling = [], 0
    with os.scandir(inbox) as entries:
        for entry in entries:
            if _incomplete_name(entry.name, intake) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # taken by someone else meanwhile
            age = now - st.st_mtime
            if age < 0 and seen is not None:
                size, mtime, since = seen.get(entry.name, (-1, -1.0, now))
                if (size, mtime) != (st.st_size, st.st_mtime):
                    since = now
                seen[entry.name] = (st.st_size, st.st_mtime, since)
                age = now - since
            if age < intake.stable_seconds and entry.name not in complete:
                settling += 1
                continue
            ready.append(Candidate(Path(entry.path), st.st_size, st.st_mtime))
    if seen is not None:  # forget files that have left the inbox
        present = {c.path.name for c in ready} | {n for n in seen if (inbox / n).exists()}
        for gone in set(seen) - present:
            del seen[gone]
    ready.sort(key=lambda c: (c.mtime, c.path.name))
    return ready, settling


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(original: str, limit: int = 120) -> str:
    """The original name as plain ASCII of bounded length: senders' names may hold
    undecodable bytes (surrogates) or be near the file system's 255-byte limit."""
    cleaned = _UNSAFE.sub("_", mask(original)).strip("_.") or "file"
    return cleaned[-limit:]


def work_name_for(original: str, now: datetime) -> str:
    """A unique name in work/ that still shows (a safe form of) the original name."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{secrets.token_hex(4)}--{safe_name(original)}"


def original_name(work_name: str) -> str:
    return work_name.split("--", 1)[1] if "--" in work_name else work_name


def claim(candidate: Candidate, work_dir: Path, now: datetime) -> Path | None:
    """Move the file into work/; None when another worker got it first."""
    target = work_dir / work_name_for(candidate.path.name, now)
    try:
        os.rename(candidate.path, target)
    except FileNotFoundError:
        return None
    return target


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes, *, sync_folder: bool = True) -> None:
    """Write `content` to `path` so that it appears whole or not at all. With
    `sync_folder=False` the caller fsyncs the folder once after several files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_folder:
        fsync_dir(path.parent)


# what `write_atomic` names its temporary file: .<name>.<8 hex>.tmp
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def remove_stale_temps(folder: Path) -> list[str]:
    """Delete the temporary files a killed `write_atomic` left behind. Only while no
    write is under way in this process (start-up, or recovery in the poll thread)."""
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if _TEMP_NAME.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return sorted(removed)


def write_if_changed(path: Path, content: bytes, *, sync_folder: bool = True) -> bool:
    """Idempotent write for recovery: an identical file already there is kept."""
    try:
        if path.stat().st_size == len(content) and path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, content, sync_folder=sync_folder)
    return True


def move(src: Path, dest_dir: Path, *, sync_folder: bool = True) -> Path:
    """Rename into `dest_dir`. `sync_folder=False` where a lost rename is harmless."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    os.replace(src, dest)
    if sync_folder:
        fsync_dir(dest_dir)
    return dest


def write_error_file(quarantine: Path, work_name: str, report: dict) -> Path:
    path = quarantine / f"{work_name}.err.json"
    data = json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8")
    write_if_changed(path, data)
    return path
