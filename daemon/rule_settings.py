"""The choices the rule documents leave open, read from the config's [rules] table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, Field


def _condition_codes(value: object) -> object:
    """ICD-10 codes as the rules compare them: dots dropped, upper case (Z12.4 -> Z124)."""
    if isinstance(value, list | tuple):
        return tuple(c.replace(".", "").upper() if isinstance(c, str) else c for c in value)
    return value


@dataclass(frozen=True)
class RuleSettings:
    """The choices the rule documents leave open (RULES.md), configurable in [rules]."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # COM-08: claims older than about six months are rejected
    max_age_days: Annotated[int, Field(gt=0)] = 183
    # LAB-08: condition codes (ICD-10 prefixes, dots ignored) that qualify an HPV test
    hpv_conditions: Annotated[tuple[str, ...], BeforeValidator(_condition_codes)] = (
        "Z124",
        "R876",
        "N87",
        "D06",
        "Z08",
        "Z09",
    )
