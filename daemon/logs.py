"""Structured JSON logs for journald, with personal data masked on the way out.

The rule is that code never logs personal data; `mask_personal_data` is the belt to
that braces: every fødselsnummer-shaped value (11 digits, or `DDMMYY-NNNNN`,
`DDMMYY NNNNN`: `daemon.masking`) in any value becomes `***********`, and keys that
name a person (`name`, `fnr`, `etternavn`, ...) are dropped to `[masked]` whatever they
hold. `configure` always puts it last before the renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from daemon.masking import mask

PERSONAL_KEYS = frozenset(
    {
        "fnr",
        "fodselsnummer",
        "fødselsnummer",
        "dnr",
        "ident",
        "name",
        "navn",
        "fornavn",
        "etternavn",
        "mellomnavn",
        "patient",
        "pasient",
        "given_name",
        "family_name",
    }
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) == 11:
        return "*" * 11
    if isinstance(value, dict):
        return {
            k: "[masked]" if str(k).lower() in PERSONAL_KEYS else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def mask_personal_data(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: "[masked]" if k.lower() in PERSONAL_KEYS else _scrub(v) for k, v in event.items()}


class _Stderr:
    """Whatever sys.stderr is when a line is written (not when logging was set up):
    a redirected or replaced stderr keeps getting the log. stderr, so that stdout
    carries only the commands' human output (`process`, `settle`, `status`)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_PROCESS: dict[str, str] = {}  # on every line, from every thread (`bind_process`)


def bind_process(**values: str) -> None:
    """Fields for every log line this process writes, whatever the thread (structlog's
    contextvars are per thread): the worker id."""
    _PROCESS.update(values)


def _add_process(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in _PROCESS.items():
        event.setdefault(key, value)
    return event


# `[logging] level` (config.py allows only these)
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (journald adds time and unit; we add ours for files), time
    in UTC (structlog's TimeStamper default); an unknown level is a KeyError, never a
    silent default. Loggers are not cached, so a reconfiguration (reload) reaches them."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_process,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            mask_personal_data,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or _Stderr()),  # type: ignore[arg-type]
    )


def get():
    return structlog.get_logger()
