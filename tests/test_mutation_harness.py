"""The mutation harness itself (`make mutate`, tests/mutation.py): how it names
functions, rewrites `@rule` functions for mutmut, and the equivalent-mutant list."""

from __future__ import annotations

import ast

from tests import mutation


def test_a_mutants_function_is_its_own_name_without_mutmuts_decoration():
    assert mutation._function("daemon.ledger.sqlite.xǁSqliteLedgerǁsettle__mutmut_12") == "settle"
    assert mutation._function("daemon.rules.common.x_valid_fnr__mutmut_3") == "valid_fnr"
    assert mutation._function("daemon.masking.x__replace__mutmut_1") == "_replace"


def test_rules_are_registered_after_their_def_in_the_same_order():
    """mutmut skips decorated functions: the copy registers `f = rule(...)(f)` instead."""
    source = (
        "@rule(id='A-1', scope='bill')\n"
        "def first(bill):\n"
        "    return None\n"
        "\n"
        "@rule(\n"
        "    id='A-2',\n"
        "    scope='line',\n"
        ")\n"
        "def second(line):\n"
        "    return 1\n"
        "\n"
        "@other\n"
        "def untouched():\n"
        "    pass\n"
    )
    out = mutation._undecorated(source)
    tree = ast.parse(out)
    kinds = [
        (type(node).__name__, getattr(node, "name", None) or node.targets[0].id)
        for node in tree.body
    ]
    assert kinds == [
        ("FunctionDef", "first"),
        ("Assign", "first"),
        ("FunctionDef", "second"),
        ("Assign", "second"),
        ("FunctionDef", "untouched"),
    ]
    assert "first = rule(id='A-1', scope='bill')(first)" in out
    assert [d.id for d in tree.body[4].decorator_list] == ["other"]
    assert not tree.body[0].decorator_list and not tree.body[2].decorator_list


def test_every_listed_equivalent_mutant_is_complete():
    for entry in mutation._equivalents():
        assert entry.target in mutation.TARGETS, entry
        assert entry.function and entry.before != entry.after, entry
        assert len(entry.why) > 20, entry  # a reason a reader can check, not a shrug


def test_only_a_change_of_case_in_sql_outside_its_values_is_equivalent():
    same = mutation._sql_case_only
    sql = "\"SELECT status FROM egenandeler WHERE uuid = ? AND verdict IN ('approved')\""
    assert same(sql, sql.replace("SELECT status FROM", "select status from"))
    assert same(sql, sql.replace("WHERE uuid", "WHERE UUID"))
    assert not same(sql, sql.upper())  # 'APPROVED' is another value
    assert not same(sql, sql)
    assert not same('"kun primærgransking"', '"KUN PRIMÆRGRANSKING"')  # not SQL: words sent
    assert not same(sql, sql.replace("uuid = ?", "uuid != ?"))
    piece = "\" AND verdict IN ('approved', 'reduced')\""
    assert same(piece, piece.replace("AND verdict IN", "and verdict in"))
    assert not same(piece, piece.upper())


def test_a_piece_of_column_names_counts_as_sql_in_the_ledger_only():
    same = mutation._sql_case_only
    piece, upper = '" b.regning_nr, e.line, e.uuid,"', '" B.REGNING_NR, E.LINE, E.UUID,"'
    assert same(piece, upper, names=True)
    assert not same(piece, upper)  # elsewhere a bare word may be text a person reads
    assert not same('"kun primærgransking"', '"KUN PRIMÆRGRANSKING"', names=True)


def test_python_words_beside_a_string_are_not_sql():
    """`x in ("PHV", "TSB")` -> `("PHV", "tsb")` is another value, not SQL text."""
    same = mutation._sql_case_only
    assert not same('if kind in ("PHV", "TSB"):', 'if kind in ("PHV", "tsb"):', names=True)
    assert not same('if kind in ("PHV", "TSB"):', 'IF kind in ("PHV", "TSB"):', names=True)
