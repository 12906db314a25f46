"""A TCP proxy in front of Redis that drops the reply to one command, then the connection.

Used to reproduce "Redis ran the script, the client never heard back": the proxy forwards a
request containing ``marker`` to Redis, waits until Redis has surely run it, and closes both
sides without passing the reply on. Every other byte is forwarded as is. Loopback only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class DropOneReplyProxy:
    def __init__(self, upstream_port: int, marker: bytes, drops: int = 1) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._marker = marker
        self.drops_left = drops
        self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _should_drop(self, seen: bytes) -> bool:
        with self._lock:
            if self.drops_left > 0 and self._marker in seen:
                self.drops_left -= 1
                self.dropped += 1  # counted now: the reply can no longer come back
                return True
            return False

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        tail = b""  # the marker may arrive split across two reads
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                drop = self._should_drop(tail + data)
                tail = data[-len(self._marker) :]
                if drop:
                    upstream.shutdown(socket.SHUT_RD)  # Redis runs it; nothing comes back
                upstream.sendall(data)
                if drop:
                    time.sleep(0.3)
                    break
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)

    def close(self) -> None:
        self._closed = True
        self._server.close()
