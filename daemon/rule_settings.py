"""The choices the rule documents leave open, read from the config's [rules] table.

Every key here is documented in the README ("Rule choices") with its default and the
paragraph that leaves the choice open; `kravmottak rules` prints them with their values.
The table is checked by pydantic (`daemon.config`): an unknown key or a value of the
wrong type is refused naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, Field

# RAD-07 (§6.2.1): the regions in which only one claim a day is paid. The text names
# Kolumna, Abdomen, Bekken and Uspesifisert; Hals is named in neither list (choice).
ONE_CLAIM_REGIONS = ("Kolumna", "Abdomen", "Bekken", "Uspesifisert", "Hals")
# RAD-07 (§6.2.1): the region pairs that give only one MR claim
MR_PAIRS = ("Hode+Hals", "Hode+Kolumna", "Toraks+Abdomen", "Abdomen+Bekken", "Bekken+Kolumna")


def _condition_codes(value: object) -> object:
    """ICD-10 codes as the rules compare them: dots dropped, upper case (Z12.4 -> Z124)."""
    if isinstance(value, list | tuple):
        return tuple(c.replace(".", "").upper() if isinstance(c, str) else c for c in value)
    return value


def _region_pair(pair: str) -> str:
    if len(pair.split("+")) != 2:
        raise ValueError(f"{pair!r} is not 'Region+Region'")
    return pair


@dataclass(frozen=True)
class RuleSettings:
    """The choices the rule documents leave open (RULES.md), configurable in [rules]."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # COM-08: claims older than this many calendar months (counted from "today" in
    # Europe/Oslo) are rejected
    max_age_months: Annotated[int, Field(ge=1)] = 6
    # LAB-08: condition codes (ICD-10 prefixes, dots ignored) that qualify an HPV test
    hpv_conditions: Annotated[tuple[str, ...], BeforeValidator(_condition_codes)] = (
        "Z124",
        "R876",
        "N87",
        "D06",
        "Z08",
        "Z09",
    )
    # RAD-07: regions with only one claim a day (Hals: the documented choice)
    one_claim_regions: tuple[str, ...] = ONE_CLAIM_REGIONS
    # RAD-06: CT and CTA share one limit of two a day (False: two each)
    ct_cta_share_limit: bool = True
    # RAD-06: MR and MRA share one limit of two a day (False: two each)
    mr_mra_share_limit: bool = True
    # RAD-07: the MR pair list ("Region+Region")
    mr_pairs: tuple[Annotated[str, BeforeValidator(_region_pair)], ...] = MR_PAIRS
    # EG-05: "0 år til kalenderår pasienten fyller 26 år": the year the patient turns the
    # limit is included (False: only the years before it)
    egenandel_youth_includes_limit_year: bool = True
    # EG-08: a second programme egenandel of a patient that the message cannot tie to a
    # programme is flagged (a note) and paid; False: rejected
    egenandel_flag_programmes: bool = True

    def described(self) -> list[tuple[str, str]]:
        """(key, value as written in TOML) for `kravmottak rules`."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(value)
            out.append((f.name, text))
        return out
