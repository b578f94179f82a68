"""A TCP proxy that adds a fixed one-way delay in each direction.

The benchmarks run client and server on loopback (~0.07 ms round trip); a
Lambda talks to RDS across the VPC (a few tenths of a millisecond or more).
Round-trip-bound code (a row-by-row loop) is hurt by that and set-based code
is not, so ratios measured on loopback flatter the loop. `--rtt-ms` in a
benchmark puts this proxy between the timed client and the server, for every
method alike. Kernel netem is not available on this machine, hence user
space: per direction one thread reads and stamps each chunk, another sends it
once its delay has passed (time.sleep, sub-millisecond; asyncio's timer
resolution of about 1 ms was too coarse).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class LatencyProxy:
    def __init__(self, target_host: str, target_port: int, rtt_ms: float) -> None:
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()

    def _direction(self, source: socket.socket, sink: socket.socket) -> None:
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def send() -> None:
            while True:
                due, data = chunks.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    sink.sendall(data)
                except OSError:
                    break
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                chunks.put((time.monotonic() + self.delay, data))
        chunks.put((0.0, b""))

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = _nodelay(socket.create_connection(self.target))
            _nodelay(client)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._direction, args=(source, sink), daemon=True).start()

    @contextlib.contextmanager
    def running(self) -> Iterator[LatencyProxy]:
        threading.Thread(target=self._serve, daemon=True).start()
        try:
            yield self
        finally:
            self._closed.set()
            self._listener.close()
