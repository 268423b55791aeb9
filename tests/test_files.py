"""The file-safety helpers (daemon/files.py) on a real file system.

A reader must never see half a file: `write_atomic` writes a new file beside the
target and renames it over, so the target's inode changes and a reader that opened the
old file keeps reading the old content whole. Written in place, both would fail.
"""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import files
from daemon.config import Intake


def _intake(**kw) -> Intake:
    return Intake(**kw)


def test_write_atomic_replaces_the_file_instead_of_writing_into_it(tmp_path):
    target = tmp_path / "out" / "apprec.msg"
    files.write_atomic(target, b"old " * 1000)
    before = target.stat().st_ino
    with open(target, "rb") as reader:  # a reader that opened the old answer
        files.write_atomic(target, b"new!" * 2000)
        assert reader.read() == b"old " * 1000  # still the old file, whole
    assert target.stat().st_ino != before
    assert target.read_bytes() == b"new!" * 2000
    assert stat.S_IMODE(target.stat().st_mode) & 0o007 == 0  # never world-readable
    assert sorted(p.name for p in target.parent.iterdir()) == ["apprec.msg"]  # no temp left


def test_a_reader_never_sees_a_partial_file(tmp_path):
    """A reader polling the name while a writer replaces 2 MB files: every read is one
    whole version (each version is one repeated byte and has the full length)."""
    target = tmp_path / "answer.msg"
    size = 2 * 1024 * 1024
    files.write_atomic(target, b"a" * size)
    done = threading.Event()
    seen: list[tuple[int, int]] = []

    def read_until_done() -> None:
        while not done.is_set():
            data = target.read_bytes()
            seen.append((len(data), len(set(data))))

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for version in b"bcdefghijk":
            files.write_atomic(target, bytes([version]) * size, sync_folder=False)
    finally:
        done.set()
        reader.join()
    assert seen and all(s == (size, 1) for s in seen), {s for s in seen if s != (size, 1)}
    assert target.read_bytes() == b"k" * size


def test_remove_stale_temps_removes_only_write_atomic_leftovers(tmp_path):
    (tmp_path / ".apprec.msg.0123abcd.tmp").write_bytes(b"half")
    (tmp_path / ".apprec.msg.tmp").write_bytes(b"a sender's temp name")
    (tmp_path / "apprec.msg").write_bytes(b"whole")
    (tmp_path / ".dir.0123abcd.tmp").mkdir()
    assert files.remove_stale_temps(tmp_path) == [".apprec.msg.0123abcd.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".apprec.msg.tmp",
        ".dir.0123abcd.tmp",
        "apprec.msg",
    ]
    assert files.remove_stale_temps(tmp_path / "missing") == []


def test_write_if_changed_keeps_an_identical_file(tmp_path):
    target = tmp_path / "vedtak.msg"
    assert files.write_if_changed(target, b"one") is True
    inode = target.stat().st_ino
    assert files.write_if_changed(target, b"one") is False
    assert target.stat().st_ino == inode
    assert files.write_if_changed(target, b"two") is True  # same length, other bytes
    assert target.read_bytes() == b"two" and target.stat().st_ino != inode
    assert files.write_if_changed(target, b"three") is True
    assert target.read_bytes() == b"three"


def test_scan_takes_settled_regular_files_oldest_first(tmp_path):
    intake = _intake(stable_seconds=10.0)
    now = 1_000_000.0

    def put(name: str, age: float) -> None:
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))

    put("young.msg", 5)
    put("old.msg", 30)
    put("older.msg", 60)
    put("edge.msg", 10)  # exactly stable_seconds old: ready
    put(".hidden.msg", 60)
    put("partial.msg.tmp", 60)
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "old.msg", tmp_path / "link.msg")
    ready, settling = files.scan(tmp_path, intake, now=now)
    assert [c.path.name for c in ready] == ["older.msg", "old.msg", "edge.msg"]
    # young.msg, and the symlink just made: a link is taken like a file once settled,
    # then refused by the claim's fstat check (tests/test_hostile_files.py)
    assert settling == 2
    assert ready[0].size == 1 and ready[0].mtime == now - 60
    ready, settling = files.scan(tmp_path, intake, now=now, complete={"young.msg"})
    assert "young.msg" in [c.path.name for c in ready] and settling == 1  # the link


def test_scan_waits_for_a_future_mtime_to_stand_still(tmp_path):
    """A writer with a clock ahead of ours: ready once size and mtime have not changed
    for stable_seconds of our own time; `seen` forgets files that left."""
    intake = _intake(stable_seconds=10.0)
    path = tmp_path / "future.msg"
    path.write_bytes(b"x")
    os.utime(path, (2_000_000.0, 2_000_000.0))
    seen: dict = {}
    assert files.scan(tmp_path, intake, now=1_000_000.0, seen=seen) == ([], 1)
    assert files.scan(tmp_path, intake, now=1_000_009.0, seen=seen) == ([], 1)
    path.write_bytes(b"xy")  # it grew: the wait starts again
    os.utime(path, (2_000_000.0, 2_000_000.0))
    assert files.scan(tmp_path, intake, now=1_000_011.0, seen=seen) == ([], 1)
    ready, settling = files.scan(tmp_path, intake, now=1_000_021.0, seen=seen)
    assert [c.path.name for c in ready] == ["future.msg"] and settling == 0
    path.unlink()
    files.scan(tmp_path, intake, now=1_000_022.0, seen=seen)
    assert seen == {}


def test_claim_moves_once_and_keeps_a_safe_original_name(tmp_path):
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    inbox.mkdir()
    work.mkdir()
    path = inbox / "claim ø 1.msg"
    path.write_bytes(b"x")
    candidate = files.Candidate(path, 1, 0.0)
    now = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
    claimed = files.claim(candidate, work, now)
    assert claimed is not None and claimed.parent == work and not path.exists()
    assert claimed.name.startswith("20261123T120000123456Z-")
    assert files.original_name(claimed.name) == "claim_1.msg"
    assert files.claim(candidate, work, now) is None  # the second worker gets nothing
    assert files.original_name("plain.msg") == "plain.msg"


def test_safe_name_is_plain_ascii_of_bounded_length():
    assert files.safe_name("../../etc/passwd") == "etc_passwd"
    assert files.safe_name("a b\udcff.msg") == "a_b_.msg"
    assert files.safe_name("...") == "file"
    assert files.safe_name("x" * 300 + ".msg") == ("x" * 300 + ".msg")[-120:]
    assert files.safe_name("abcdef", limit=3) == "def"


def test_move_and_error_file(tmp_path):
    src = tmp_path / "work" / "a.msg"
    src.parent.mkdir()
    src.write_bytes(b"x")
    dest = files.move(src, tmp_path / "archive")
    assert dest == tmp_path / "archive" / "a.msg" and dest.read_bytes() == b"x"
    assert not src.exists()
    err = files.write_error_file(tmp_path / "archive", "a.msg", {"code": "T01", "text": "ø"})
    assert err.name == "a.msg.err.json"
    assert err.read_text(encoding="utf-8") == '{\n  "code": "T01",\n  "text": "ø"\n}'


def test_ensure_folders_makes_every_folder(tmp_path):
    import shutil

    from tests.conftest import make_sandbox

    paths = make_sandbox(tmp_path / "box").paths
    assert {f.parent for f in paths.folders()} == {tmp_path / "box" / "var"}
    shutil.rmtree(tmp_path / "box" / "var")  # the folders and their parent
    files.ensure_folders(paths)
    files.ensure_folders(paths)  # again: the folders are there, nothing to do
    assert all(Path(f).is_dir() for f in paths.folders())


def test_write_atomic_makes_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.msg"
    files.write_atomic(target, b"x")
    assert target.read_bytes() == b"x"


def test_a_write_whose_rename_fails_leaves_no_temp_and_no_partial_target(tmp_path):
    """The rename fails (here: a folder stands at the target name): the writer removes
    its own temporary, and the target is never a partial file. (A writer killed before
    its rename leaves a temporary that start-up removes: tests/test_crash.py.)"""
    (tmp_path / "apprec.msg").mkdir()
    (tmp_path / "apprec.msg" / "keep").write_bytes(b"")
    with pytest.raises(OSError):
        files.write_atomic(tmp_path / "apprec.msg", b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["apprec.msg"]
    assert (tmp_path / "apprec.msg").is_dir()


def test_fsync_dir_opens_a_folder_only(tmp_path):
    files.fsync_dir(tmp_path)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        files.fsync_dir(tmp_path / "f")


def test_scan_without_a_clock_uses_the_time_now(tmp_path):
    old = tmp_path / "old.msg"
    old.write_bytes(b"x")
    os.utime(old, (1_000_000.0, 1_000_000.0))
    (tmp_path / "new.msg").write_bytes(b"x")
    ready, settling = files.scan(tmp_path, _intake(stable_seconds=60.0))
    assert [c.path.name for c in ready] == ["old.msg"] and settling == 1


def test_scan_counts_every_settling_file_and_remembers_none_of_the_past(tmp_path):
    """An mtime in the past is judged by age alone, also when `seen` is kept: a file
    0.5 s old with stable_seconds 0.4 is ready at the first scan."""
    now = 1_000_000.0
    for name, age in (("a.msg", 1), ("b.msg", 2), ("c.msg", 0.5)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - age, now - age))
    assert files.scan(tmp_path, _intake(stable_seconds=10.0), now=now, seen={})[1] == 3
    ready, settling = files.scan(tmp_path, _intake(stable_seconds=0.4), now=now, seen={})
    assert [c.path.name for c in ready] == ["b.msg", "a.msg", "c.msg"] and settling == 0


def test_work_names_are_utc_stamped_and_keep_the_original_whole(tmp_path, monkeypatch):
    import re
    import time
    from datetime import timedelta, timezone

    monkeypatch.setenv("TZ", "Europe/Oslo")
    time.tzset()
    try:
        oslo = datetime(2026, 11, 23, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
        name = files.work_name_for("krav--nr--1.msg", oslo)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert re.fullmatch(r"20261123T120000000005Z-[0-9a-f]{8}--krav--nr--1\.msg", name), name
    assert files.original_name(name) == "krav--nr--1.msg"


def test_safe_name_strips_only_dots_and_underscores_at_the_ends():
    assert files.safe_name("X.file.msgX") == "X.file.msgX"
    assert files.safe_name("_.x._") == "x"


def test_moves_into_a_new_nested_folder_and_into_an_existing_one(tmp_path):
    for name in ("a.msg", "b.msg"):
        (tmp_path / name).write_bytes(name.encode())
    dest = tmp_path / "var" / "archive"
    assert files.move(tmp_path / "a.msg", dest).read_bytes() == b"a.msg"
    assert files.move(tmp_path / "b.msg", dest).read_bytes() == b"b.msg"
