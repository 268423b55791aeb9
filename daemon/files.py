"""The folders: inbox → work → archive | quarantine, and the outbox.

- A file is *claimed* by `os.rename` from `inbox/` into `work/` (same filesystem):
  exactly one worker wins the rename, the others get `FileNotFoundError`.
- A file is left alone while a writer may still be busy with it: hidden names,
  temporary suffixes, and anything whose mtime is younger than `stable_seconds`.
- Every file we write is written to a temporary name, fsynced, renamed, and its
  folder fsynced, so a reader never sees half a file and a crash never leaves one.
- A claimed file is read only through a descriptor opened with `O_NOFOLLOW |
  O_NONBLOCK` and checked with `fstat`: a regular file with exactly one link. A
  symlink, FIFO, socket, device or directory swapped in between scan and rename, or
  a file a sender keeps a hidden hard link to, is refused (`Refused`), never read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from concurrent.futures import ThreadPoolExecutor
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


FOLDER_MODE = 0o750  # the service's user and group; nobody else reads claims
FILE_MODE = 0o640  # what we write: outputs, reports
SECRET_MODE = 0o600  # the ledger and private keys


def ensure_folders(paths: Paths) -> None:
    """Create the folders we need as 0750; a folder that exists keeps the mode its
    operator gave it (an inbox may need group write for the sender's handler)."""
    for folder in paths.folders():
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(FOLDER_MODE)


def _incomplete_name(name: str, intake: Intake) -> bool:
    return name.startswith(".") or name.endswith(intake.temp_suffixes)


def scan(
    inbox: Path,
    intake: Intake,
    now: float | None = None,
    seen: dict[str, tuple[int, float, float]] | None = None,
    complete: set[str] | frozenset[str] = frozenset(),
    strays: list[str] | None = None,
) -> tuple[list[Candidate], int]:
    """Files ready to claim (oldest first), and how many are still settling.

    Ready: mtime at least `stable_seconds` old. A file whose mtime lies in the future
    (a writer with a skewed clock) is ready once its size and mtime have not changed
    for `stable_seconds` of our own time; `seen` carries those observations between
    scans (name → (size, mtime, first seen)). `complete`: names the inotify watcher saw
    renamed into the inbox or closed after writing: whole, so ready without the wait.
    `strays` collects the (safe) names of directories, which are never claimed: a
    sender's own working folder, perhaps; `status` counts them and the intake logs them."""
    now = time.time() if now is None else now
    ready, settling = [], 0
    with os.scandir(inbox) as entries:
        for entry in entries:
            # directories are left alone (`strays`); symlinks, FIFOs, sockets and devices
            # are claimed like files, so the claim's fstat check quarantines them
            if _incomplete_name(entry.name, intake):
                continue
            if entry.is_dir(follow_symlinks=False):
                if strays is not None:
                    strays.append(safe_name(entry.name))
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


class Refused(Exception):
    """A claimed entry we will not read, and why (a text for the sender and the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Opened:
    """A claimed file as read through its checked descriptor."""

    raw: bytes | None  # None when over the size limit (then only `prefix` was kept)
    prefix: bytes  # the first `peek` bytes: enough for the ebXML header
    size: int
    mtime: float
    digest: str  # sha256 of the whole content
    links: int


_KINDS = (
    (stat.S_ISDIR, "en katalog"),
    (stat.S_ISFIFO, "en FIFO (navngitt rør)"),
    (stat.S_ISSOCK, "en socket"),
    (stat.S_ISCHR, "en tegnenhet"),
    (stat.S_ISBLK, "en blokkenhet"),
)


def _open_error(exc: OSError) -> Refused:
    if exc.errno == errno.ELOOP:
        return Refused("filen er en symbolsk lenke; den er ikke fulgt og ikke lest")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Refused("filen kan ikke leses (ingen tilgang)")
    if exc.errno == errno.ENXIO:  # a socket, or a device without a driver
        return Refused("filen er ikke en vanlig fil; den er ikke lest")
    return Refused(f"filen kan ikke leses ({errno.errorcode.get(exc.errno, 'I/O-feil')})")


def read_claimed(path: Path, limit: int, peek: int) -> Opened:
    """Read a file claimed into work/ without following links or blocking.

    Raises `Refused` for anything but a readable regular file. A regular file with more
    than one link is read (its header addresses the refusal) and flagged by `links`.
    A file over `limit` bytes is hashed, and only its first `peek` bytes are kept."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _open_error(exc) from None
    try:
        st = os.fstat(fd)
        for test, kind in _KINDS:
            if test(st.st_mode):
                raise Refused(f"filen er {kind}, ikke en vanlig fil; den er ikke lest")
        if not stat.S_ISREG(st.st_mode):
            raise Refused("filen er ikke en vanlig fil; den er ikke lest")
        keep = limit if st.st_size <= limit else peek
        h, chunks, total = hashlib.sha256(), [], 0
        if 0 < st.st_size <= limit:
            # a file we keep is read in one allocation: joined from chunks, a 100 MB
            # claim was held twice for a moment (the peak of benchmarks/big_message.py)
            chunk = os.read(fd, st.st_size)
            h.update(chunk)
            chunks.append(chunk)
            total += len(chunk)
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
            if total <= keep:
                chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _open_error(exc) from None
    finally:
        os.close(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    whole = total <= limit
    return Opened(
        data if whole else None, data[:peek], total, st.st_mtime, h.hexdigest(), st.st_nlink
    )


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
    tmp = temp_path(path)
    try:
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
    except BaseException:
        tmp.unlink(missing_ok=True)  # our own temporary: only a kill leaves one
        raise
    if sync_folder:
        fsync_dir(path.parent)


# --------------------------------------------------------------------------- temporaries
# A temporary file is named for its writer: `.NAME.PID-START.HEX.tmp`, START being
# the process's start time (clock ticks since boot, /proc/PID/stat), so a PID the
# kernel has given to another process does not pass for the writer. A writer removes
# its own temporary when a write fails; only a dead writer's is removed by others.

_TEMP_NAME = re.compile(r"\..+\.(?P<pid>[0-9]+)-(?P<start>[0-9]+)\.[0-9a-f]{8}\.tmp")
_UNOWNED_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # before writers were named
_owner: tuple[int, str] | None = None


def _process_start(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc; None where there is no /proc entry."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
    return fields[0], fields[19]


def _owner_tag() -> str:
    """This process as the owner of a temporary file: `PID-START`."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:  # a forked child is another writer
        state = _process_start(pid)
        _owner = (pid, f"{pid}-{state[1] if state else 0}")
    return _owner[1]


def temp_path(path: Path) -> Path:
    """A new temporary name for writing `path`, owned by this process."""
    return path.with_name(f".{path.name}.{_owner_tag()}.{secrets.token_hex(4)}.tmp")


def writer_alive(pid: int, start: str) -> bool:
    """Is the process that named a temporary `PID-START` still running? A PID now
    held by a process started later is not the writer; a zombie writes no more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    state = _process_start(pid)
    if state is None or start == "0":  # no /proc: the PID is all we know
        return True
    return state[0] != "Z" and state[1] == start


def temp_owner(name: str) -> tuple[int, str] | None:
    """The (PID, start time) that named a temporary file; None for any other name."""
    owned = _TEMP_NAME.fullmatch(name)
    return (int(owned["pid"]), owned["start"]) if owned else None


def stale_temp(name: str) -> bool:
    """Is `name` a temporary file whose writer is gone? Unowned names come from a
    version before writers were named; an upgrade has stopped their writers."""
    owner = temp_owner(name)
    if owner is not None:
        return not writer_alive(*owner)
    return _UNOWNED_TEMP_NAME.fullmatch(name) is not None


def write_all_atomic(items: list[tuple[Path, bytes]]) -> int:
    """Write several files as `write_if_changed` does each (an identical file already
    there is kept; the others appear whole or not at all), but with their fsyncs issued
    together: all temporary files are written, then fsynced at once from a few threads
    (the file system commits its journal once for them, where one after the other
    costs one commit each), renamed, and each folder fsynced once. Returns how many
    files were written. Group commit (daemon.service.intake) delivers a batch with it."""
    todo = [(path, content) for path, content in items if not _already(path, content)]
    opened: list[tuple[int, Path, Path]] = []
    try:
        for path, content in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            opened.append((fd, tmp, path))
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
        if len(opened) > 1:
            list(_syncer().map(os.fsync, [fd for fd, _, _ in opened]))
        elif opened:
            os.fsync(opened[0][0])
    except BaseException:
        for _, tmp, _ in opened:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        for fd, _, _ in opened:
            os.close(fd)
    for _, tmp, path in opened:
        os.replace(tmp, path)
    for folder in dict.fromkeys(path.parent for _, _, path in opened):
        fsync_dir(folder)
    return len(opened)


_SYNCER: ThreadPoolExecutor | None = None


def _syncer() -> ThreadPoolExecutor:
    global _SYNCER
    if _SYNCER is None:
        _SYNCER = ThreadPoolExecutor(8, thread_name_prefix="fsync")
    return _SYNCER


def _already(path: Path, content: bytes) -> bool:
    try:
        return path.stat().st_size == len(content) and path.read_bytes() == content
    except FileNotFoundError:
        return False


def remove_stale_temps(folder: Path) -> list[str]:
    """Delete the temporary files killed writers left behind; a live writer's (this
    process's included) are kept. Safe at any time, from any process."""
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if stale_temp(path.name) and path.is_file():
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
