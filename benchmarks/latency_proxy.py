"""A loopback TCP proxy that adds round-trip time without capping throughput.

Every chunk read from one side is written to the other ``rtt/2`` later, in
order. Reading and writing are separate tasks joined by a timestamped queue per
direction, so the delay is a latency, not a serialisation: while one chunk
waits, the next ones are already being read (bounded by ``max_buffer_bytes``
in flight per direction, which only caps throughput above
``max_buffer_bytes / (rtt/2)``, 800 MB/s at 80 ms with the default).

TLS passes through untouched (the proxy sees only bytes), so clients verify
the real server certificate. Bounded: loopback addresses only, at most
``max_connections`` at once, idle connections closed after ``idle_timeout_s``,
and the whole proxy stops by itself after ``max_lifetime_s``.

    with LatencyProxy("127.0.0.1", dovecot_port, rtt_ms=20) as proxy:
        connect to ("127.0.0.1", proxy.port)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from types import TracebackType
from typing import Self

_CHUNK = 256 * 1024


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"latency proxy works on loopback addresses only, not {host!r}")


class LatencyProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        rtt_ms: float,
        *,
        listen_host: str = "127.0.0.1",
        max_connections: int = 32,
        max_buffer_bytes: int = 32 * 1024 * 1024,
        idle_timeout_s: float = 300.0,
        max_lifetime_s: float = 3 * 3600.0,
    ) -> None:
        _require_loopback(target_host)
        _require_loopback(listen_host)
        if rtt_ms < 0:
            raise ValueError("rtt_ms must be >= 0")
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.one_way_s = rtt_ms / 2000.0
        self.max_connections = max_connections
        self.max_buffer_bytes = max_buffer_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.connections_total = 0
        self.bytes_forwarded = 0
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._active = 0

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("proxy not started")
        return self._port

    # -- lifecycle (called from the owning thread) ----------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise RuntimeError("latency proxy did not start")
        if self._error is not None:
            raise RuntimeError(f"latency proxy failed to start: {self._error}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the event loop (proxy thread) ----------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread just ends
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                tasks.add(task)
            try:
                await self._serve(reader, writer)
            except asyncio.CancelledError:
                # Shutting down. Returning (not re-raising) keeps asyncio's stream
                # callback from logging the cancelled task as an error.
                pass
            finally:
                if task is not None:
                    tasks.discard(task)

        server = await asyncio.start_server(on_client, self.listen_host, 0)
        self._port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.max_lifetime_s)
            server.close()
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._active >= self.max_connections:
            client_w.close()
            return
        self._active += 1
        self.connections_total += 1
        server_w: asyncio.StreamWriter | None = None
        pipes: set[asyncio.Task[None]] = set()
        try:
            server_r, connected_w = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=10
            )
            server_w = connected_w
            # The TCP handshake itself also crosses the slow line.
            await asyncio.sleep(2 * self.one_way_s)
            pipes = {
                asyncio.create_task(self._pipe(client_r, connected_w)),
                asyncio.create_task(self._pipe(server_r, client_w)),
            }
            pending = set(pipes)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # One direction ending cleanly is a half-close: the other goes on.
                # One failing (reset, idle) ends both.
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    break
        except (OSError, TimeoutError):
            pass  # could not reach the target: close the client
        finally:
            self._active -= 1
            for task in pipes:
                task.cancel()
            if pipes:
                await asyncio.wait(pipes, timeout=5)
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction: read as fast as allowed, write each chunk when it is due.

        Returns once EOF was forwarded; raises ConnectionError if either side failed.
        """
        loop = asyncio.get_running_loop()
        # (due time, data): b"" is EOF, None is "the reading side failed".
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        in_flight = 0
        room = asyncio.Event()
        room.set()

        async def read_side() -> None:
            nonlocal in_flight
            try:
                while True:
                    while in_flight > self.max_buffer_bytes:
                        room.clear()
                        await room.wait()
                    data = await asyncio.wait_for(reader.read(_CHUNK), timeout=self.idle_timeout_s)
                    in_flight += len(data)
                    queue.put_nowait((loop.time() + self.one_way_s, data))
                    if not data:  # EOF travels with the same delay
                        return
            except (OSError, TimeoutError):
                queue.put_nowait((loop.time(), None))

        reader_task = asyncio.create_task(read_side())
        try:
            while True:
                due, data = await queue.get()
                if data is None:
                    raise ConnectionError("reading side failed or went idle")
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                in_flight -= len(data)
                self.bytes_forwarded += len(data)
                room.set()
        finally:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
