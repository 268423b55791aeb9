"""The system service: the unit verifies and is hardened, the folders come out with the
right owners and modes, the config, unit, tmpfiles and sysusers files agree, the
daemon works under the unit's W^X rule, and daemon/notify.py speaks sd_notify.

systemd-analyze, systemd-sysusers and systemd-tmpfiles run against a throw-away root
folder (`--root`), so nothing on this machine changes. CI installs them (.ci/run);
elsewhere the tests that need them skip with a reason.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import config
from daemon.service import notify
from tests.conftest import ROOT, Sandbox, wrap_demo

SYSTEMD = ROOT / "systemd"
UNIT = SYSTEMD / "kravmottak.service"
TEMPLATE = SYSTEMD / "kravmottak@.service"  # several workers: %i is the worker id
UNITS = [UNIT.name, "kravmottak@a.service"]  # the template verified as an instance
TMPFILES = SYSTEMD / "kravmottak.tmpfiles.conf"
SYSUSERS = SYSTEMD / "kravmottak.sysusers.conf"
PRODUCTION_CONFIG = SYSTEMD / "kravmottak.toml"
# the worst exposure `systemd-analyze security` may give the unit (0 best, 10 worst);
# it is 1.1 today: what is left is explained in the unit (network, users, /proc, umask)
MAX_EXPOSURE = 1.5


def tool(name: str) -> str:
    """The path of a systemd tool. CI must have it (.ci/run installs it): there a
    missing tool fails the test; on a developer's machine it skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: apt-get install systemd (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def unit_settings(text: str | None = None) -> dict[str, list[str]]:
    """Each `Key=value` of the unit (all sections), values in order of appearance."""
    settings: dict[str, list[str]] = {}
    for line in (text if text is not None else UNIT.read_text()).splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def tmpfiles_lines() -> dict[str, tuple[str, str, str, str]]:
    """tmpfiles.d lines by path: (type, mode, user, group)."""
    lines = {}
    for line in TMPFILES.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            kind, path, mode, user, group, *_ = line.split()
            lines[path] = (kind, mode, user, group)
    return lines


def unit_units_dir() -> Path:
    """The system's own unit files (sysinit.target & co), which verify resolves."""
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "sysinit.target").exists():
            return candidate
    pytest.fail("systemd-analyze is installed but no /usr/lib/systemd/system/sysinit.target")


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root folder holding the unit as installed, the system's units, and every
    program the unit runs at its real path: ExecStart is the venv's own kravmottak."""
    root = tmp_path_factory.mktemp("unit-root")
    shutil.copytree(unit_units_dir(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    shutil.copy(TEMPLATE, root / "etc/systemd/system" / TEMPLATE.name)
    ours = Path(sys.executable).parent / "kravmottak"
    settings = unit_settings()
    for key in ("ExecStart", "ExecReload"):
        program = shlex.split(settings[key][0])[0]
        source = ours if program.endswith("/kravmottak") else Path(shutil.which(program) or "")
        assert source.is_file(), f"{key}: {program} not found on this machine"
        target = root / program.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return root


# --- the unit -------------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(unit_root: Path, unit: str) -> None:
    """`systemd-analyze verify` accepts the unit (and the workers' template, as an
    instance) without a single warning."""
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={unit_root}", unit],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("unit", UNITS)
def test_unit_security_exposure(unit_root: Path, unit: str) -> None:
    """`systemd-analyze security` rates the unit "OK" or better, at most MAX_EXPOSURE."""
    done = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=yes", f"--root={unit_root}", unit],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", done.stdout)
    assert found, done.stdout
    exposure = float(found.group(1))
    print(f"systemd-analyze security: exposure {exposure} {found.group(2)}")
    assert exposure <= MAX_EXPOSURE, done.stdout


def test_unit_directives() -> None:
    """The choices the README promises: notify + watchdog, own user, strict, one
    writable folder, the key passphrase as a credential."""
    s = unit_settings()
    expect = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "WatchdogSec": "30",
        "User": "kravmottak",
        "Group": "kravmottak",
        "UMask": "0027",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ReadWritePaths": "/var/lib/kravmottak",
    }
    assert {k: s[k][-1] for k in expect} == expect
    assert s["SystemCallFilter"][0] == "@system-service"
    # stopping must outlast the biggest message (about 75 s for 50 MB)
    assert re.fullmatch(r"(\d+)min", s["TimeoutStopSec"][0])
    assert int(s["TimeoutStopSec"][0].removesuffix("min")) * 60 >= 150
    # the folders come from tmpfiles.d, the config is read-only: no *Directory= of systemd
    assert not {"StateDirectory", "ConfigurationDirectory", "LogsDirectory"} & set(s)


def test_worker_template_differs_from_the_unit_only_in_its_worker_lines() -> None:
    """kravmottak@.service: the main unit's hardening, line for line; only the
    description, the network ordering (a PostgreSQL server) and ExecStart (the worker
    id is the instance name) differ."""
    main, worker = unit_settings(), unit_settings(TEMPLATE.read_text())
    differing = {k for k in main.keys() | worker.keys() if main.get(k) != worker.get(k)}
    assert differing == {"Description", "After", "Wants", "ExecStart"}
    assert worker["ExecStart"] == [main["ExecStart"][0] + " --worker-id %i"]
    assert worker["Restart"] == ["on-failure"]  # a fenced worker (exit 75) comes back
    assert "%i" in worker["Description"][0]


# --- the layout: unit, config, tmpfiles and sysusers agree ---------------------------------


def test_production_config_matches_unit_and_tmpfiles() -> None:
    """The shipped /etc config loads, names the unit's credential, and keeps every
    folder the daemon writes under ReadWritePaths and in tmpfiles.d."""
    s = unit_settings()
    command = shlex.split(s["ExecStart"][0])
    assert command[1:] == ["--config", "/etc/kravmottak/kravmottak.toml", "run"]

    settings = config.load(PRODUCTION_CONFIG)
    credential = s["LoadCredential"][0].split(":", 1)
    assert credential == ["kravmottak-key-passphrase", "/etc/kravmottak/key-passphrase"]
    assert settings.key_passphrase == {"credential": credential[0]}
    assert not settings.generate_missing_keys

    writable = Path(s["ReadWritePaths"][0])
    made = tmpfiles_lines()
    paths = settings.paths
    for folder in (*paths.folders(), paths.ledger.parent, paths.tariffs):
        assert folder.is_relative_to(writable), folder
        assert str(folder) in made, f"{folder} is not in {TMPFILES.name}"
    assert paths.inbox.parent == paths.work.parent  # claimed by rename: one filesystem
    for read_only in (paths.private_key, paths.certificate, paths.csr, paths.partners):
        assert not read_only.is_relative_to(writable)
        assert str(read_only.parent) in made


def test_sysusers_make_every_owner() -> None:
    """Every user and group the unit and tmpfiles.d name is made by sysusers.d, and the
    daemon is in the drop group (so it can read what hospitals drop)."""
    users, groups, members = {"root"}, {"root"}, set()
    for line in SYSUSERS.read_text().splitlines():
        fields = shlex.split(line, comments=True)
        if not fields:
            continue
        if fields[0] == "u":
            users.add(fields[1])
            groups.add(fields[1])
        elif fields[0] == "g":
            groups.add(fields[1])
        elif fields[0] == "m":
            members.add((fields[1], fields[2]))
    s = unit_settings()
    assert s["User"][0] in users and s["Group"][0] in groups
    for _kind, _mode, user, group in tmpfiles_lines().values():
        assert user in users and group in groups
    assert ("kravmottak", "kravmottak-drop") in members
    assert {"kravmottak-drop", "kravmottak-pickup"} <= groups


# who owns what, and who else may touch it (README "Install as a service")
LAYOUT = {
    "/etc/kravmottak": (0o2750, "root", "kravmottak"),
    "/etc/kravmottak/keys": (0o2750, "root", "kravmottak"),
    "/etc/kravmottak/partners": (0o2750, "root", "kravmottak"),
    "/var/lib/kravmottak": (0o0711, "kravmottak", "kravmottak"),
    "/var/lib/kravmottak/inbox": (0o2770, "kravmottak", "kravmottak-drop"),
    "/var/lib/kravmottak/work": (0o0700, "kravmottak", "kravmottak"),
    "/var/lib/kravmottak/archive": (0o0750, "kravmottak", "kravmottak"),
    "/var/lib/kravmottak/quarantine": (0o0750, "kravmottak", "kravmottak"),
    "/var/lib/kravmottak/outbox": (0o2770, "kravmottak", "kravmottak-pickup"),
    "/var/lib/kravmottak/ledger": (0o0700, "kravmottak", "kravmottak"),
}


def ids(file: Path) -> dict[str, int]:
    """name → id from an /etc/passwd or /etc/group file."""
    return {
        f[0]: int(f[2]) for f in (line.split(":") for line in file.read_text().splitlines()) if f
    }


def test_tmpfiles_create_the_layout(tmp_path: Path) -> None:
    """sysusers.d then tmpfiles.d in an empty root: every folder with its mode, and
    (as root, which may chown) its owner and group by the ids sysusers gave them."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    done = subprocess.run(
        [tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    users, groups = ids(root / "etc/passwd"), ids(root / "etc/group")
    users["root"] = groups["root"] = 0

    as_root = os.geteuid() == 0
    conf = TMPFILES
    if not as_root:  # only root may chown: check the modes from a copy without owners
        conf = tmp_path / TMPFILES.name
        conf.write_text(
            "".join(
                f"{kind} {path} {mode} - - -\n"
                for path, (kind, mode, _u, _g) in tmpfiles_lines().items()
            )
        )
    done = subprocess.run(
        [tool("systemd-tmpfiles"), "--create", f"--root={root}", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""

    made = {}
    for path in LAYOUT:
        st = (root / path.lstrip("/")).stat()
        made[path] = (st.st_mode & 0o7777, st.st_uid, st.st_gid)
    want = {p: (mode, users[u], groups[g]) for p, (mode, u, g) in LAYOUT.items()}
    if not as_root:
        made = {p: m[0] for p, m in made.items()}
        want = {p: w[0] for p, w in want.items()}
    assert made == want
    # a second run (every boot) changes nothing and complains about nothing
    again = subprocess.run(
        [tool("systemd-tmpfiles"), "--create", f"--root={root}", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (again.returncode, again.stderr.strip()) == (0, "")


# --- MemoryDenyWriteExecute=yes: the daemon under systemd's W^X seccomp rule --------------

# systemd's rule (seccomp_memory_deny_write_execute): EPERM for mmap with PROT_WRITE and
# PROT_EXEC together, mprotect/pkey_mprotect adding PROT_EXEC, shmat with SHM_EXEC.
_SYSCALLS = {  # machine: (audit arch, mmap, mprotect, pkey_mprotect, shmat)
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _wx_filter() -> _SockFprog:
    """The classic-BPF program of systemd's MemoryDenyWriteExecute= rule."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        pytest.skip(f"no syscall table for {machine} in this test")
    arch, mmap, mprotect, pkey_mprotect, shmat = _SYSCALLS[machine]
    ld, jeq, jset, and_, ret = 0x20, 0x15, 0x45, 0x54, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EPERM
    prot = 16 + 2 * 8  # seccomp_data.args[2], low 32 bits (little endian)
    # (code, k, jump-if-true label, jump-if-false label)
    program = [
        (ld, 4, None, None),
        (jeq, arch, None, "allow"),
        (ld, 0, None, None),
        (jeq, mmap, "mmap", None),
        (jeq, mprotect, "exec", None),
        (jeq, pkey_mprotect, "exec", None),
        (jeq, shmat, "shm", None),
        (ret, allow, None, None),
        ("mmap", ld, prot),
        (and_, _PROT_WRITE | _PROT_EXEC, None, None),
        (jeq, _PROT_WRITE | _PROT_EXEC, "deny", "allow"),
        ("exec", ld, prot),
        (jset, _PROT_EXEC, "deny", "allow"),
        ("shm", ld, prot),
        (jset, _SHM_EXEC, "deny", "allow"),
        ("allow", ret, allow),
        ("deny", ret, deny),
    ]
    labels, code = {}, []
    for row in program:
        if isinstance(row[0], str):
            labels[row[0]] = len(code)
            code.append((row[1], row[2], None, None))
        else:
            code.append(row)

    def offset(label: str | None, at: int) -> int:  # jumps count from the next insn
        return 0 if label is None else labels[label] - at - 1

    insns = [
        _SockFilter(op, offset(jt, i), offset(jf, i), k) for i, (op, k, jt, jf) in enumerate(code)
    ]
    array = (_SockFilter * len(insns))(*insns)
    prog = _SockFprog(len(insns), array)
    prog._keep = array  # type: ignore[attr-defined]
    return prog


def _install(prog: _SockFprog) -> None:
    """In the child, before exec: no_new_privs, then the filter (kept across exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        os._exit(97)
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
        os._exit(98)


def run_wx(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    prog = _wx_filter()
    return subprocess.run(
        command,
        preexec_fn=lambda: _install(prog),  # the filter must be set before exec
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_wx_rule_is_enforced() -> None:
    """Control: under the rule, writable+executable memory is refused with EPERM."""
    probe = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    done = run_wx([sys.executable, "-c", probe])
    assert (done.returncode, done.stdout.strip()) == (0, "refused"), done.stderr


def test_daemon_works_without_writable_executable_memory(sandbox: Sandbox) -> None:
    """`kravmottak process` answers a signed-off claim under MemoryDenyWriteExecute's
    rule: lxml, xmlschema, signxml, cryptography and sqlite need no W^X memory."""
    sandbox.drop(wrap_demo())
    kravmottak = Path(sys.executable).parent / "kravmottak"
    done = run_wx([str(kravmottak), "--config", str(sandbox.config_path), "process"])
    assert done.returncode == 0, done.stderr
    assert len(sandbox.outbox("apprec-")) == 1
    assert list(sandbox.paths.inbox.iterdir()) == []


# --- daemon/notify.py ----------------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket where $NOTIFY_SOCKET points, as systemd's own."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(8192)


def test_notify_sends_the_exact_datagrams(listener: socket.socket) -> None:
    """One datagram per call, newline-separated assignments, nothing else."""
    assert notify.ready()
    assert received(listener) == b"READY=1"
    assert notify.status("3 i innboksen, én i arbeid")
    assert received(listener) == "STATUS=3 i innboksen, én i arbeid".encode()
    assert notify.watchdog()
    assert received(listener) == b"WATCHDOG=1"
    assert notify.stopping()
    assert received(listener) == b"STOPPING=1"
    assert notify.ready(status="running")
    assert received(listener) == b"READY=1\nSTATUS=running"
    assert notify.extend_timeout(90)
    assert received(listener) == b"EXTEND_TIMEOUT_USEC=90000000"


def test_notify_reloading_carries_the_monotonic_clock(listener: socket.socket) -> None:
    """RELOADING=1 with MONOTONIC_USEC= between the clock before and after the call."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = received(listener).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    name, _, value = lines[1].partition("=")
    assert name == "MONOTONIC_USEC" and before <= int(value) <= after
    assert len(lines) == 2


def test_notify_status_is_one_line(listener: socket.socket) -> None:
    """A newline in a status cannot smuggle in another assignment."""
    assert notify.status("ok\nREADY=1")
    assert received(listener) == b"STATUS=ok READY=1"


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """`@name` is a socket in Linux's abstract namespace."""
    name = f"kravmottak-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.watchdog()
        assert sock.recv(8192) == b"WATCHDOG=1"


def test_notify_without_a_manager_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $NOTIFY_SOCKET (`make run`, tests): nothing is sent, nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify.enabled()
    assert notify.ready() and notify.watchdog() and notify.stopping() and notify.reloading()


def test_notify_failure_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that is gone, or an address we cannot use: False, never an exception."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.enabled()
    assert notify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert notify.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/" + "x" * 200)  # longer than sun_path
    assert notify.status("x") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_USEC in seconds when the watchdog is meant for this process."""
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert notify.watchdog_interval() is None


def test_readme_install_steps_match_the_unit() -> None:
    """The README's install puts the venv where ExecStart looks, installs the wheel with
    the lock file, and the config where the unit's --config points."""
    readme = (UNIT.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Install as a service", 1)[1].split("\n## ", 1)[0]
    command = shlex.split(unit_settings()["ExecStart"][0])
    venv = Path(command[0]).parents[1]
    assert f"python3 -m venv {venv}\n" in section
    assert f"{venv}/bin/pip install --require-hashes -r requirements.lock" in section
    assert f"{venv}/bin/pip install --no-deps dist/kravmottak-" in section
    assert f'K="{command[0]} --config {command[2]}"' in section
    assert (UNIT.parents[1] / "requirements.lock").is_file()
