"""Emulated Debian arm64 boards under qemu-system-aarch64 (docs/qemu-boards.md)."""
