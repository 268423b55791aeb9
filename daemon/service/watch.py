"""Live intake: inotify wakes the inbox poll the moment a file is dropped.

The `watchdog` library's inotify observer reports two events that mean a file is
whole, so it may be claimed at once instead of after the `stable_seconds` wait:

- *moved to* the inbox: the sender wrote it elsewhere (or under a temporary name) and
  renamed it, the documented way to drop a file;
- *closed after writing*: the writer closed it (a sender that writes in several
  sessions must use a temporary name, as the README says).

A file only *created* wakes the poll too, but waits for stability as before. The
apscheduler poll stays as the safety net: events can be lost (inotify queue overflow,
a watcher that failed to start), and then the next poll finds the file anyway.

Two settings of watchdog's inotify observer matter for speed:

- `generate_full_events=True`: a file renamed into the inbox from another folder is a
  move event (with an empty source), not a "created" one, so it is known whole;
- the move grouper's delay: watchdog holds every IN_MOVED_FROM for 0.5 s to pair it
  with its IN_MOVED_TO, and the events behind it wait too. Our own claims move files
  out of the inbox (to work/, not watched), so under load every claim would hold the
  queue for 0.5 s. We pair nothing (a move *into* the inbox is all we need), so the
  hold is cut to 10 ms (`MOVE_PAIRING_SECONDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from threading import Lock

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

try:  # Linux: inotify (the daemon's platform); elsewhere watchdog's default observer
    from watchdog.observers.inotify import InotifyObserver
    from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
except ImportError:  # pragma: no cover
    InotifyObserver = None

MOVE_PAIRING_SECONDS = 0.01


class CompleteNames:
    """Names of inbox files the watcher saw completed, handed to the next scan.
    Thread-safe: the watcher adds, the poll thread takes."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._lock = Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._names.add(name)

    def take(self) -> set[str]:
        with self._lock:
            names, self._names = self._names, set()
        return names


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Path, complete: CompleteNames, wake: Callable[[], None]) -> None:
        self.inbox, self.complete, self.wake = inbox, complete, wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            if not event.dest_path:  # moved out (our own claim): nothing to take
                return
            target = Path(str(event.dest_path))
        elif isinstance(event, FileClosedEvent | FileCreatedEvent):
            target = Path(str(event.src_path))
        else:
            return
        if target.parent != self.inbox:
            return
        if not isinstance(event, FileCreatedEvent):
            self.complete.add(target.name)
        self.wake()


class InboxWatcher:
    """Watches one folder; `wake()` is called (from the watcher's thread) on each drop."""

    def __init__(self, inbox: Path, complete: CompleteNames, wake: Callable[[], None]) -> None:
        self.inbox = inbox.resolve()
        if InotifyObserver is not None:
            InotifyMoveEventGrouper.delay = MOVE_PAIRING_SECONDS  # see the module text
            self._observer = InotifyObserver(generate_full_events=True)
        else:  # pragma: no cover
            self._observer = Observer()
        self._observer.schedule(_Handler(self.inbox, complete, wake), str(self.inbox))

    def start(self) -> None:
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
