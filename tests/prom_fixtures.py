"""Real Prometheus, Pushgateway and ``farm serve`` processes for the exporter's tests (never mocks).

Each runs on a free loopback port with a throw-away config and data directory, and is stopped (and waited for)
when its test is done. They skip on a developer machine without the Debian packages and fail under CI, where
scripts/system-deps installs them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, require_tool

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if http(url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {seconds}s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen[bytes], seconds: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(seconds)
    return int(proc.returncode)


class Prometheus:
    """A real Prometheus scraping ``targets`` every second and evaluating ``rule_files`` every second."""

    def __init__(self, workdir: Path, targets: dict[str, Sequence[str]], rule_files: Sequence[Path] = (),
                 honor_labels: Sequence[str] = ()) -> None:  # fmt: skip
        require_tool(PROMETHEUS, "prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "honor_labels": job in honor_labels, "static_configs": [{"targets": list(addrs)}]}
                for job, addrs in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(f"{self.url}/-/ready", self.proc, self.log)
        except BaseException:
            stop(self.proc)
            raise

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = http(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {status}: {data.get('errorType')}: {data.get('error')}")
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; a scalar result comes back as one unlabelled sample."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "job", "instance"))): float(
                r["value"][1]
            )
            for r in self.query(expr)
        }

    def stop(self) -> None:
        stop(self.proc)


class Pushgateway:
    def __init__(self, workdir: Path) -> None:
        require_tool(PUSHGATEWAY, "prometheus-pushgateway")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "pushgateway.log"
        self.proc = subprocess.Popen(
            [str(PUSHGATEWAY), f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(f"{self.url}/-/ready", self.proc, self.log)
        except BaseException:
            stop(self.proc)
            raise

    def groups(self) -> list[dict[str, Any]]:
        status, body = http(f"{self.url}/api/v1/metrics")
        assert status == 200, body
        return list(json.loads(body)["data"])

    def stop(self) -> None:
        stop(self.proc)


class Serve:
    """``python -m farm serve`` as its own process, as a lab runs it; its URL is read from its first line."""

    def __init__(self, store: Path, inventory: Path, log: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "farm", "serve", "--port", "0", "--store", str(store), "--inventory", str(inventory),
             *args],
            stdout=subprocess.PIPE, stderr=log.open("wb"), stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("serving "):
            stop(self.proc)
            raise RuntimeError(f"farm serve did not start: {line}{log.read_text(errors='replace')}")
        self.url = line.split()[1]
        self.address = urllib.parse.urlsplit(self.url).netloc

    def scrape(self) -> str:
        status, body = http(self.url)
        assert status == 200, body
        return body.decode()

    def stop(self) -> int:
        return stop(self.proc)
