"""Servers the tests run in the background: start, stop and ``with``, written once.

- :class:`BackgroundService`: ``start()``/``close()`` and the with-statement. A
  service that failed to start is closed at once, and one still running when
  the interpreter exits is closed then, so a test run cut short leaves no
  process, thread or system user behind.
- :class:`ThreadedTcpServer`: a listener on 127.0.0.1, port 0, and an accept
  loop on a thread of its own; a subclass answers each connection in
  :meth:`~ThreadedTcpServer.accepted` (the fake POP3 server, the TCP proxy,
  popa3d's inetd).
- :class:`SocketServerThread`: a ``socketserver``-style server (``http.server``,
  werkzeug) serving on a thread of its own (the OAuth2 server, moto).

Subprocess servers (Dovecot) build on :class:`BackgroundService` directly: how
one knows it is ready, and how it is stopped, is theirs alone.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
# How long close() waits for each thread a server started.
JOIN_TIMEOUT_S = 5.0
# Blocking accepts wake this often, so close() is noticed.
_ACCEPT_POLL_S = 0.1

# What must not outlive the test run, closed at exit: (owner id) -> (order, cleanup).
_leftovers: dict[int, tuple[int, Callable[[], None]]] = {}
_leftovers_lock = threading.Lock()


def clean_up_at_exit(owner: object, cleanup: Callable[[], None], *, order: int = 0) -> None:
    """Run ``cleanup`` at interpreter exit unless :func:`cleaned_up` comes first.

    Lower ``order`` first: servers (0) stop before what they serve is removed.
    """
    with _leftovers_lock:
        _leftovers[id(owner)] = (order, cleanup)


def cleaned_up(owner: object) -> None:
    """``owner`` has cleaned up after itself: nothing left to do at exit."""
    with _leftovers_lock:
        _leftovers.pop(id(owner), None)


@atexit.register
def _clean_up_leftovers() -> None:
    with _leftovers_lock:
        pending = sorted(_leftovers.values(), key=lambda item: item[0])
        _leftovers.clear()
    for _, cleanup in pending:
        with contextlib.suppress(Exception):
            cleanup()


class BackgroundService(abc.ABC):
    """Something a test starts and must stop: ``with Service(...) as service:``."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start (a started service is left as it is); returns the service."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop for good and release everything (safe to call twice)."""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ThreadedTcpServer(BackgroundService):
    """A TCP listener on 127.0.0.1 (port 0) whose connections a subclass answers.

    :meth:`accepted` runs on the accept thread: hand anything long to
    :meth:`spawn`. :meth:`close` stops accepting, shuts down every socket given
    to :meth:`track` (which wakes a thread blocked on it) and joins every
    thread; one that does not stop, or dies of an unexpected exception, is
    listed in :attr:`errors`.
    """

    thread_name = "tcp-server"

    def __init__(self) -> None:
        self.host = HOST
        self.lock = threading.Lock()  # guards this server's state, a subclass's too
        self.stopping = threading.Event()
        self.connections = 0  # accepted so far
        self.errors: list[str] = []  # unexpected exceptions in the server's threads
        self._port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._port

    @abc.abstractmethod
    def accepted(self, conn: socket.socket, index: int) -> None:
        """Answer connection number ``index`` (0 for the first)."""

    def start(self) -> Self:
        if self._listener is None and not self.stopping.is_set():
            listener = socket.create_server((self.host, 0))
            listener.settimeout(_ACCEPT_POLL_S)
            self._listener = listener
            self._port = int(listener.getsockname()[1])
            self._accept_thread = self.spawn(self._accept_loop, name=self.thread_name)
            clean_up_at_exit(self, self.close)
        return self

    def track(self, sock: socket.socket) -> socket.socket:
        """``close()`` shuts this socket down (and so wakes whoever waits on it)."""
        with self.lock:
            self._sockets.append(sock)
        return sock

    def spawn(self, target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
        """Run ``target(*args)`` on a daemon thread that ``close()`` joins."""

        def run() -> None:
            try:
                target(*args)
            except OSError:
                pass  # a socket closed under it: the peer left, or close() ran
            except Exception as exc:  # a broken script or server: report it to the test
                with self.lock:
                    self.errors.append(f"{name}: {exc!r}")

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self.lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        self.stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                # Wakes the accept loop at once (Linux), not at its next poll.
                listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                listener.close()
        if self._accept_thread is not None:
            # Joined first: once it has ended, no new socket or thread appears.
            self._accept_thread.join(timeout=JOIN_TIMEOUT_S)
        with self.lock:
            threads, sockets = list(self._threads), list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in threads:
            if thread is threading.current_thread():
                continue
            thread.join(timeout=JOIN_TIMEOUT_S)
            if thread.is_alive():
                with self.lock:
                    self.errors.append(f"thread {thread.name} did not stop")
        cleaned_up(self)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # close() closed the listener
            with self.lock:
                index = self.connections
                self.connections += 1
            try:
                self.accepted(conn, index)
            except Exception as exc:
                with self.lock:
                    self.errors.append(f"connection {index}: {exc!r}")
                conn.close()


class SocketServerThread(BackgroundService):
    """A ``socketserver`` server (``http.server``, werkzeug) serving on a thread."""

    thread_name = "http-server"

    def __init__(self) -> None:
        self._server: socketserver.TCPServer | None = None
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def make_server(self) -> socketserver.TCPServer:
        """The bound server (127.0.0.1, port 0 unless asked otherwise)."""

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._server is None:
            server = self._server = self.make_server()
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},  # how soon shutdown() is noticed
                name=self.thread_name,
                daemon=True,
            )
            self._thread.start()
            clean_up_at_exit(self, self.close)
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=JOIN_TIMEOUT_S)
        cleaned_up(self)
