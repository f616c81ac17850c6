"""The few git operations a release needs, through the real ``git`` binary with argument lists.

The git binary rather than a library: signing (GPG or SSH), hooks and the user's identity then behave exactly
as they do for people's own ``git tag``, and no shell ever sees a tag name or a message.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from farm.errors import FarmError, InputError

TIMEOUT_S = 120  # signing may wait for an agent; anything longer is a hung git


@dataclass(frozen=True)
class TagContents:
    kind: str  # "tag" for an annotated tag, "commit" for a lightweight one
    subject: str
    body: str
    signature: str
    commit: str


def _git(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise FarmError("git is not installed (releases are git tags)")
    try:
        return subprocess.run(
            [git, "-C", str(repo), *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise FarmError(f"git {args[0]} in {repo} did not finish within {TIMEOUT_S}s") from None


def _fail(what: str, res: subprocess.CompletedProcess[str]) -> FarmError:
    text = (res.stderr or res.stdout).strip().splitlines()
    return FarmError(f"{what}: git exited {res.returncode}" + (f": {text[-1]}" if text else ""))


def repo_root(path: Path) -> Path:
    if not path.is_dir():
        raise InputError(f"--repo {path}: no such directory")
    res = _git(path, "rev-parse", "--show-toplevel")
    if res.returncode != 0:
        raise InputError(f"--repo {path}: not a git repository")
    return Path(res.stdout.strip())


def check_tag_name(repo: Path, name: str) -> None:
    res = _git(repo, "check-ref-format", f"refs/tags/{name}")
    if res.returncode != 0 or name.startswith("-"):
        raise InputError(f"{name!r} is not a valid git tag name")


def head_commit(repo: Path) -> str:
    res = _git(repo, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    if res.returncode != 0:
        raise InputError(f"{repo} has no commit to tag yet")
    return res.stdout.strip()


def tag_exists(repo: Path, name: str) -> bool:
    return _git(repo, "rev-parse", "--verify", "-q", f"refs/tags/{name}").returncode == 0


def create_tag(repo: Path, name: str, message: str, *, sign: bool) -> None:
    """An annotated (or signed) tag on HEAD whose message is ``message`` byte for byte (no comment stripping)."""
    res = _git(repo, "tag", "-s" if sign else "-a", "--cleanup=verbatim", "-F", "-", "--", name, "HEAD", stdin=message)
    if res.returncode != 0:
        raise _fail(f"creating tag {name}" + (" (signed: is user.signingkey set?)" if sign else ""), res)


def delete_tag(repo: Path, name: str) -> None:
    _git(repo, "tag", "-d", "--", name)


def read_tag(repo: Path, name: str) -> TagContents:
    fields = ("objecttype", "contents:subject", "contents:body", "contents:signature", "*objectname", "objectname")
    fmt = "%00".join(f"%({f})" for f in fields)
    res = _git(repo, "for-each-ref", f"--format={fmt}", f"refs/tags/{name}")
    if res.returncode != 0:
        raise _fail(f"reading tag {name}", res)
    if not res.stdout:
        raise InputError(f"no tag {name!r} in {repo}")
    kind, subject, body, signature, peeled, target = res.stdout.split("\0", 5)
    return TagContents(kind, subject, body, signature, (peeled or target).strip())


def verify_signature(repo: Path, name: str) -> tuple[bool, str]:
    res = _git(repo, "verify-tag", "--", name)
    lines = (res.stderr or res.stdout).strip().splitlines()
    return res.returncode == 0, lines[0] if lines else ""
