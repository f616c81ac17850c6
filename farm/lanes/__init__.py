"""A pipelined run's lanes: encodes, device sessions and scoring overlap, each timed (docs/pipelined-run.md)."""
