"""Gate evaluation: stored results in, verdicts (pass / fail / missing / inconclusive / exempt) out.

Absolute gates compare a statistic of the scope with a number (:mod:`farm.gates.absolute`), baseline gates
compare the scope's values with an earlier run (:mod:`farm.gates.baseline`), consistency gates compare the
decodes of each bitstream with each other (:mod:`farm.gates.consistency`). Only ``pass`` passes, and
``exempt`` (a timing gate on an emulated CPU, :mod:`farm.gates.emulated`) does not stop a run passing.
"""

from farm.gates.baseline import Baseline, Baselines, StoreBaselines
from farm.gates.evaluate import evaluate
from farm.gates.verdict import VERDICTS, Verdict, passing
from farm.gates.view import JobView, OutputDiff, RunView, load_view

__all__ = [
    "VERDICTS",
    "Baseline",
    "Baselines",
    "JobView",
    "OutputDiff",
    "RunView",
    "StoreBaselines",
    "Verdict",
    "evaluate",
    "load_view",
    "passing",
]
