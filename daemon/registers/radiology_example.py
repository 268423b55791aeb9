"""The EXAMPLE radiology categories and kroner (`tariff import --example-categories`).

Helfo's code → refusjonskategori table and the kroner per category were not found in
public sources, so the shipped register is an EXAMPLE: deterministic categories of the
right number (the 2019 rules, §7.1: 16 diagnostic, 4 intervention, 11 nuclear), made-up
but plausible kroner, every row with `source` EXAMPLE. The importer drops every EXAMPLE
rate on each import and makes them anew only with `--example-categories`, so example
kroner never outlive example categories. Once Helfo's table is imported, nothing here
is used.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from daemon.registers.radiology_tariffs import EXAMPLE, RadCode
from daemon.registers.tariff_table import Rate

EXAMPLE_FROM = date(2017, 1, 1)  # the 2017 category system (regelverk 2019 §3)
EXAMPLE_PRIVAT_SHARE = Decimal("0.9")  # privat = 90 % of stat, whole kroner
DIAGNOSTIC_BASE = {  # D01..D16: modality, then one region (odd) or several (even)
    "RG": 1, "RGA": 3, "RGV": 5, "UL": 7, "CT": 9, "CTA": 11, "CT+CTA": 11,
    "MR": 13, "MRA": 15, "MR+MRA": 15,
}  # fmt: skip
INTERVENTION_CATEGORY = {"UL": "I1", "CT": "I2", "MR": "I3"}  # other guidance: I4
EXAMPLE_KRONER = {  # stat, kroner: made up, plausible, NOT the forskrift's
    "D01": 250, "D02": 400, "D03": 1100, "D04": 1600, "D05": 800, "D06": 1200,
    "D07": 350, "D08": 550, "D09": 900, "D10": 1400, "D11": 1100, "D12": 1700,
    "D13": 1300, "D14": 2000, "D15": 1500, "D16": 2300,
    "I1": 900, "I2": 1800, "I3": 2500, "I4": 2200,
    "N01": 900, "N02": 1300, "N03": 2500, "N04": 3500, "N05": 4200, "N06": 4500,
    "N07": 5200, "N08": 4200, "N09": 4900, "N10": 5200, "N11": 5900,
}  # fmt: skip


def example_category(code: RadCode, guidance: str, fdg: bool) -> str:
    """The EXAMPLE category of a code (16 diagnostic, 4 intervention and 11 nuclear
    categories, as many as the 2019 rules name; regelverk §7.1):

    - diagnostic D01..D16: per modality group (RG, RGA, RGV, UL, CT, CTA and CT+CTA, MR,
      MRA and MR+MRA) the odd number for one region (or none), the even one for several;
    - intervention I1 ultrasound-guided, I2 CT-guided, I3 MR-guided (the digest's
      "UL-/CT-/MR-veiledet", else the code's 6th character K/D/G), I4 other guidance
      (fluoroscopy, angiography, unspecified; and the NCSP codes);
    - nuclear N01/N02 NM one/several regions, N03 RNT; PET N04..N11: PET/CT before
      PET/MR (the 6th character L/M), FDG before other tracers, one before several
      regions.
    """
    several = len(code.regions) > 1
    if code.kind == "diagnostic":
        return f"D{DIAGNOSTIC_BASE[code.modality] + several:02d}"
    if code.kind == "intervention":
        return INTERVENTION_CATEGORY.get(guidance, "I4")
    if code.modality == "NM":
        return "N02" if several else "N01"
    if code.modality == "RNT":
        return "N03"
    pet_mr = code.code[5] == "M"
    return f"N{4 + 4 * pet_mr + 2 * (not fdg) + several:02d}"


def example_rates() -> list[Rate]:
    out = []
    for category, kroner in EXAMPLE_KRONER.items():
        stat = Decimal(kroner)
        privat = (stat * EXAMPLE_PRIVAT_SHARE).quantize(Decimal(1))
        for sector, amount in (("stat", stat), ("privat", privat)):
            out.append(Rate(category, sector, amount, EXAMPLE_FROM, None, EXAMPLE))
    return out
