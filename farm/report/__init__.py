"""What a run looks like to people and to CI: tables (tables.py), JSON and CSV (machine.py), JUnit XML (junit.py).

Everything is built from the store, so ``farm report`` and ``farm gate`` show exactly what ``farm run`` did.
This package's names are re-exported here because other code imports them from ``farm.report``.
"""

from __future__ import annotations

from farm.report.junit import write_junit
from farm.report.machine import run_json, write_csv, write_json
from farm.report.points import bd_warnings, rate_point_rows, sequence_bd_rows
from farm.report.tables import (
    MISSING,
    agreement_table,
    results_rows,
    results_table,
    verdict_table,
    verdicts_from_store,
)

__all__ = [
    "MISSING",
    "agreement_table",
    "bd_warnings",
    "rate_point_rows",
    "results_rows",
    "results_table",
    "run_json",
    "sequence_bd_rows",
    "verdict_table",
    "verdicts_from_store",
    "write_csv",
    "write_json",
    "write_junit",
]
