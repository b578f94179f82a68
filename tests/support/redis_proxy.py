"""A TCP proxy in front of a real Redis that can leave a connection half-open.

After a failover or a NAT timeout a client can keep a TCP connection whose
other end is gone: what it sends disappears and no reply ever comes. The
proxy reproduces that for exactly the connections that matter: once
`freeze_brpop(prefix)` is on, a connection that sends a `BRPOP` on a key
starting with `prefix` (a worker's task consumer polling its queues) has that
command and everything after it dropped, and is never answered; every other
connection — the remote-control pub/sub, result reads, the health check's own
reply queue — passes untouched. Nothing is popped from Redis, so no task is
lost. It parses the client side of the Redis protocol (RESP arrays of bulk
strings, as redis-py sends them) and forwards bytes as they are.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def _commands(buffer: bytearray) -> Iterator[tuple[int, int, list[bytes]]]:
    """The complete RESP commands at the start of `buffer`: (start, end, arguments)."""
    offset = 0
    while True:
        parsed = _parse(buffer, offset)
        if parsed is None:
            return
        end, args = parsed
        yield offset, end, args
        offset = end


def _parse(buffer: bytearray, offset: int) -> tuple[int, list[bytes]] | None:
    line_end = buffer.find(b"\r\n", offset)
    if line_end < 0:
        return None
    if buffer[offset : offset + 1] != b"*":  # not an array: an inline command, taken whole
        return line_end + 2, bytes(buffer[offset:line_end]).split()
    count = int(buffer[offset + 1 : line_end])
    position, args = line_end + 2, []
    for _ in range(count):
        header_end = buffer.find(b"\r\n", position)
        if header_end < 0:
            return None
        length = int(buffer[position + 1 : header_end])
        start = header_end + 2
        if len(buffer) < start + length + 2:
            return None
        args.append(bytes(buffer[start : start + length]))
        position = start + length + 2
    return position, args


class FreezingRedisProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._frozen_prefix: bytes | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.frozen_connections = 0
        self._closed = False
        threading.Thread(target=self._accept, name="redis-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://{self.upstream[0]}:{self.port}/0"

    def freeze_brpop(self, key_prefix: str) -> None:
        """From now on, a connection that sends BRPOP on a key starting with `key_prefix` goes silent."""
        with self._lock:
            self._frozen_prefix = key_prefix.encode()

    def thaw(self) -> None:
        """New BRPOPs pass again (connections already frozen stay so, like half-open ones)."""
        with self._lock:
            self._frozen_prefix = None

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> FreezingRedisProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._client_to_server, args=(client, server), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(server, client), daemon=True).start()

    def _freezes(self, args: list[bytes]) -> bool:
        with self._lock:
            prefix = self._frozen_prefix
        if prefix is None or not args or args[0].upper() != b"BRPOP":
            return False
        return any(key.startswith(prefix) for key in args[1:-1])

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        buffer = bytearray()
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                buffer += chunk
                forwarded = 0
                for start, end, args in _commands(buffer):
                    if self._freezes(args):
                        server.sendall(bytes(buffer[forwarded:start]))
                        with self._lock:
                            self.frozen_connections += 1
                        self._drain(client)  # half-open: the rest is read and dropped, never answered
                        return
                    forwarded = end
                if forwarded:
                    server.sendall(bytes(buffer[:forwarded]))
                    del buffer[:forwarded]
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    @staticmethod
    def _drain(client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass

    def _server_to_client(self, server: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := server.recv(65536):
                client.sendall(chunk)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
