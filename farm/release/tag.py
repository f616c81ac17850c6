"""``farm release tag``: a release tag that only a complete run whose every gate passed can produce.

The decision uses the run's latest stored gate evaluation (what ``farm run`` or ``farm gate`` decided, with
its inputs), never a fresh one computed on the side, so the manifest names verdicts anyone can look up.
Every reason to refuse is collected and reported together (exit 1): a run not complete, no evaluation, each
gate that failed, is missing or is inconclusive, and a bundle whose digest is not the run's.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm import __version__
from farm.bundle import Bundle
from farm.config.suite import Suite
from farm.errors import InputError, Refused
from farm.fileio import write_atomic
from farm.gates import passing
from farm.release import git
from farm.release.manifest import bound_to_store, canonical, tag_message
from farm.report import verdicts_from_store
from farm.store import Store


@dataclass(frozen=True)
class Released:
    tag: str
    commit: str
    manifest: dict[str, Any]
    manifest_path: Path


def preflight(version: str, repo: Path) -> Path:
    """Everything about the repository that would stop a tag, checked before a run spends its time."""
    root = git.repo_root(repo)
    git.check_tag_name(root, version)
    git.head_commit(root)
    if git.tag_exists(root, version):
        raise InputError(f"tag {version!r} already exists in {root}; a release tag is never moved")
    return root


def refusals(store: Store, run_id: str, bundle: Bundle) -> tuple[list[str], int | None]:
    """Why this run must not be released (empty when it may), and the evaluation the decision used."""
    run = store.run(run_id)
    if run is None:
        raise InputError(f"no run {run_id!r} in {store.where}")
    reasons: list[str] = []
    if run["status"] != "complete":
        reasons.append(f"run {run_id} is {run['status']}, not complete")
    if bundle.digest != run["bundle_digest"]:
        reasons.append(
            f"bundle {bundle.label} ({bundle.source}) has digest {bundle.digest[:16]}, but run {run_id} tested "
            f"{run['bundle_name']}@{run['bundle_version']} with digest {run['bundle_digest'][:16]}"
        )
    verdicts = verdicts_from_store(store, run_id)
    if not verdicts:
        reasons.append(f"run {run_id} has no gate evaluation (run 'farm gate {run_id}')")
        return reasons, None
    evaluation = int(store.gate_verdicts(run_id)[0]["evaluation"])
    declared = Suite.model_validate_json(run["suite_json"]).gates
    covered = {v.gate_index for v in verdicts}
    for index, gate in enumerate(declared):
        if index not in covered:
            reasons.append(f"gate {gate.describe()} has no verdict in evaluation {evaluation}")
    reasons += [f"gate {v.verdict}: {v.label}: {v.detail}" for v in verdicts if not passing(v.verdict)]
    return reasons, evaluation


def tag_release(
    store: Store, run_id: str, version: str, *, repo: Path, bundle: Bundle, sign: bool, manifest_out: Path,
) -> Released:  # fmt: skip
    root = preflight(version, repo)
    reasons, evaluation = refusals(store, run_id, bundle)
    if reasons or evaluation is None:
        raise Refused(f"release {version} refused for run {run_id}:", reasons)
    commit = git.head_commit(root)
    manifest = bound_to_store(store, run_id, evaluation)
    manifest["release"] = {
        "version": version, "tag": version, "commit": commit, "created_at": time.time(),
        "tagged_by": f"codec-farm {__version__}", "signed": sign,
    }  # fmt: skip
    git.create_tag(root, version, tag_message(manifest), sign=sign)
    text = canonical(manifest)
    try:
        manifest_out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(manifest_out, text, mode=0o644)
        store.add_release(
            tag=version, version=version, run_id=run_id, suite_name=manifest["suite"]["name"],
            bundle_digest=bundle.digest, evaluation=evaluation, repo=str(root), commit_sha=commit,
            manifest_json=text, manifest_sha256=hashlib.sha256(text.encode()).hexdigest(),
        )  # fmt: skip
    except BaseException:
        # a tag without its record would be a release the farm does not know (and no baseline for the next)
        git.delete_tag(root, version)
        raise
    return Released(version, commit, manifest, manifest_out)
