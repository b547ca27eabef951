"""Child process: the line's limit (a), a bare pipelined POP3 download with no S3.

Logs in with :mod:`poplib` (implicit TLS, the same CA as every contender),
then works on poplib's socket directly: RETR and DELE for many messages are
sent ahead (RFC 2449 PIPELINING, a window bounded in messages and listed
bytes) while the responses are read in one loop and thrown away, only
counted. QUIT commits the deletes, so the mailbox ends empty like after the
other contenders.

Nothing here does per-message work beyond finding the end of each response,
so the rate it reaches is what Dovecot, TLS and the line give.
"""

from __future__ import annotations

import argparse
import json
import os
import poplib
import ssl
import sys
import time
from collections import deque
from pathlib import Path

_TERMINATOR = b"\r\n.\r\n"
_RECV = 1024 * 1024


class ResponseCounter:
    """Consumes a stream of POP3 responses in order, keeping at most a few bytes."""

    def __init__(self) -> None:
        self.expected: deque[bool] = deque()  # True: multi-line (RETR); False: one line
        self.completed = 0
        self.body_bytes = 0
        self.errors: list[str] = []
        self._buffer = b""
        self._in_body = False

    def feed(self, data: bytes) -> None:
        buf = self._buffer + data
        pos = 0
        while True:
            if self._in_body:
                # pos sits on the CRLF that ended the status line (or on a kept tail),
                # so an empty body ("+OK\r\n.\r\n") matches as well.
                end = buf.find(_TERMINATOR, pos)
                if end < 0:
                    keep = max(len(buf) - len(_TERMINATOR) + 1, pos)
                    self.body_bytes += keep - pos
                    self._buffer = buf[keep:]
                    return
                self.body_bytes += end - pos
                pos = end + len(_TERMINATOR)
                self._in_body = False
                self.completed += 1
                continue
            if not self.expected:
                if pos < len(buf):
                    raise ValueError(f"unexpected data from server: {buf[pos : pos + 80]!r}")
                self._buffer = b""
                return
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                self._buffer = buf[pos:]
                return
            status = buf[pos:eol]
            multi = self.expected.popleft()
            if not status.startswith(b"+OK"):
                self.errors.append(status[:200].decode("ascii", "replace"))
                multi = False  # an -ERR has no body
            if multi:
                self._in_body = True
                pos = eol
            else:
                pos = eol + 2
                self.completed += 1


def download(
    host: str,
    port: int,
    user: str,
    password: str,
    ca_file: str,
    *,
    window: int,
    window_bytes: int,
    delete: bool,
    timeout: float,
) -> dict[str, object]:
    context = ssl.create_default_context(cafile=ca_file)
    started = time.monotonic()
    client = poplib.POP3_SSL(host, port, context=context, timeout=timeout)
    client.user(user)
    client.pass_(password)
    _, listing, _ = client.list()
    sizes = [int(line.split()[1]) for line in listing]
    sock = client.sock
    counter = ResponseCounter()
    per_message = 2 if delete else 1
    sent = 0  # messages whose commands are out
    in_flight: deque[int] = deque()  # listed sizes of the messages awaited, oldest first
    in_flight_bytes = 0
    while counter.completed < len(sizes) * per_message:
        batch: list[bytes] = []
        # Refill the window: bounded in messages and in bytes awaited.
        while sent < len(sizes) and len(in_flight) < window:
            if in_flight and in_flight_bytes + sizes[sent] > window_bytes:
                break
            number = sent + 1
            batch.append(b"RETR %d\r\n" % number)
            counter.expected.append(True)
            if delete:
                batch.append(b"DELE %d\r\n" % number)
                counter.expected.append(False)
            in_flight.append(sizes[sent])
            in_flight_bytes += sizes[sent]
            sent += 1
        if batch:
            sock.sendall(b"".join(batch))
        data = sock.recv(_RECV)
        if not data:
            raise ConnectionError("server closed the connection")
        counter.feed(data)
        done_messages = counter.completed // per_message
        while len(in_flight) > sent - done_messages:
            in_flight_bytes -= in_flight.popleft()
    client.quit()
    return {
        "messages": len(sizes),
        "bytes": counter.body_bytes,
        "work_s": time.monotonic() - started,
        "errors": counter.errors[:10],
        "window": window,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--window", type=int, default=256, help="messages in flight")
    parser.add_argument("--window-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--keep", action="store_true", help="no DELE")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    password = os.environ["BENCH_POP3_PASSWORD"]  # not on the command line (ps)
    result = download(
        args.host,
        args.port,
        args.user,
        password,
        args.ca_file,
        window=args.window,
        window_bytes=args.window_bytes,
        delete=not args.keep,
        timeout=args.timeout,
    )
    args.result.write_text(json.dumps(result))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
