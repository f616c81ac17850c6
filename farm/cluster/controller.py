"""The controller's side of the cluster: find the agent of each device, send what it lacks, pull outputs.

Each call names its agent by worker address (``Client.run(..., workers=[addr])``): these are quick calls on the
agent's event loop, not tasks, so they never queue behind a busy device's session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from distributed import Client

from farm.cluster import remote
from farm.cluster.names import device_of
from farm.session.cancel import Cancel

POLL_S = 0.5


def agents_by_device(client: Client) -> dict[str, str]:
    """device id -> worker address of the connected agent that offers it."""
    info = client.scheduler_info(n_workers=-1)
    out: dict[str, str] = {}
    for addr, w in info.get("workers", {}).items():
        for name in w.get("resources", {}):
            device = device_of(name)
            if device is not None:
                out[device] = addr
    return out


def wait_for_agents(client: Client, wanted: Iterable[str], timeout_s: float, cancel: Cancel) -> dict[str, str]:
    """Wait up to ``timeout_s`` for an agent to offer each wanted device; return those that are offered."""
    want = set(wanted)
    deadline = time.monotonic() + timeout_s
    while True:
        found = agents_by_device(client)
        if want <= set(found) or time.monotonic() >= deadline or cancel.wait(0):
            return {d: a for d, a in found.items() if d in want}
        cancel.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))


def stage(client: Client, needs: dict[str, set[str]], local: Callable[[str], Path]) -> dict[str, tuple[int, int]]:
    """Send each agent (address -> digests it needs) every file it lacks, asked by digest, all agents at once.

    One round trip asks every agent; then each lacking file is read once and sent to every agent that lacks it.
    Returns, per agent, (files sent, bytes sent).
    """
    everything = sorted(set().union(*needs.values())) if needs else []
    lacking: dict[str, list[str]] = client.run(remote.missing, everything, workers=list(needs)) if needs else {}
    sent = {addr: (0, 0) for addr in needs}
    for digest in sorted({d for addr, ds in lacking.items() for d in ds if d in needs[addr]}):
        to = [addr for addr, ds in lacking.items() if digest in ds and digest in needs[addr]]
        data = local(digest).read_bytes()
        client.run(remote.put, digest, data, workers=to)
        for addr in to:
            sent[addr] = (sent[addr][0] + 1, sent[addr][1] + len(data))
    return sent


def pull_output(client: Client, addr: str, digest: str, dest: Path) -> int:
    data: bytes = client.run(remote.read_output, digest, workers=[addr])[addr]
    dest.write_bytes(data)
    return len(data)


def holders(client: Client, addrs: set[str], device_ids: list[str]) -> dict[str, tuple[str, float]]:
    """Which run holds each of these devices, and since when: one call to all the agents concerned at once."""
    answers: dict[str, dict[str, tuple[str, float]]] = client.run(remote.holders, device_ids, workers=sorted(addrs))
    out: dict[str, tuple[str, float]] = {}
    for held in answers.values():
        out.update(held)
    return out
