"""A loopback TCP proxy that can cut a connection and records what clients send.

It sits between the real handler and the real Dovecot to produce what a
server alone cannot: a line dropped in the middle of a RETR. TLS passes
through untouched (bytes are forwarded, never decrypted), so it also proves
what a client did or did not send in clear text.
"""

from __future__ import annotations

import contextlib
import socket

from tests.support.background import ThreadedTcpServer


class TcpProxy(ThreadedTcpServer):
    """Forward 127.0.0.1:<port> to 127.0.0.1:<target_port> (``with TcpProxy(port) as proxy:``)."""

    thread_name = "tcp-proxy"

    def __init__(
        self,
        target_port: int,
        *,
        cut_after_bytes: int | None = None,
        cut_connections: int = 1,
    ) -> None:
        """With ``cut_after_bytes``, the first ``cut_connections`` connections are
        closed once the server has sent that many bytes to the client."""
        super().__init__()
        self._target_port = target_port
        self._cut_after = cut_after_bytes
        self._cuts_left = cut_connections if cut_after_bytes is not None else 0
        self._client_bytes = bytearray()
        self.cuts = 0

    @property
    def client_sent(self) -> bytes:
        """Everything any client sent towards the server, in arrival order."""
        with self.lock:
            return bytes(self._client_bytes)

    def accepted(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(None)
        try:
            upstream = socket.create_connection((self.host, self._target_port), timeout=10)
        except OSError:
            conn.close()
            return
        with self.lock:
            cut = None
            if self._cuts_left > 0:
                self._cuts_left -= 1
                cut = self._cut_after
        self.track(conn)
        self.track(upstream)
        self.spawn(self._pump_up, conn, upstream, name=f"tcp-proxy-up-{index}")
        self.spawn(self._pump_down, conn, upstream, cut, name=f"tcp-proxy-down-{index}")

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self.lock:
                    self._client_bytes += data
                upstream.sendall(data)
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
                    with self.lock:
                        self.cuts += 1
                    break
                client.sendall(data)
                sent += len(data)
        finally:
            # A hard cut: both directions die, like a dropped line.
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
