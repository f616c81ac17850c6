"""Releases bound to the run that passed: a git tag whose message is a manifest of that run.

:mod:`farm.release.manifest` builds the manifest from the store, :mod:`farm.release.tag` refuses or tags,
:mod:`farm.release.verify` checks a tag against the store and the bundle, :mod:`farm.release.git` is the
git binary behind both.
"""
