"""How bytes and commands reach a device. Every transport speaks the same small protocol (``base.Transport``)."""
