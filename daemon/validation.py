"""Declarative checks of the project's own files (pydantic v2), in one voice.

The config, the partners file and the RHF table are described by pydantic models with
`extra="forbid"`: a misspelt key or a value of the wrong type is refused by the model,
not by hand-written `isinstance` checks. This module turns pydantic's errors into the
project's messages, each naming the entry and the field (the caller adds the file):

    [intake] poll_interval_seconds: a number is needed, not 'fast'
    partner #2 (HER 90001) require_signature: true or false is needed, not 'yes'

What remains in the loaders is the domain: cross-entry rules (a county in one RHF only),
check digits, paths resolved against the file's folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import Strict, ValidationError

# TOML has real booleans; "yes" or 1 for a switch is a mistake, not a true
StrictBool = Annotated[bool, Strict()]

UNKNOWN = frozenset({"extra_forbidden", "unexpected_keyword_argument"})
MISSING = frozenset({"missing", "missing_keyword_argument", "missing_argument"})
# pydantic's words, said the way an operator editing a TOML file reads them
PLAIN = {
    "float_parsing": "a number is needed",
    "float_type": "a number is needed",
    "int_parsing": "a whole number is needed",
    "int_type": "a whole number is needed",
    "int_from_float": "a whole number is needed",
    "bool_type": "true or false is needed",
    "bool_parsing": "true or false is needed",
    "string_type": "a string is needed",
    "list_type": "a list is needed",
    "tuple_type": "a list is needed",
    "dict_type": "a table is needed",
    "model_type": "a table is needed",
    "dataclass_type": "a table is needed",
    "date_type": "a TOML date is needed, e.g. 2019-12-31",
}


def describe(error: Any) -> str:
    """One pydantic error as a phrase: what is wrong and, for a bad value, the value."""
    kind = error["type"]
    if kind in UNKNOWN:
        return "unknown key (misspelt?)"
    if kind in MISSING:
        return "missing"
    text = PLAIN.get(kind) or str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return text  # our own validators' texts already say which value
    return f"{text}, not {error['input']!r}"


def field_path(loc: Sequence[str | int]) -> str:
    """('temp_suffixes', 0) -> 'temp_suffixes #1' (entries counted from 1, as people do)."""
    return " ".join(f"#{item + 1}" if isinstance(item, int) else str(item) for item in loc)


def messages(exc: ValidationError, where: Callable[[tuple[str | int, ...]], str]) -> list[str]:
    """Every error of `exc` as `where(loc): phrase`; `where` names entry and field."""
    return [f"{where(tuple(e['loc']))}: {describe(e)}" for e in exc.errors()]
