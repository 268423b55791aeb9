"""systemd's service notification protocol (sd_notify), dependency-free.

The protocol is one datagram: newline-separated `NAME=value` assignments sent to the
AF_UNIX socket named in $NOTIFY_SOCKET (a path, or, with a leading `@`, a name in
Linux's abstract namespace); the kernel attaches our credentials, so systemd knows who
sent it. The sd_notify(3) man page says that is all there is to it, and the systemd
developers recommend reimplementing it rather than linking libsystemd for it. So this
module is the whole client, with nothing to install:

- `systemd-python` (python-systemd) is a C extension over libsystemd: installing it
  from PyPI compiles C and needs the libsystemd headers (libsystemd-dev) and
  pkg-config on every machine, for one `sendto`.
- `sdnotify` (PyPI) is a 60-line pure-Python wrapper whose last release is 0.3.2: it
  swallows every error with a bare `except:` (or raises them all with debug=True),
  keeps one socket for the process's life and has no watchdog, reload or timeout
  helpers.

Everything here reads the environment when called (never at import), is a successful
no-op when $NOTIFY_SOCKET is unset (not started by systemd, e.g. `make run`), and never
raises into the caller: a send that fails returns False, and whether to log it is the
caller's choice.
"""

from __future__ import annotations

import os
import socket
import time

# systemd reads at most one pipe buffer (4096 bytes) of a notification
_MAX_STATUS = 1024
_SEND_TIMEOUT = 2.0  # a datagram to a busy manager may block; never hang the daemon


def enabled() -> bool:
    """Whether a service manager listens ($NOTIFY_SOCKET is set)."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def notify(*assignments: str) -> bool:
    """Send `NAME=value` assignments in one datagram. True when sent (or nothing to
    do: no $NOTIFY_SOCKET), False when the send failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return True
    if address.startswith("@"):
        target = "\0" + address[1:]  # abstract namespace
    elif address.startswith("/"):
        target = address
    else:  # e.g. vsock:… (systemd >= 254, for VMs): not ours to support
        return False
    payload = "\n".join(assignments).encode("utf-8", errors="replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # not inherited
            sock.settimeout(_SEND_TIMEOUT)
            sock.sendto(payload, target)
    except (OSError, ValueError):  # no listener, permission, timeout, NUL in the name
        return False
    return True


def _status(text: str) -> str:
    # one line: a newline would start a new assignment
    line = " ".join(text.split())
    return "STATUS=" + line[:_MAX_STATUS]


def _with_status(assignment: str, text: str | None) -> tuple[str, ...]:
    return (assignment,) if text is None else (assignment, _status(text))


def ready(status: str | None = None) -> bool:
    """READY=1: start-up (or a reload) is complete."""
    return notify(*_with_status("READY=1", status))


def status(text: str) -> bool:
    """STATUS=…: one line shown by `systemctl status` (newlines become spaces)."""
    return notify(_status(text))


def watchdog() -> bool:
    """WATCHDOG=1: the keep-alive ping WatchdogSec= expects."""
    return notify("WATCHDOG=1")


def stopping(status: str | None = None) -> bool:
    """STOPPING=1: shutdown has begun (SIGTERM received)."""
    return notify(*_with_status("STOPPING=1", status))


def reloading(status: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC= (the current CLOCK_MONOTONIC in µs): a reload
    has begun; send `ready()` when it is done, whether it succeeded or not.
    systemd >= 253 needs MONOTONIC_USEC= to match the reply to its reload request
    (Type=notify-reload); older versions ignore the extra field."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(*_with_status("RELOADING=1", status), f"MONOTONIC_USEC={usec}")


def extend_timeout(seconds: float) -> bool:
    """EXTEND_TIMEOUT_USEC=…: the start-up (or stop) in progress needs `seconds` more
    before the next notification; keeps TimeoutStartSec= from killing a long
    recovery. Send it again before it runs out."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def watchdog_interval() -> float | None:
    """WatchdogSec= in seconds, when the manager expects keep-alive pings from this
    process ($WATCHDOG_USEC set, and $WATCHDOG_PID unset or our pid); else None.
    Ping at half of it, as sd_watchdog_enabled(3) recommends."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    try:
        if pid is not None and int(pid) != os.getpid():
            return None
        value = int(usec) if usec is not None else 0
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
