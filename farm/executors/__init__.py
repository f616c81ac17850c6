"""Executors run device sessions and bring their events back to the controller (threads here; Dask next)."""
