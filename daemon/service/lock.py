"""One daemon per state directory: an exclusive flock on a lock file next to the ledger.

The embedded SQLite ledger is meant for one process: two `run`s (or a `process` while
`run` is up) on the same folders would both "recover" the file the other is handling.
`hold(settings)` takes `<ledger>.lock` with `flock(LOCK_EX | LOCK_NB)` and writes our
PID into it; the kernel drops the lock when the process ends however it ends (SIGKILL
included), so a stale file never blocks a restart. The second process is refused with
the holder's PID.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from daemon.config import ConfigError, Settings


class Locked(ConfigError):
    """Another process holds the state directory."""


def lock_path(settings: Settings) -> Path:
    ledger = settings.paths.ledger
    return ledger.with_name(ledger.name + ".lock")


class StateLock:
    """Held from `acquire()` until `release()` (or the process ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise Locked(
                f"another kravmottak process (PID {holder}) holds {self.path}; "
                "one daemon per state directory: stop it first, or use its outputs"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def hold(settings: Settings) -> StateLock:
    return StateLock(lock_path(settings))
