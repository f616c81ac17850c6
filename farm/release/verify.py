"""``farm release verify TAG``: does a release tag still describe what the store and the bundle hold?

The tag's manifest is compared with one rebuilt from the store for the same run and gate evaluation, and the
bundle (given, or where the run found it) is checksummed again. Every difference is named: a stored result
edited since the release changes a table digest, a verdict edited changes the verdict list, a rebuilt
bundle changes its digest. A signed tag must also carry a signature git accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.bundle import Bundle
from farm.errors import InputError
from farm.release import git
from farm.release.manifest import bound_to_store, parse_tag_body
from farm.store import Store


@dataclass(frozen=True)
class Verification:
    tag: str
    manifest: dict[str, Any]
    problems: list[str]
    signature: str  # what git said about the signature, or "unsigned"


def read_manifest(repo: Path, tag: str) -> tuple[dict[str, Any], git.TagContents]:
    root = git.repo_root(repo)
    git.check_tag_name(root, tag)  # for-each-ref takes a pattern: "v*" must not stand for every tag
    contents = git.read_tag(root, tag)
    if contents.kind != "tag":
        raise InputError(f"{tag} is a lightweight tag: farm releases are annotated tags with a manifest")
    manifest = parse_tag_body(contents.body)
    if manifest is None:
        raise InputError(f"tag {tag}'s message is not a codec-farm release manifest")
    return manifest, contents


def verify_release(store: Store, repo: Path, tag: str, find_bundle: Callable[[str], Bundle]) -> Verification:
    """``find_bundle(run_id)`` opens the released bundle; a bundle it cannot find or verify is a problem too."""
    manifest, contents = read_manifest(repo, tag)
    root = git.repo_root(repo)
    problems: list[str] = []
    run_id = str(manifest.get("run", {}).get("id", ""))
    evaluation = int(manifest.get("gates", {}).get("evaluation", 0))
    if contents.commit != manifest.get("release", {}).get("commit"):
        problems.append(f"the tag points at {contents.commit[:12]}, the manifest names another commit")
    if store.run(run_id) is None:
        problems.append(f"run {run_id} is not in the store {store.where}")
    else:
        now = bound_to_store(store, run_id, evaluation)
        problems += _differences(manifest, now)
    bundle: Bundle | None = None
    try:
        bundle = find_bundle(run_id)
    except InputError as exc:  # missing, or no longer matching its own SHA256SUMS: changed since the release
        problems.append(f"bundle: {exc}")
    if bundle is not None and bundle.digest != manifest["bundle"]["digest"]:
        problems.append(
            f"bundle {bundle.label} ({bundle.source}) now has digest {bundle.digest[:16]}, "
            f"the release has {manifest['bundle']['digest'][:16]}"
        )
    signature = "unsigned"
    if contents.signature.strip():
        ok, said = git.verify_signature(root, tag)
        signature = said or ("good signature" if ok else "bad signature")
        if not ok:
            problems.append(f"signature not accepted by git verify-tag: {said}")
    elif manifest.get("release", {}).get("signed"):
        problems.append("the manifest says the tag was signed, but it carries no signature")
    return Verification(tag, manifest, problems, signature)


def _differences(tagged: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in sorted(set(now) | (set(tagged) - {"release"})):
        if key in ("results", "gates"):
            continue
        if tagged.get(key) != now.get(key):
            out.append(f"{key}: the store no longer matches the release manifest")
    tagged_results, now_results = tagged.get("results", {}), now.get("results", {})
    changed = sorted(k for k in now_results if k != "all" and tagged_results.get(k) != now_results[k])
    if changed or tagged_results.get("all") != now_results.get("all"):
        out.append(f"stored results changed since the release: {', '.join(changed) or 'all'}")
    tagged_verdicts = tagged.get("gates", {}).get("verdicts", [])
    now_verdicts = now.get("gates", {}).get("verdicts", [])
    if len(tagged_verdicts) != len(now_verdicts):
        out.append(f"gate evaluation has {len(now_verdicts)} verdicts, the release {len(tagged_verdicts)}")
    for old, new in zip(tagged_verdicts, now_verdicts, strict=False):
        if old != new:
            out.append(f"gate verdict changed: {old.get('gate')} [{old.get('scope')}]: was {old.get('verdict')} "
                       f"({old.get('value')}), now {new.get('verdict')} ({new.get('value')})")  # fmt: skip
    return out
