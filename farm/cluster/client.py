"""The controller's connection to the cluster: mutual TLS, a scheduler that never re-runs a device's task.

A scheduler started with Dask's defaults would re-run the task of a dead agent up to three times (on a device,
that is a second decode nobody asked for), so the controller refuses one whose ``allowed-failures`` is not 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from farm.artifacts import DecodedCache
from farm.cluster import address, certs
from farm.errors import InfraError

if TYPE_CHECKING:
    from distributed import Client, Scheduler

    from farm.executors.base import Executor

CONNECT_TIMEOUT_S = 10.0


def _allowed_failures(dask_scheduler: Scheduler) -> int:
    return int(dask_scheduler.allowed_failures)


@contextmanager
def connect(url: str, cert_dir: Path | None, option: str = "--cluster") -> Iterator[Client]:
    from distributed import Client

    url = address.check(url, option)
    security = certs.security(cert_dir or certs.default_folder(), "client") if address.is_tls(url) else None
    try:
        client = Client(url, security=security, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        hint = " (is the scheduler up, and are these certificates from its CA?)" if security is not None else ""
        raise InfraError(f"cannot connect to the cluster at {url}: {exc}{hint}") from None
    try:
        failures = client.run_on_scheduler(_allowed_failures)
        if failures != 0:
            raise InfraError(
                f"the scheduler at {url} re-runs the task of a lost agent (allowed-failures={failures}); "
                "start it with `farm scheduler` (which sets 0)"
            )
        yield client
    finally:
        client.close()


def executor_factory(
    client: Client, agent_wait_s: float
) -> Callable[[Callable[[str], Path], DecodedCache, float], Executor]:
    from farm.executors.dask import DaskExecutor

    def make(artifact: Callable[[str], Path], outputs: DecodedCache, lease_timeout_s: float) -> Executor:
        return DaskExecutor(client, artifact, outputs, lease_timeout_s, agent_wait_s)

    return make


def agent_devices(client: Client) -> list[dict[str, object]]:
    """Every connected agent's devices and their state (``farm devices --cluster``)."""
    from farm.cluster import remote

    answers = client.run(remote.describe)
    return [answers[a] | {"address": a} for a in sorted(answers)]
