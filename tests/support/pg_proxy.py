"""A TCP proxy in front of a real PostgreSQL server that can lose the reply to a COMMIT the server made.

This is the one failure a store retry cannot tell from a rolled-back transaction: the server committed, then the
connection broke before the client read "COMMIT". Armed, the proxy forwards everything as usual until the server's
CommandComplete message for COMMIT (``C``, length 11, ``COMMIT\\0``) comes by; it drops that reply and closes both
sides of that connection. So the server has really committed (it only sends the tag once it has), and the client
sees a connection lost in the middle of COMMIT. It watches the server's side only: psycopg prepares a statement it
has run five times, after which the client's COMMIT no longer carries its text, but the reply always does.

``hold`` is the other order: the proxy keeps the client's next COMMIT from the server and drops the client's side
of that connection, so the client retries while the server still holds the first try's transaction open, until
``release`` sends it the COMMIT after all (a commit that is slow, not lost). That one has to be found in what the
client sends, so it is for a connection's first few COMMITs, before psycopg prepares the statement.

Connections are plain (``sslmode=disable`` in ``url``), so the bytes can be read. Every thread and socket is
stopped by ``close``.
"""

from __future__ import annotations

import select
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete, length 4 + len("COMMIT\0"), tag COMMIT
COMMIT_SENT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # a simple Query: how psycopg sends a statement without parameters


class CommitReplyCutter:
    """Listens on a free loopback port and relays each connection to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._armed = 0  # how many COMMIT replies still to lose
        self._holding = False  # whether to hold the next COMMIT a client sends
        self.held = threading.Event()  # set once a COMMIT is held (its client's side is closed)
        self._release = threading.Event()
        self.cuts = 0  # how many were lost: a test checks the cut really happened
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def url(self, server_url: str) -> str:
        """``server_url`` (a postgresql:// URL of the upstream server) pointed at this proxy instead."""
        parts = urlsplit(server_url)
        user = f"{parts.username}@" if parts.username else ""
        query = "sslmode=disable&gssencmode=disable"
        return urlunsplit((parts.scheme, f"{user}127.0.0.1:{self.port}", parts.path, query, ""))

    def arm(self, times: int = 1) -> None:
        """Lose the reply of the next ``times`` COMMITs the server acknowledges, on whichever connection."""
        with self._lock:
            self._armed += times

    def hold(self) -> None:
        """Keep the next COMMIT a client sends from the server, and close that client's side of the connection."""
        with self._lock:
            self._holding = True

    def release(self) -> None:
        """Send the held COMMIT to the server after all."""
        self._release.set()

    def close(self) -> None:
        self._closing.set()
        self._release.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.1)
            if not ready or self._closing.is_set():
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._relay, client, server)

    def _take_cut(self) -> bool:
        with self._lock:
            if self._armed <= 0:
                return False
            self._armed -= 1
            self.cuts += 1
            return True

    def _take_hold(self) -> bool:
        with self._lock:
            held, self._holding = self._holding, False
            return held

    def _commit_late(self, server: socket.socket, commit: bytes) -> None:
        self.held.set()
        self._release.wait(timeout=60)
        if self._closing.is_set():
            return
        server.sendall(commit)
        reply = b""
        while COMMIT_DONE not in reply:  # wait for the server to commit, then drop the connection
            data = server.recv(65536)
            if not data:
                return
            reply += data

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        tail = b""  # the end of the server's last chunk, should the tag be split across two
        try:
            while not self._closing.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if COMMIT_SENT in data and self._take_hold():
                            client.close()
                            self._commit_late(server, data)
                            return
                        server.sendall(data)
                        continue
                    if COMMIT_DONE in tail + data and self._take_cut():
                        return  # the server committed; its reply is dropped with the connection
                    tail = data[-len(COMMIT_DONE) :]
                    client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()
