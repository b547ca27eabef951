"""A loopback TCP proxy that can cut a connection and records what clients send.

It sits between the real handler and the real Dovecot to produce what a
server alone cannot: a line dropped in the middle of a RETR. TLS passes
through untouched (bytes are forwarded, never decrypted), so it also proves
what a client did or did not send in clear text.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self


class TcpProxy:
    def __init__(
        self,
        target_port: int,
        *,
        cut_after_bytes: int | None = None,
        cut_connections: int = 1,
    ) -> None:
        """Forward 127.0.0.1:<port> to 127.0.0.1:<target_port>.

        With ``cut_after_bytes``, the first ``cut_connections`` connections are
        closed once the server has sent that many bytes to the client.
        """
        self._target_port = target_port
        self._cut_after = cut_after_bytes
        self._cuts_left = cut_connections if cut_after_bytes is not None else 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # so the accept loop notices close()
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._client_bytes = bytearray()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self.connections = 0
        self.cuts = 0

    @property
    def client_sent(self) -> bytes:
        """Everything any client sent towards the server, in arrival order."""
        with self._lock:
            return bytes(self._client_bytes)

    def start(self) -> Self:
        thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            # shutdown wakes a thread blocked in recv; close alone does not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                cut = None
                if self._cuts_left > 0:
                    self._cuts_left -= 1
                    cut = self._cut_after
                self._sockets += [client, upstream]
            pair = (client, upstream)
            for target, args in (
                (self._pump_up, pair),
                (self._pump_down, (*pair, cut)),
            ):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    self._client_bytes += data
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    def _pump_down(
        self, client: socket.socket, upstream: socket.socket, cut_after: int | None
    ) -> None:
        sent = 0
        try:
            while data := upstream.recv(65536):
                if cut_after is not None and sent + len(data) >= cut_after:
                    client.sendall(data[: cut_after - sent])
                    with self._lock:
                        self.cuts += 1
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            # A hard cut: both directions die, like a dropped line.
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
