"""Device kinds, one module per inventory transport (``local.py`` for ``kind: local``); each registers itself.

Loaded by :mod:`farm.devices.kind` on first use of the transport, never all at once.
"""
