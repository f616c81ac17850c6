"""Configuration: the inventory (devices.yaml), suites and bundle manifests, validated with pydantic.

Every loader reports all problems at once, each with ``file:line: field: message`` (exit code 2).
"""
