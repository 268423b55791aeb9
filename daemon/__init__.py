"""kravmottak: receives outpatient reimbursement claims and answers them."""

__version__ = "0.1.0"
