"""Live intake: which inotify events make a file known whole (daemon.service.watch)."""

from __future__ import annotations

import os
import threading
import time

from daemon.service.watch import CompleteNames, InboxWatcher


def _watching(tmp_path):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    complete, woken = CompleteNames(), threading.Event()
    watcher = InboxWatcher(inbox, complete, woken.set)
    watcher.start()
    time.sleep(0.2)  # the watch is in place
    return inbox, elsewhere, complete, woken, watcher


def _wait(woken: threading.Event) -> None:
    assert woken.wait(5), "no wake-up"
    time.sleep(0.1)  # the rest of the burst of events
    woken.clear()


def test_renamed_in_place_moved_in_and_closed_files_are_whole(tmp_path):
    inbox, elsewhere, complete, woken, watcher = _watching(tmp_path)
    try:
        (inbox / ".a.tmp").write_bytes(b"a")  # the documented way: temp name, rename
        os.rename(inbox / ".a.tmp", inbox / "a.msg")
        _wait(woken)
        assert "a.msg" in complete.take()

        (elsewhere / "b.msg").write_bytes(b"b")  # written elsewhere, moved in
        os.rename(elsewhere / "b.msg", inbox / "b.msg")
        _wait(woken)
        assert complete.take() == {"b.msg"}

        with open(inbox / "c.msg", "wb") as fh:  # written in place: whole once closed
            fh.write(b"c")
            fh.flush()
            _wait(woken)  # created: wakes the poll, but is not whole yet
            assert "c.msg" not in complete.take()
        _wait(woken)
        assert "c.msg" in complete.take()

        os.rename(inbox / "a.msg", elsewhere / "a.msg")  # our own claim: nothing to take
        time.sleep(0.3)
        assert complete.take() == set()
    finally:
        watcher.stop()


def test_a_claim_does_not_hold_back_the_next_drop(tmp_path):
    """watchdog holds a move out of the folder to pair it; ours is cut to 10 ms, so a
    file dropped right after a claim is seen at once, not half a second later."""
    inbox, elsewhere, complete, woken, watcher = _watching(tmp_path)
    try:
        (inbox / "first.msg").write_bytes(b"1")
        _wait(woken)
        complete.take()
        os.rename(inbox / "first.msg", elsewhere / "first.msg")  # a claim
        (elsewhere / "second.msg").write_bytes(b"2")
        started = time.monotonic()
        os.rename(elsewhere / "second.msg", inbox / "second.msg")
        while "second.msg" not in complete.take():
            assert time.monotonic() - started < 0.4, "the drop waited behind the claim"
            time.sleep(0.005)
    finally:
        watcher.stop()
