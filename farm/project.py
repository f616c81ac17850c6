"""Where a farm project's files are: the inventory and the store, found from the working directory upward.

Like git finds ``.git``: the **project root** is the working directory or its nearest ancestor that holds a
``devices.yaml`` file or a ``.farm/`` folder (docs/cli.md). Running ``farm runs`` from ``suites/`` then reads
the project's store instead of a new empty one beside the suites. ``FARM_INVENTORY`` and ``FARM_STORE`` (and
the ``--inventory`` / ``--store`` options) override the search; without a root the working directory is used,
which is where ``farm run`` creates ``.farm/`` on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

INVENTORY = "devices.yaml"
STATE = ".farm"
STORE = "results.db"


def project_root(start: Path | None = None) -> Path | None:
    """The first of ``start`` (default: the working directory) and its ancestors that is a farm project."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / INVENTORY).is_file() or (folder / STATE).is_dir():
            return folder
    return None


def _in_root(name: Path) -> Path:
    """``name`` under the project root; relative (as before) when the root is the working directory itself."""
    root = project_root()
    if root is None or root == Path.cwd().resolve():
        return name
    return root / name


def inventory_path() -> Path:
    """The inventory to use when none is given: ``FARM_INVENTORY``, else the project root's devices.yaml."""
    env = os.environ.get("FARM_INVENTORY")
    return Path(env) if env else _in_root(Path(INVENTORY))


def store_path() -> Path:
    """The store to use when none is given: ``FARM_STORE``, else the project root's .farm/results.db."""
    env = os.environ.get("FARM_STORE")
    return Path(env) if env else _in_root(Path(STATE) / STORE)


def store_target() -> str:
    """``store_path`` as given: a ``postgresql://`` URL in ``FARM_STORE`` must not pass through Path (``//``)."""
    env = os.environ.get("FARM_STORE")
    return env if env else str(_in_root(Path(STATE) / STORE))


def state_dir() -> Path:
    """The project's .farm folder: caches live there when the store is a server rather than a file beside it."""
    return _in_root(Path(STATE))
