"""Power sources, one module each; every module here registers itself with :mod:`farm.power.probe` on import."""
