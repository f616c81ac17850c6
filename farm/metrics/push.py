"""``farm run --pushgateway URL``: push one run's results to a Prometheus Pushgateway.

Why a Pushgateway at all: a CI job's store lives only as long as the job, so nothing could scrape it later.

Why the grouping key is ``job="codec-farm", suite, bundle``: a push replaces its whole group (HTTP PUT), so
each suite x bundle keeps exactly the latest run's results and the gateway holds at most one group per pair,
however many runs CI makes. A run id, commit, version or CI host name in the key would add a group per run
that nobody deletes (the Pushgateway never forgets a group on its own). Cleaning up a group is one DELETE of
the same path (docs/prometheus.md shows the command).

Why counters are not pushed: a CI store starts empty, so a run's "total" would restart at every push and
identical runs would look like no activity to rate(). The pushed gauges carry the same results.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from urllib.parse import quote, urlsplit

from prometheus_client import push_to_gateway
from prometheus_client.registry import CollectorRegistry

from farm.errors import InfraError, InputError
from farm.metrics.collector import StoreCollector
from farm.metrics.results import ResultIndex, open_readonly

JOB = "codec-farm"
TIMEOUT_S = 10.0


def check_url(url: str) -> str:
    """A Pushgateway base URL, checked before the run starts so a typo costs no run (exit 2)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--pushgateway {url!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018  (parsing the port is the check)
    except ValueError:
        raise InputError(f"--pushgateway {url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise InputError(f"--pushgateway {url!r}: give the gateway's base URL, without ?query or #fragment")
    return url.rstrip("/")


def grouping_key(suite: str, bundle: str) -> dict[str, str]:
    return {"suite": suite, "bundle": bundle}


def group_path(suite: str, bundle: str) -> str:
    """The group's path under the gateway, as a CI job's ``curl -X DELETE`` needs it.

    Suite and bundle names are ``[A-Za-z0-9_.-]`` by their schemas, so they never need the Pushgateway's
    base64 form (that is only for values with a '/' or empty ones).
    """
    return f"/metrics/job/{JOB}/suite/{quote(suite, safe='')}/bundle/{quote(bundle, safe='')}"


def push_run(store_path: Path | str, run_id: str, url: str, *, timeout_s: float = TIMEOUT_S) -> dict[str, str]:
    """Push the run's gauges, replacing its group; returns the grouping key. InfraError if the push fails."""
    db = open_readonly(store_path)
    try:
        row = db.execute("SELECT suite_name, bundle_name FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise InputError(f"no run {run_id!r} in {store_path}")
        key = grouping_key(str(row[0]), str(row[1]))
        registry = CollectorRegistry()
        registry.register(StoreCollector(ResultIndex(db, run_id=run_id)))
        try:
            push_to_gateway(check_url(url), job=JOB, registry=registry, grouping_key=key, timeout=timeout_s)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()[:300]
            raise InfraError(f"Pushgateway {url} refused the push: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfraError(f"cannot push to Pushgateway {url}: {reason}") from None
        return key
    finally:
        db.close()
