"""`make mutate`: mutation testing of the money and trust paths with mutmut.

    .venv/bin/python -m tests.mutation                   # every target, a sample of each
    .venv/bin/python -m tests.mutation --sample 0        # every mutant (hours on 2 cores)
    .venv/bin/python -m tests.mutation logs files        # some targets only
    .venv/bin/python -m tests.mutation --report          # the score of the last run
    .venv/bin/python -m tests.mutation rules --no-confirm  # survivors not re-run (faster)
    .venv/bin/python -m tests.mutation rules --rerun       # the last survivors, after new tests

Each target (TARGETS below: the modules, and the fast test files that cover them) runs in
its own copy of the project, `build/mutation/TARGET/`, whose pyproject.toml gets a
`[tool.mutmut]` for that target. mutmut makes every mutant of the target's modules (in
`mutants/` there), runs the target's tests once to learn which tests reach which
function, then runs, for each mutant, only the tests that reach its function. A mutant
is killed when a test fails (or times out). Printed per target: `mutation score: K/N
killed` over the mutants that were run, and the survivors by name (in the target's
folder, `../../../.venv/bin/mutmut show NAME` prints the change; `mutmut.log` the run).
Results are kept: a second run runs the mutants whose function changed and the
survivors (a test added since may kill them).

`--sample N` runs N mutants per target, chosen with a fixed seed, so two runs of the same
code compare; 0 runs all. Not part of `make test`: a full run takes hours on 2 cores.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "mutation"
MUTMUT = Path(sys.executable).with_name("mutmut")
# mutants read to behave like the original, each with why (`report` names them apart)
EQUIVALENTS = Path(__file__).with_name("mutation_equivalent.toml")


@dataclass(frozen=True)
class Target:
    files: tuple[str, ...]  # what mutmut mutates (only_mutate)
    names: tuple[str, ...]  # which of its mutants count (mutmut names, fnmatch)
    tests: tuple[str, ...]  # the fast test files that cover it
    # test files a survivor is also confirmed against, by module (not given to mutmut:
    # a change to mutmut's test selection throws away every verdict it holds)
    confirm_also: tuple[tuple[str, tuple[str, ...]], ...] = ()


# the ledger's selection queries: what decides what is paid, once
LEDGER = (
    "_open_payments",
    "settle",
    "paid_bill",
    "paid_bills",
    "paid_by_payee",
    "accepted",
    "by_hash",
    "undelivered",
    "exams_on",
    "egenandel_status",  # EG-03: a correction turns only an unpaid egenandel into paid
    "egenandel_sum",  # the frikort basis
)
# test_trust_attacks: the trust decisions through the real pipeline (dates, who may sign)
TRUST_TESTS = (
    "tests/test_trust.py",
    "tests/test_signature_coverage.py",
    "tests/test_trust_attacks.py",
)
TARGETS: dict[str, Target] = {
    "rules": Target(
        ("daemon/rules/*",),
        ("daemon.rules.*",),
        (
            "tests/test_rules.py",
            "tests/test_lab_rules.py",
            "tests/test_radiology_rules.py",
            "tests/test_judgement_order.py",  # the same-day rules (RAD-06..11)
            "tests/test_egenandel.py",  # EG-01..12 and the money paid to institutions
        ),
        # the streamed path's judging of big claims (chunks, the same-day spill)
        (("daemon.rules.chunked.", ("tests/test_stream.py",)),),
    ),
    "trust": Target(("daemon/transport/trust.py",), ("daemon.transport.trust.*",), TRUST_TESTS),
    "verify": Target(("daemon/transport/verify.py",), ("daemon.transport.verify.*",), TRUST_TESTS),
    "settlement": Target(
        ("daemon/settlement/*",),
        ("daemon.settlement.*",),
        ("tests/test_settlement.py", "tests/test_vedtak.py", "tests/test_egenandel.py"),
    ),
    "ledger": Target(
        ("daemon/ledger/sqlite.py",),
        tuple(f"daemon.ledger.sqlite.xǁSqliteLedgerǁ{n}__mutmut_*" for n in LEDGER),
        (
            "tests/test_settlement.py",
            "tests/test_lab_rules.py",
            "tests/test_radiology_rules.py",
            "tests/test_intake.py",  # by_hash: a message seen before is answered once
            "tests/test_egenandel.py",  # the egenandel register and payments.kind
            "tests/test_ledger_holds.py",  # the lock keys the reads take (PostgreSQL)
        ),
    ),
    "files": Target(("daemon/files.py",), ("daemon.files.*",), ("tests/test_files.py",)),
    "logs": Target(
        ("daemon/logs.py", "daemon/masking.py"),
        ("daemon.logs.*", "daemon.masking.*"),
        ("tests/test_logs.py", "tests/test_masking.py"),
    ),
}
KILLED = {1, 3, 36, 37, -24, 24, 152, 255}  # a failing test, pytest error, timeout
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
HANG = 120  # seconds: a confirming run this long is a genuine hang (the tests take seconds)


def _config(target: Target) -> str:
    """pyproject.toml's [tool.mutmut] for one target (mutmut reads it from the cwd)."""
    return (
        "[tool.mutmut]\n"
        'source_paths = ["daemon/"]\n'
        f"only_mutate = {json.dumps(list(target.files))}\n"
        'also_copy = ["schemas/", "config/", "daemon/data/", "README.md"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(list(target.tests))}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
        # each mutant in a child of a fresh fork server: children forked from the
        # process that ran the clean tests (mutmut's default) inherit its threads' locks
        # and some stall until the timeout, a kill no test made
        'process_isolation = "forkserver"\n'
    )


def _workspace(name: str, target: Target, fresh: bool) -> Path:
    """A copy of the project for one target, with its own mutmut configuration: each
    target's mutants are then run against its own fast tests only."""
    folder = SCRATCH / name
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sub in ("daemon", "tests", "schemas", "config"):  # the code as it is now
        shutil.copytree(ROOT / sub, folder / sub, ignore=ignore, dirs_exist_ok=True)
    shutil.copy(ROOT / "README.md", folder / "README.md")
    for pattern in target.files:
        for path in sorted(folder.glob(pattern)):
            if path.suffix == ".py":
                path.write_text(_undecorated(path.read_text(encoding="utf-8")), "utf-8")
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (folder / "pyproject.toml").write_text(text + "\n" + _config(target), encoding="utf-8")
    return folder


def _undecorated(source: str) -> str:
    """mutmut leaves every decorated function alone, and the rules are all `@rule(...)`:
    the copy gets `def f(...)` then `f = rule(...)(f)` instead, which registers the same
    function in the same order, so the rules themselves are mutated too."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and len(node.decorator_list) == 1
        and isinstance(call := node.decorator_list[0], ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "rule"
    ]
    for node in reversed(found):  # bottom up: earlier line numbers stay valid
        call = node.decorator_list[0]
        first, last = call.lineno - 1, call.end_lineno  # the decorator's lines (0-based, end)
        decorator = "".join(lines[first:last]).strip().removeprefix("@")
        after = f"{node.name} = {decorator}({node.name})\n"
        lines[node.end_lineno : node.end_lineno] = [after]
        del lines[first:last]
    return "".join(lines)


def _results(folder: Path) -> dict[str, int | None]:
    """Every mutant's exit code from mutmut's meta files (None: not run)."""
    found: dict[str, int | None] = {}
    for meta in (folder / "mutants").rglob("*.py.meta"):
        found.update(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def _retest_survivors(folder: Path, names: set[str], sql_names: bool = False) -> None:
    """mutmut keeps every verdict until the mutated function changes; a survivor may
    have been killed by a test added since, so survivors are run again every time, and
    so are timeouts (a loaded machine may have caused one). A change of SQL letter case
    is not: no test can kill it."""
    for meta in (folder / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        stale = [
            n
            for n in names & set(codes)
            if codes[n] in SURVIVED | NO_TESTS | TIMEOUT
            and not (codes[n] in SURVIVED and _sql_case_only(*_change(folder, n), names=sql_names))
        ]
        if stale:
            codes.update(dict.fromkeys(stale))
            meta.write_text(json.dumps(data))


def _of(target: Target, names) -> list[str]:
    return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in target.names))


@dataclass(frozen=True)
class Equivalent:
    """A mutant shown (by reading, in EQUIVALENTS' `why`) to behave like the original:
    named by its function and the lines it changes, not by mutmut's number, which
    changes whenever the function does."""

    target: str
    function: str
    before: str
    after: str
    why: str


def _equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        return [Equivalent(**entry) for entry in tomllib.load(f).get("equivalent", [])]


def _function(mutant: str) -> str:
    """`daemon.ledger.sqlite.xǁSqliteLedgerǁsettle__mutmut_12` -> `settle`."""
    return mutant.rpartition("__mutmut_")[0].rpartition(".")[2].split("ǁ")[-1].removeprefix("x_")


def _change(folder: Path, mutant: str) -> tuple[str, str]:
    """The lines a mutant removes and adds (stripped, joined by newlines)."""
    shown = subprocess.run(
        [str(MUTMUT), "show", mutant], cwd=folder, capture_output=True, text=True
    ).stdout.splitlines()
    removed = [x[1:].strip() for x in shown if x.startswith("-") and not x.startswith("---")]
    added = [x[1:].strip() for x in shown if x.startswith("+") and not x.startswith("+++")]
    return "\n".join(removed), "\n".join(added)


SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|JOIN|ORDER BY|GROUP BY|LIMIT|VALUES|SET"
    r"|AND|OR|NOT|IN|IS NULL|DISTINCT)\b",
    re.I,
)
QUOTED = re.compile(r"'[^']*'")
LITERAL = re.compile(r'"([^"]*)"')  # a Python string literal on the line (SQL is in "...")
# a piece of a statement split over lines: column names only (" b.regning_nr, e.line,")
NAMES = re.compile(r'^"[\s\w.,()]*",?$', re.A)
SQL_CASE = Equivalent(
    "*",
    "*",
    "",
    "",
    "the letter case of SQL keywords and unquoted names (SQLite and PostgreSQL read "
    "them in any case; the quoted values are unchanged)",
)


def _sql_case_only(before: str, after: str, names: bool = False) -> bool:
    """A change of letter case only, in SQL text, outside its quoted values. `names`:
    also in a piece of bare column names (the ledger's selections, whose every string
    literal of that shape is a piece of a statement)."""
    if before == after or before.lower() != after.lower():
        return False
    if LITERAL.sub('""', before) != LITERAL.sub('""', after):
        return False  # the change is in the code, not in its strings
    text = " ".join(LITERAL.findall(before))  # SQL words in the strings, not Python's `in`
    sql = SQL.search(text) is not None or (names and NAMES.match(before) is not None)
    return sql and QUOTED.findall(before) == QUOTED.findall(after)


def _listed(target: str, folder: Path, mutant: str, listed: list[Equivalent]) -> Equivalent | None:
    before, after = _change(folder, mutant)
    if _sql_case_only(before, after, names=target == "ledger"):
        return SQL_CASE
    function = _function(mutant)
    for entry in listed:
        if (entry.target, entry.function, entry.before, entry.after) == (
            target,
            function,
            before,
            after,
        ):
            return entry
    return None


def report(scores: dict[str, dict[str, int | None]]) -> None:
    """`mutation score: K/N killed` per target; then the same over the mutants not
    listed as equivalent in tests/mutation_equivalent.toml, and every survivor with its
    change (a listed one with why it is equivalent)."""
    listed = _equivalents()
    total_killed = total_run = total_equivalent = 0
    for name, results in scores.items():
        folder = SCRATCH / name
        ran = sorted(n for n, code in results.items() if code is not None)
        killed = [n for n in ran if results[n] in KILLED]
        survived = [n for n in ran if results[n] in SURVIVED]
        untested = [n for n in ran if results[n] in NO_TESTS]
        other = Counter(results[n] for n in ran if n not in killed + survived + untested)
        known = {m: _listed(name, folder, m, listed) for m in survived + untested}
        equivalent = [m for m, entry in known.items() if entry is not None]
        total_killed += len(killed)
        total_run += len(ran)
        total_equivalent += len(equivalent)
        share = f"{100 * len(killed) / len(ran):.0f} %" if ran else "-"
        rest = len(ran) - len(equivalent)
        print(
            f"{name:11} mutation score: {len(killed)}/{len(ran)} killed ({share}); "
            f"{len(results)} chosen, {len(survived)} survived, {len(untested)} reached by no "
            "test" + (f", other exit codes {dict(other)}" if other else "")
        )
        if equivalent and rest:
            print(
                f"{'':11} {len(killed)}/{rest} killed ({100 * len(killed) / rest:.0f} %) "
                f"of those not listed as equivalent ({len(equivalent)} listed)"
            )
        for mutant in survived + untested:
            state = "survived" if mutant in survived else "no tests"
            entry = known[mutant]
            if entry is None:
                before, after = _change(folder, mutant)
                print(f"    {state}: {mutant}\n        - {before}\n        + {after}")
            else:
                print(f"    {state}, equivalent: {mutant} ({entry.why})")
    if len(scores) > 1 and total_run:
        print(f"{'all':11} mutation score: {total_killed}/{total_run} killed")
        if total_equivalent:
            rest = total_run - total_equivalent
            print(f"{'':11} {total_killed}/{rest} of those not listed as equivalent")


def run_target(name: str, args: argparse.Namespace) -> dict[str, int | None]:
    target = TARGETS[name]
    folder = _workspace(name, target, args.fresh)
    if args.report:
        every = _results(folder)  # the mutants run so far (not every one mutmut made)
        return {n: every[n] for n in _of(target, every) if every[n] is not None}
    # mutmut makes the mutants and learns which tests reach which function at the start
    # of a run; a filter that matches nothing stops it right after that
    subprocess.run(
        [str(MUTMUT), "run", "no-such-mutant"], cwd=folder, capture_output=True, text=True
    )
    before = _results(folder)
    names = _of(target, before)
    ran_before = [n for n in names if before[n] is not None]
    if args.confirm_only:  # the survivors so far, confirmed against the tests as they are
        names = [n for n in ran_before if before[n] in SURVIVED | NO_TESTS | TIMEOUT]
        found = {n: before[n] for n in names}
        # mutmut copies the tests into mutants/ when it runs: here nothing runs it
        shutil.copytree(ROOT / "tests", folder / "mutants" / "tests", dirs_exist_ok=True)
        _confirm_survivors(folder, target, found)
        chosen = _of(target, before)
        if args.sample and len(chosen) > args.sample:
            chosen = random.Random(f"{args.seed}:{name}").sample(chosen, args.sample)
        return {n: found.get(n, before[n]) for n in chosen if before[n] is not None}
    if args.rerun:  # the survivors of the runs so far, against the tests as they are now
        names = [n for n in ran_before if before[n] in SURVIVED | NO_TESTS | TIMEOUT]
    elif args.sample and len(names) > args.sample:
        names = sorted(random.Random(f"{args.seed}:{name}").sample(names, args.sample))
    if not names and args.rerun:
        return {n: before[n] for n in ran_before}
    if not names:
        print(f"{name}: no mutants (is mutmut installed? `make venv`)", file=sys.stderr)
        return {}
    _retest_survivors(folder, set(names), sql_names=name == "ledger")
    print(f"{name}: {len(names)} mutants, tests {' '.join(target.tests)}", flush=True)
    log = folder / "mutmut.log"
    with open(log, "w") as out:
        subprocess.run([str(MUTMUT), "run", *names], cwd=folder, stdout=out, stderr=out)
    results = _results(folder)
    found = {n: results.get(n) for n in names}
    if args.confirm:
        _confirm_survivors(folder, target, found)
    if args.rerun:  # the score over every mutant run so far
        return {**{n: results.get(n) for n in ran_before}, **found}
    return found


def _confirm_survivors(folder: Path, target: Target, found: dict[str, int | None]) -> None:
    """mutmut runs, per mutant, the tests it saw reach the function; a call made while a
    module-scoped fixture is built counts for the first test only (test_radiology_rules
    processes every case in one fixture), so a survivor is run again against the
    target's whole test files before it is called a survivor.

    A timeout is confirmed too: mutmut's forked children sometimes stall on this shared
    machine where the same mutant fails in two seconds in a fresh process, and a stall
    is no test failure. Each timeout is run again in a fresh pytest against the same
    files: it counts as killed when a test fails or the run hangs past HANG seconds,
    and as a survivor when every test passes."""
    env = dict(os.environ)
    for name, code in found.items():
        if code not in SURVIVED | NO_TESTS | TIMEOUT:
            continue
        if code in SURVIVED and _sql_case_only(
            *_change(folder, name), names=target is TARGETS["ledger"]
        ):
            continue  # equivalent by construction: no test can tell
        env["MUTANT_UNDER_TEST"] = name
        tests = _files_reaching(folder, target, name)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=folder / "mutants",
                env=env,
                capture_output=True,
                timeout=HANG,
            )
        except subprocess.TimeoutExpired:
            found[name] = 36  # a genuine hang: killed by the timeout
            continue
        if done.returncode == 1:
            found[name] = 1
        elif done.returncode == 0 and code in TIMEOUT:
            found[name] = 0  # every test passed: the timeout was mutmut's, not the mutant's
        _record(folder, name, found[name])


def _files_reaching(folder: Path, target: Target, mutant: str) -> list[str]:
    """The target's test files with a test that reached the mutant's function in the
    clean run (mutmut's stats), run whole; all of them when mutmut saw none."""
    stats = folder / "mutants" / "mutmut-stats.json"
    reached: set[str] = set()
    if stats.exists():
        by_function = json.loads(stats.read_text())["tests_by_mangled_function_name"]
        function = mutant.rpartition("__mutmut_")[0]
        reached = {test.split("::")[0] for test in by_function.get(function, ())}
    also = [f for module, files in target.confirm_also if mutant.startswith(module) for f in files]
    return [t for t in target.tests if t in reached] + also or list(target.tests)


def _record(folder: Path, name: str, code: int | None) -> None:
    """Keep a confirmed verdict in mutmut's meta file (`--report` then shows it)."""
    for meta in (folder / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        if name in data["exit_code_by_key"]:
            data["exit_code_by_key"][name] = code
            meta.write_text(json.dumps(data))
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    parser.add_argument("--sample", type=int, default=40, help="mutants per target; 0: all")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--report", action="store_true", help="print the last run's scores")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="run again only the survivors (and timeouts, untested) of the runs so far; "
        "the score is over every mutant run so far",
    )
    parser.add_argument(
        "--confirm-only",
        action="store_true",
        help="no mutmut run: confirm the survivors so far against the test files (as they "
        "are now) and print the score over the --sample chosen (0: every mutant run)",
    )
    parser.add_argument(
        "--no-confirm",
        dest="confirm",
        action="store_false",
        help="skip re-running survivors and timeouts against the whole test files "
        "(faster; survivors are then mutmut's own verdicts, and a timeout counts as a kill)",
    )
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    scores = {name: run_target(name, args) for name in targets}
    report(scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
