"""``farm scheduler``: Dask's own scheduler, started with the settings the farm's semantics rely on.

- ``allowed-failures: 0``: a device task whose agent died is never re-run (Dask's default re-runs it up to 3
  times, which would decode on a device twice and hide the loss); the controller fails that device's jobs.
- TLS only, with the farm's certificates (mutual: an agent or controller without a certificate from the
  cluster's CA cannot connect).
- ``worker-ttl``: long enough that an agent whose sessions briefly hold the GIL is not declared dead.
"""

from __future__ import annotations

import asyncio
import signal

import dask
from distributed import Scheduler, Security

SETTINGS = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-ttl": "120s",
    "distributed.scheduler.work-stealing": False,  # a device task may only run where its device is
}


def run_scheduler(host: str, port: int, security: Security) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with dask.config.set(SETTINGS):
            async with Scheduler(host=host, port=port, protocol="tls", security=security, dashboard=False) as s:
                print(f"farm scheduler listening on {s.address}", flush=True)
                done = asyncio.ensure_future(s.finished())
                await asyncio.wait([done, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)

    asyncio.run(main())
