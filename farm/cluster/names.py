"""Names the controller and the agents must agree on: one Dask resource per device, the plugin, event topics."""

from __future__ import annotations

PLUGIN = "farm-agent"
RESOURCE_PREFIX = "device:"


def resource(device_id: str) -> str:
    """The worker resource that stands for one device: a task holding it holds the device's lease."""
    return f"{RESOURCE_PREFIX}{device_id}"


def device_of(resource_name: str) -> str | None:
    return resource_name[len(RESOURCE_PREFIX) :] if resource_name.startswith(RESOURCE_PREFIX) else None


def topic(run_id: str, token: str) -> str:
    """Where one controller's sessions send their events (a resumed run gets a fresh token, so a fresh topic)."""
    return f"farm-events-{run_id}-{token}"
