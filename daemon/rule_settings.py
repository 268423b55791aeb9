"""The choices the rule documents leave open, read from the config's [rules] table.

Every key here is documented in the README ("Rule choices") with its default and the
paragraph that leaves the choice open; `kravmottak rules` prints them with their values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# RAD-07 (§6.2.1): the regions in which only one claim a day is paid. The text names
# Kolumna, Abdomen, Bekken and Uspesifisert; Hals is named in neither list (choice).
ONE_CLAIM_REGIONS = ("Kolumna", "Abdomen", "Bekken", "Uspesifisert", "Hals")
# RAD-07 (§6.2.1): the region pairs that give only one MR claim
MR_PAIRS = ("Hode+Hals", "Hode+Kolumna", "Toraks+Abdomen", "Abdomen+Bekken", "Bekken+Kolumna")


@dataclass(frozen=True)
class RuleSettings:
    """The choices the rule documents leave open (RULES.md), configurable in [rules]."""

    # COM-08: claims older than this many calendar months (counted from "today" in
    # Europe/Oslo) are rejected
    max_age_months: int = 6
    # LAB-08: condition codes (ICD-10 prefixes, dots ignored) that qualify an HPV test
    hpv_conditions: tuple[str, ...] = ("Z124", "R876", "N87", "D06", "Z08", "Z09")
    # RAD-07: regions with only one claim a day (Hals: the documented choice)
    one_claim_regions: tuple[str, ...] = ONE_CLAIM_REGIONS
    # RAD-06: CT and CTA share one limit of two a day (False: two each)
    ct_cta_share_limit: bool = True
    # RAD-06: MR and MRA share one limit of two a day (False: two each)
    mr_mra_share_limit: bool = True
    # RAD-07: the MR pair list ("Region+Region")
    mr_pairs: tuple[str, ...] = MR_PAIRS

    def __post_init__(self) -> None:
        if not isinstance(self.max_age_months, int) or self.max_age_months < 1:
            raise ValueError(
                f"max_age_months must be a whole number ≥ 1, not {self.max_age_months!r}"
            )
        for pair in self.mr_pairs:
            if len(pair.split("+")) != 2:
                raise ValueError(f"mr_pairs: {pair!r} is not 'Region+Region'")

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
