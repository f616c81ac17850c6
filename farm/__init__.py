"""codec-farm: put a codec bundle on real devices, measure it, gate the release."""

__version__ = "0.1.0"
