"""The data shipped inside the package: the XSDs and the registers as released.

In the repository `daemon/data/schemas` and `daemon/data/registers` are links to the
top-level `schemas/` and `config/tariffs/` (the sources); the wheel carries copies.
Either way they are found through `importlib.resources`, so an installed daemon reads
its own copy wherever the source tree is, and nothing is ever written here: imported
registers go to the state directory the config names (`[paths] tariffs`).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _data(name: str) -> Path:
    # `daemon` is a regular package installed as files, so its resources are paths
    return Path(str(files("daemon").joinpath("data", name)))


def schema_dir() -> Path:
    """The project's XSDs (ebXML, MsgHead, NPR-BKM, AppRec, the vedtak)."""
    return _data("schemas")


def shipped_registers() -> Path:
    """The registers as released with this version: NLK codes and lab rates, the
    radiology example register, the RHF table. The fall-back until an import."""
    return _data("registers")
