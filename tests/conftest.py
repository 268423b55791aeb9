"""Shared fixtures: a real sandbox (made by `kravmottak init`), real files, real ledger."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon import cli, config, service
from daemon.intake import Intake
from daemon.wrap import wrap

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared" / "reference"
DEMO_HER = "90001"
DEMO_CPA = "kravmottak:demo:1"


def shared_or_skip(relative: str = "") -> Path:
    """A path under ../shared/reference, or skip: a fresh clone has no ../shared."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"../shared/reference/{relative} not present (only beside the project repo)")
    return path


def demo_claim() -> bytes:
    return (DATA / "claim-demo.xml").read_bytes()


def wrap_demo(payload: bytes | None = None, **kwargs) -> bytes:
    kwargs.setdefault("message_id", str(uuid.uuid4()))
    return wrap(
        payload if payload is not None else demo_claim(),
        from_her=DEMO_HER,
        cpa_id=DEMO_CPA,
        **kwargs,
    )


@dataclass
class Sandbox:
    root: Path
    config_path: Path

    @property
    def settings(self) -> config.Settings:
        return config.load(self.config_path)

    @property
    def paths(self) -> config.Paths:
        return self.settings.paths

    def drop(self, raw: bytes, name: str | None = None, *, settle: bool = True) -> Path:
        """Drop a message the way a hospital's handler does: temp name, then rename."""
        name = name or f"{uuid.uuid4()}.msg"
        inbox = self.paths.inbox
        tmp = inbox / f".{name}.tmp"
        tmp.write_bytes(raw)
        if settle:  # as if written a while ago, so the stability wait is over
            past = time.time() - 5
            os.utime(tmp, (past, past))
        os.rename(tmp, inbox / name)
        return inbox / name

    def intake(self) -> Intake:
        return service.build(self.settings)

    def process(self) -> None:
        intake = self.intake()
        try:
            intake.recover()
            intake.drain()
        finally:
            intake.ledger.close()

    def outbox(self, kind: str = "") -> list[Path]:
        return sorted(p for p in self.paths.outbox.iterdir() if p.name.startswith(kind))

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.paths.ledger)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    root = tmp_path / "sandbox"
    assert cli.main(["init", str(root)]) == 0
    shutil.copy(ROOT / "config" / "partners.toml", root / "partners.toml")
    shutil.copy(ROOT / "config" / "institutions.toml", root / "institutions.toml")
    yield Sandbox(root, root / "kravmottak.toml")
