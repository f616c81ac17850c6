"""More repeats for the baseline gates that are still undecided, until they decide or reach their maximum.

A gate with ``repeats: {min, max}`` that comes out ``inconclusive`` at a look before its last asks for the next
look's repeats (``inputs.sequential.next_repeats``, farm/sequential.py). This loop adds those repeats as new test
jobs (new repeat indices) for the strata in the gate's scope only: its devices, every sequence and rate point
of the bundle under test. They run like a resumed run's missing jobs: same run id, the run reopened as a new
attempt, the same executor and recorder, then scored and gated again. So a run stopped meanwhile is simply
``interrupted`` and ``--resume`` carries on (its gates ask for the same repeats again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from farm.gates.verdict import Verdict
from farm.session.spec import JobKey, JobSpec
from farm.store import Store

Pair = tuple[str, JobKey]  # (device id, job key): what a resume calls done


class Outcome(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def verdicts(self) -> list[Verdict]: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)
Rerun = Callable[[list[JobSpec], set[Pair]], OutcomeT]
"""Run ``jobs`` of the run again except the (device, job) pairs given: the pipeline's resume path."""


def wanted_repeats(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """Repeats per stratum each device needs for the next look of its undecided adaptive gates."""
    out: dict[str, int] = {}
    for v in verdicts:
        seq = v.inputs.get("sequential")
        if v.verdict != "inconclusive" or not isinstance(seq, dict) or seq.get("next_repeats") is None:
            continue
        for device in v.inputs.get("devices", []):
            out[device] = max(out.get(device, 0), int(seq["next_repeats"]))
    return out


def extra_jobs(jobs: Sequence[JobSpec], wanted: dict[str, int]) -> tuple[list[JobSpec], set[Pair]]:
    """The bundle's jobs for repeats up to the most any device wants, and which device needs which of them."""
    templates = {(j.key.sequence, j.key.rate_kbps): j for j in jobs if j.key.role == "test"}
    planned = {j.key for j in jobs}
    new: list[JobSpec] = []
    for (sequence, rate), template in templates.items():
        for rep in range(max(wanted.values(), default=0)):
            key = JobKey("test", sequence, rate, rep)
            if key not in planned:
                new.append(replace(template, index=len(jobs) + len(new), key=key))
    every = [*jobs, *new]
    need = {(d, j.key) for d, top in wanted.items() for j in every if j.key.role == "test" and j.key.repeat < top}
    return new, need


def more_repeats(outcome: OutcomeT, jobs: list[JobSpec], devices: Sequence[str], store: Store, run_id: str,
                 rerun: Rerun[OutcomeT], log: Callable[[str], None]) -> OutcomeT:  # fmt: skip
    """Run the next looks' repeats while an adaptive gate asks for them; each (device, job) is tried once."""
    tried: set[Pair] = set()
    while outcome.status == "complete":
        wanted = wanted_repeats(outcome.verdicts)
        new, need = extra_jobs(jobs, wanted)
        jobs = [*jobs, *new]
        have = {(d, JobKey(role, seq, rate, rep)) for d, role, seq, rate, rep in store.completed_job_keys(run_id)}
        todo = need - have - tried
        if not todo:
            return outcome
        tried |= todo
        shown = ", ".join(f"{d}: {n}" for d, n in sorted(wanted.items()))
        log(f"baseline gates undecided: {len(todo)} more jobs for their next look (repeats per stratum {shown})")
        store.reopen_run(run_id, extend=True)
        outcome = rerun(jobs, {(d, j.key) for d in devices for j in jobs} - todo)
    return outcome
