"""One device's session, runnable in any process: a picklable spec in, typed events out.

Nothing here imports the store or the UI: a session on a remote agent builds its own links and caches, and the
controller's recorder is the only writer of results.
"""
