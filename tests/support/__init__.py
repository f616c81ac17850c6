"""Helpers shared by several test modules (test modules import this package, never each other)."""
