"""Devices on many hosts: farm agents as Dask workers, a Dask scheduler, mutual TLS (docs/scale-out.md)."""
