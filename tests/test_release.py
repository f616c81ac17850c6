"""Release tags: only a complete run whose every gate passed, of this very bundle, gets one; verify catches edits.

Runs go through the real pipeline on the local device, tags into a throw-away git repository with the real git
binary, through the real CLI. One passing run is shared by the tests that only tag or verify it; each of them
works on its own copy of the store.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.bundle import write_sums
from farm.cli import app
from tests.conftest import EXAMPLES, ROOT, require_tool, write

pytestmark = pytest.mark.slow

SUITE = """name: rel
sequences:
  - id: bars
    generate: {{source: testsrc2, width: 128, height: 96, fps: 30, frames: 10}}
rates_kbps: [60, 240]
repeats: {repeats}
warmup_frames: 2
timeout_s: 60
power: {{baseline_s: 0}}
gates:
{gates}
"""
PASSING = """  - {metric: fps, op: ">=", value: 1}
  - {metric: consistency, op: "==", value: bitexact, scope: all}
  - {metric: failures, op: "==", value: 0, scope: all}"""
AV1 = EXAMPLES / "av1-svt"


def farm(store: Path, *args: str) -> tuple[int, str]:
    env = {"FARM_STORE": str(store), "FARM_INVENTORY": str(ROOT / "devices.yaml")}
    res = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "config", "user.name", "Release Bot")
    git(path, "config", "user.email", "release@example.invalid")
    git(path, "commit", "-q", "--allow-empty", "-m", "codec 2.3.0")
    return path


def run_suite(store: Path, folder: Path, gates: str, *extra: str, repeats: int = 2) -> tuple[int, str, str]:
    suite = write(folder / "rel.yaml", SUITE.format(gates=gates, repeats=repeats))
    code, out = farm(store, "run", str(suite), "--bundle", str(AV1), *extra)
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{6}): (PASSED|FAILED)", out)
    assert found is not None, out
    return code, out, found.group(1)


@pytest.fixture(scope="module")
def passed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real passing run: its store and its id."""
    folder = tmp_path_factory.mktemp("passed")
    store = folder / "state" / "results.db"
    code, out, run_id = run_suite(store, folder, PASSING)
    assert code == 0, out
    return store, run_id


@pytest.fixture
def store(passed: tuple[Path, str], tmp_path: Path) -> Path:
    """A private, consistent copy of the passing run's store (SQLite's backup API, WAL included)."""
    copy = tmp_path / "state" / "results.db"
    copy.parent.mkdir(parents=True)
    with sqlite3.connect(passed[0]) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return copy


@pytest.fixture
def run_id(passed: tuple[Path, str]) -> str:
    return passed[1]


def tags(repo: Path) -> list[str]:
    return git(repo, "tag", "-l").split()


def test_passing_run_tags_and_the_tag_verifies(store: Path, run_id: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    manifest_file = tmp_path / "v2.3.0.json"
    code, out = farm(store, "release", "tag", "v2.3.0", "--run", run_id[:17], "--repo", str(repo),
                     "--manifest", str(manifest_file))  # fmt: skip
    assert code == 0, out
    assert "tagged v2.3.0" in out and "3 gate verdicts passed" in out
    assert git(repo, "cat-file", "-t", "v2.3.0").strip() == "tag"  # annotated, not lightweight
    assert git(repo, "rev-parse", "v2.3.0^{commit}") == git(repo, "rev-parse", "HEAD")
    subject = git(repo, "tag", "-l", "--format=%(contents:subject)", "v2.3.0").strip()
    assert subject == f"codec-farm release v2.3.0: av1-svt@1.0.0 (run {run_id}, every gate passed)"
    body = git(repo, "tag", "-l", "--format=%(contents:body)", "v2.3.0")
    assert body.strip() == manifest_file.read_text().strip()  # the tag message and the JSON are one manifest
    manifest = json.loads(manifest_file.read_text())
    db = sqlite3.connect(store)
    digest, suite_digest = db.execute("SELECT bundle_digest, suite_digest FROM runs WHERE id=?", (run_id,)).fetchone()
    assert manifest["bundle"] == {"name": "av1-svt", "version": "1.0.0", "digest": digest}
    assert manifest["suite"] == {"name": "rel", "digest": suite_digest}
    assert [d["id"] for d in manifest["devices"]] == ["local"] and "kernel" in manifest["devices"][0]["properties"]
    assert [v["verdict"] for v in manifest["gates"]["verdicts"]] == ["pass"] * 3
    assert set(manifest["results"]) >= {"jobs", "measurements", "all"}
    assert manifest["release"]["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert db.execute("SELECT tag, run_id FROM releases").fetchall() == [("v2.3.0", run_id)]
    code, out = farm(store, "release", "verify", "v2.3.0", "--repo", str(repo))
    assert code == 0, out
    assert "ok: v2.3.0 is av1-svt@1.0.0" in out and "unsigned" in out


def test_a_bundle_other_than_the_runs_is_refused(store: Path, run_id: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    other = EXAMPLES / "hevc-x265"
    code, out = farm(store, "release", "tag", "v2.3.0", "--run", run_id, "--repo", str(repo), "--bundle", str(other))
    assert code == 1
    assert "release v2.3.0 refused" in out and "bundle hevc-x265@" in out and "but run" in out
    assert tags(repo) == []


def test_an_incomplete_run_is_refused(store: Path, run_id: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with sqlite3.connect(store) as db:
        db.execute("UPDATE runs SET status='incomplete' WHERE id=?", (run_id,))
    code, out = farm(store, "release", "tag", "v2.3.0", "--run", run_id, "--repo", str(repo))
    assert code == 1 and f"run {run_id} is incomplete, not complete" in out
    assert tags(repo) == []


def test_editing_a_stored_result_after_the_release_fails_verify(store: Path, run_id: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert farm(store, "release", "tag", "v1", "--run", run_id, "--repo", str(repo))[0] == 0
    with sqlite3.connect(store) as db:
        db.execute(
            "UPDATE measurements SET value = value * 2 WHERE name = 'fps' AND job_id = "
            "(SELECT MIN(id) FROM jobs WHERE run_id = ?)",
            (run_id,),
        )
    code, out = farm(store, "release", "verify", "v1", "--repo", str(repo))
    assert code == 1
    assert "release v1 does not verify" in out and "stored results changed since the release: measurements" in out
    with sqlite3.connect(store) as db:
        db.execute("UPDATE gates SET detail = 'edited' WHERE run_id = ? AND gate_index = 0", (run_id,))
    code, out = farm(store, "release", "verify", "v1", "--repo", str(repo))
    assert code == 1 and "gate verdict changed: fps >= 1.0 [local]" in out


def test_a_changed_bundle_fails_verify(store: Path, run_id: str, tmp_path: Path, bundle_copy: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    code, out = farm(store, "release", "tag", "v1", "--run", run_id, "--repo", str(repo), "--bundle", str(bundle_copy))
    assert code == 0, out  # a byte-identical copy is the same bundle
    decoder = bundle_copy / "ffdecode.py"
    decoder.write_text(decoder.read_text() + "\n# rebuilt\n")
    code, out = farm(store, "release", "verify", "v1", "--repo", str(repo), "--bundle", str(bundle_copy))
    assert code == 1 and "checksum mismatch" in out  # edited behind its SHA256SUMS
    write_sums(bundle_copy)
    code, out = farm(store, "release", "verify", "v1", "--repo", str(repo), "--bundle", str(bundle_copy))
    assert code == 1 and "bundle av1-svt@1.0.0" in out and "now has digest" in out


def test_failing_missing_and_inconclusive_gates_are_named_and_nothing_is_tagged(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    store = tmp_path / "state" / "results.db"
    failing = """
  - {metric: fps, op: ">=", value: 1.0e+12}
  - {metric: energy_per_frame_j, op: "<=", value: 1000}
  - {metric: fps, op: ">=", baseline: released}"""
    gates = PASSING + failing
    code, out, run_id = run_suite(store, tmp_path, gates, "--release", "v9.0.0", "--repo", str(repo))
    assert code == 1
    assert "release v9.0.0 not tagged: the run did not pass" in out
    code, out = farm(store, "release", "tag", "v9.0.0", "--run", run_id, "--repo", str(repo))
    assert code == 1
    assert f"release v9.0.0 refused for run {run_id}:" in out
    assert "gate fail: fps >= 1e+12 [local]" in out
    assert "gate missing: energy_per_frame_j <= 1000 [local]" in out  # no power meter here (a BD-rate gate
    # without an anchor would be missing too, but is refused before the run: test_hardened_input.py)
    assert "gate inconclusive: fps >= baseline(released) [local]: no released run of suite 'rel'" in out
    assert "gate fail: failures" not in out and "consistency" not in out  # passing gates are not listed
    assert tags(repo) == [] and not (tmp_path / "state" / "releases").exists()


def test_run_release_tags_in_one_step_and_the_next_run_gates_against_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    store = tmp_path / "state" / "results.db"
    code, out, first = run_suite(store, tmp_path, PASSING, "--release", "v1.0.0", "--repo", str(repo))
    assert code == 0, out
    assert "tagged v1.0.0" in out and (tmp_path / "state" / "releases" / "v1.0.0.json").is_file()
    # the same bundle again: decoding is deterministic, so quality and rate are exactly the released ones
    against_release = """
  - {metric: psnr_yuv, op: ">=", baseline: released}
  - {metric: bpp, op: "<=", baseline: released, min_change: 0.01}"""
    gates = PASSING + against_release
    # three repeats against the release's two: 6 vs 4 values per metric, enough for p < 0.01 to be possible
    code, out, second = run_suite(store, tmp_path, gates, "--json", str(tmp_path / "r.json"), repeats=3)
    assert code == 0, out
    verdicts = json.loads((tmp_path / "r.json").read_text())["gates"]
    psnr = next(v for v in verdicts if v["metric"] == "psnr_yuv")
    assert psnr["verdict"] == "pass" and psnr["inputs"]["baseline_run"] == first
    assert f"vs release v1.0.0 (run {first})" in psnr["detail"]
    assert (psnr["inputs"]["n_run"], psnr["inputs"]["n_base"]) == (6, 4)
    assert psnr["gate"] == {"metric": "psnr_yuv", "op": ">=", "baseline": "released"}
    # re-evaluated from the store alone, the baseline gates decide the same, and the stored verdicts keep the gate
    code, out = farm(store, "gate", second)
    assert code == 0 and "psnr_yuv >= baseline(released)" in out
    assert farm(store, "report", second, "--json", str(tmp_path / "again.json"))[0] == 0
    stored = json.loads((tmp_path / "again.json").read_text())["gates"]
    assert [v["gate"].get("baseline") for v in stored][-2:] == ["released", "released"]
    assert stored[-1]["inputs"]["baseline_label"] == f"release v1.0.0 (run {first})"
    code, out = farm(store, "release", "tag", "v1.1.0", "--run", second, "--repo", str(repo))
    assert code == 0, out
    assert tags(repo) == ["v1.0.0", "v1.1.0"]
    for tag in ("v1.0.0", "v1.1.0"):
        assert farm(store, "release", "verify", tag, "--repo", str(repo))[0] == 0


def test_release_preconditions_are_input_errors_found_before_running(store: Path, run_id: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert farm(store, "release", "tag", "v1", "--run", run_id, "--repo", str(repo))[0] == 0
    code, out = farm(store, "release", "tag", "v1", "--run", run_id, "--repo", str(repo))
    assert code == 2 and "tag 'v1' already exists" in out
    code, out = farm(store, "release", "tag", "bad..name", "--run", run_id, "--repo", str(repo))
    assert code == 2 and "'bad..name' is not a valid git tag name" in out
    code, out = farm(store, "release", "tag", "v2", "--run", run_id, "--repo", str(tmp_path))
    assert code == 2 and "not a git repository" in out
    code, out = farm(store, "release", "tag", "v2", "--run", "nosuchrun", "--repo", str(repo))
    assert code == 2 and "no single run matches 'nosuchrun'" in out
    code, out = farm(store, "release", "verify", "v404", "--repo", str(repo))
    assert code == 2 and "no tag 'v404'" in out
    code, out = farm(store, "release", "verify", "v*", "--repo", str(repo))
    assert code == 2 and "'v*' is not a valid git tag name" in out
    git(repo, "tag", "light")
    code, out = farm(store, "release", "verify", "light", "--repo", str(repo))
    assert code == 2 and "lightweight tag" in out
    # a run with a release that could never be tagged stops before doing anything
    suite = write(tmp_path / "rel.yaml", SUITE.format(gates=PASSING, repeats=2))
    runs_before = sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    code, out = farm(store, "run", str(suite), "--bundle", str(AV1), "--release", "v1", "--repo", str(repo))
    assert code == 2 and "already exists" in out
    code, out = farm(store, "run", str(suite), "--bundle", str(AV1), "--sign")
    assert code == 2 and "only apply with --release" in out
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == runs_before


def test_signed_release_verifies_with_the_signature(store: Path, run_id: str, tmp_path: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    require_tool(Path(keygen or "/usr/bin/ssh-keygen"), "openssh-client")
    repo = make_repo(tmp_path / "repo")
    key = tmp_path / "signing"
    subprocess.run([str(keygen), "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    allowed = write(tmp_path / "allowed", f"release@example.invalid {(tmp_path / 'signing.pub').read_text()}")
    for name, value in (("gpg.format", "ssh"), ("user.signingkey", f"{key}.pub"),
                        ("gpg.ssh.allowedSignersFile", str(allowed))):  # fmt: skip
        git(repo, "config", name, value)
    code, out = farm(store, "release", "tag", "v3", "--run", run_id, "--repo", str(repo), "--sign")
    assert code == 0, out
    assert "BEGIN SSH SIGNATURE" in git(repo, "cat-file", "-p", "v3")
    code, out = farm(store, "release", "verify", "v3", "--repo", str(repo))
    assert code == 0 and "Good" in out and "signature" in out
    # a key git no longer trusts makes the release unverifiable
    allowed.write_text("")
    code, out = farm(store, "release", "verify", "v3", "--repo", str(repo))
    assert code == 1 and "signature not accepted" in out
