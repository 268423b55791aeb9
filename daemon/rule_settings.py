"""The choices the rule documents leave open, read from the config's [rules] table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleSettings:
    """The choices the rule documents leave open (RULES.md), configurable in [rules]."""

    max_age_days: int = 183  # COM-08: claims older than about six months are rejected
    # LAB-08: condition codes (ICD-10 prefixes, dots ignored) that qualify an HPV test
    hpv_conditions: tuple[str, ...] = ("Z124", "R876", "N87", "D06", "Z08", "Z09")
