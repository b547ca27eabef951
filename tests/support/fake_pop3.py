"""A scripted fake POP3 server for behaviour a real server will not produce.

Modelled on CPython's ``Lib/test/test_poplib.py`` (a threaded server bound to
port 0 that dispatches ``cmd_<verb>``), but every test writes its own script:

- ``greeting``: any bytes (garbage, ``-ERR ...``), or ``None`` to say nothing;
- ``replies``: per-verb overrides, bytes or a function of the session and the
  argument returning bytes, an iterable of byte chunks (endless answers), or
  ``None`` for the default answer (wrong status lines, answers to other
  commands, out-of-order answers);
- ``faults``: at a protocol step (:data:`STEPS`), ``reset`` the connection
  (RST), ``close`` it (FIN), ``hang`` (never answer) or start to ``drip``
  (one byte per ``drip_interval``), at the n-th time the step comes in the
  first so many connections;
- ``reorder_pipelined``: answer two pipelined commands in reverse order;
- messages with lying LIST sizes, any UIDL bytes (or none), or a RETR answer
  of their own (``wire``: see :func:`endless_lines`, :func:`endless_line`),
  a status line of their own (``retr_status``), or a connection cut part-way
  through their RETR answer (``cut_after``);
- providers' habits: ``gmail`` (a message retrieved in a session that ends
  with QUIT is no longer offered, deleted or not: see ``popped``),
  ``listing_cap`` (each session numbers only the first so many messages),
  ``uidl_for`` (UIDLs computed per session: unstable ones), and
  ``enforce_login_delay`` (a login sooner than that after the previous one is
  refused with ``-ERR [LOGIN-DELAY]``).

The maildrop works as RFC 1939 says: DELE marks, QUIT (in the TRANSACTION
state) deletes what is marked. ``committed`` lists the messages a QUIT
deleted, so a test can check each one was stored first.

Everything is bounded in time: each connection ends after ``time_limit``
seconds whatever it is doing, and ``close()`` (or leaving the ``with`` block)
stops the server, wakes every thread and joins them. Plain TCP only (secret
``tls: "none"``). Nothing here imports ``pop3_ingest``.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NoReturn

from tests.support.background import ThreadedTcpServer

# Where a fault can be injected. A command's step fires when the command
# arrives (before its status line); "UIDL-body" and "LIST-body" after the
# listing's status line, "RETR-body" half-way through the message; "QUIT"
# before the deletions are committed, "QUIT-after-commit" after them (before +OK).
STEPS = (
    "greeting",
    "CAPA",
    "USER",
    "PASS",
    "STAT",
    "UIDL",
    "UIDL-body",
    "LIST",
    "LIST-body",
    "RETR",
    "RETR-body",
    "DELE",
    "QUIT",
    "QUIT-after-commit",
)
ACTIONS = ("reset", "close", "hang", "drip")

DEFAULT_GREETING = b"+OK fake POP3 server ready\r\n"
# Reads wait this long at a time, so time limits and close() are noticed.
_POLL = 0.1


@dataclass(eq=False)
class FakeMessage:
    """One message of the maildrop (compared by identity).

    ``body`` is the exact message (CRLF line endings); the server dot-stuffs it.
    ``uidl`` is what follows ``<n> `` in the UIDL listing: ``None`` sends the
    number alone. ``listed_size`` is what LIST says (default: the true size);
    ``wire`` replaces everything RETR sends after its status line;
    ``retr_status`` replaces the status line itself (``-ERR ...``: refused,
    and then nothing follows). ``cut_after``: the connection is reset after
    that many bytes of the dot-stuffed message, in every session.
    """

    body: bytes
    uidl: bytes | None
    listed_size: int | bytes | None = None
    wire: Callable[[], Iterable[bytes]] | None = None
    retr_status: bytes | None = None
    cut_after: int | None = None

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True)
class Fault:
    step: str
    action: str = "reset"
    nth: int = 1  # the n-th time the step occurs in a connection
    connections: int = 1  # in the first n connections; 0: in every connection

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; one of {STEPS}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {ACTIONS}")


ReplyResult = bytes | Iterable[bytes] | None
Reply = bytes | Callable[["FakeSession", str], ReplyResult]


def dot_stuff(body: bytes) -> bytes:
    """What a server sends for a message (RFC 1939 3), terminator included."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")[:-1] if body else []
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def endless_lines(line: bytes = b"y" * 76) -> Iterator[bytes]:
    """A multi-line answer that never terminates: the same line for ever."""
    chunk = (line + b"\r\n") * max(1, 65536 // (len(line) + 2))
    while True:
        yield chunk


def endless_line(fill: bytes = b"z") -> Iterator[bytes]:
    """One line that never ends."""
    chunk = fill * 65536
    while True:
        yield chunk


class _Hangup(Exception):
    """The session ends here (reset, closed, time limit, server stopping)."""


class FakeSession:
    """One client connection: reads command lines, answers them per the script."""

    def __init__(self, server: FakePop3Server, conn: socket.socket, index: int) -> None:
        self.server = server
        self.conn = conn
        self.index = index  # 0 for the first connection
        self.deadline = time.monotonic() + server.time_limit
        self.dripping = False
        self.state = "AUTHORIZATION"
        self.user: str | None = None
        self.numbered: dict[int, FakeMessage] = {}  # this session's message numbers
        self.marked: set[int] = set()
        self.retrieved: set[int] = set()  # answered +OK to RETR in this session
        self._counts: dict[str, int] = {}
        self._buffer = bytearray()

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        self.step("greeting")
        greeting = self.server.greeting
        if greeting is None:
            self.hang()
        self.send(greeting)
        while True:
            line = self.readline()
            if line is None:
                return
            follower = self._pipelined_line()
            if follower is not None and self.server.reorder_pipelined:
                with self.server.lock:
                    self.server.reordered += 1
                self.handle(follower)
                self.handle(line)
            else:
                if follower is not None:
                    self._buffer[:0] = follower + b"\r\n"
                self.handle(line)

    def handle(self, line: bytes) -> None:
        text = line.decode("utf-8", "surrogateescape")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        self.server.record(self.index, "PASS ***" if verb == "PASS" else text)
        if verb in STEPS:
            self.step(verb)
        reply = self.server.replies.get(verb)
        result: ReplyResult = None
        if callable(reply):
            result = reply(self, arg)
        elif reply is not None:
            result = reply
        if result is None:
            result = self.default(verb, arg)
        self.send_all(result)
        if verb == "QUIT":
            raise _Hangup

    def default(self, verb: str, arg: str) -> ReplyResult:
        """The RFC 1939 answer to a command."""
        handler = getattr(self, f"cmd_{verb.lower()}", None)
        if handler is None:
            return b"-ERR unknown command\r\n"
        result: ReplyResult = handler(arg)
        return result

    # -- faults ----------------------------------------------------------------

    def step(self, name: str) -> None:
        """A protocol step happens: apply the faults scripted for it."""
        count = self._counts[name] = self._counts.get(name, 0) + 1
        for fault in self.server.faults:
            if fault.step != name or fault.nth != count:
                continue
            if fault.connections and self.index >= fault.connections:
                continue
            with self.server.lock:
                self.server.faults_applied.append((self.index, name, fault.action))
            if fault.action == "drip":
                self.dripping = True
            elif fault.action == "hang":
                self.hang()
            elif fault.action == "close":
                self.close()
            else:
                self.reset()

    def reset(self) -> None:
        """Drop the connection with a TCP reset."""
        with contextlib.suppress(OSError):
            self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.state = "CLOSED"
        with contextlib.suppress(OSError):
            self.conn.close()
        raise _Hangup

    def close(self) -> None:
        self.state = "CLOSED"
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.conn.close()
        raise _Hangup

    def hang(self) -> NoReturn:
        """Say nothing until the time limit (or until the server stops)."""
        self.server.stopping.wait(max(0.0, self.deadline - time.monotonic()))
        raise _Hangup

    # -- I/O -----------------------------------------------------------------------

    def _check_time(self) -> None:
        if self.server.stopping.is_set() or time.monotonic() >= self.deadline:
            raise _Hangup

    def send(self, data: bytes) -> None:
        self._check_time()
        # A client busy elsewhere may not read for a while: sends may wait
        # until the time limit (close() wakes them); reads poll (readline).
        self.conn.settimeout(max(0.01, self.deadline - time.monotonic()))
        try:
            if not self.dripping:
                self.conn.sendall(data)
                return
            for i in range(len(data)):
                self.conn.sendall(data[i : i + 1])
                self.server.stopping.wait(self.server.drip_interval)
                self._check_time()
        finally:
            self.conn.settimeout(_POLL)

    def send_all(self, result: ReplyResult) -> None:
        if result is None:
            return
        if isinstance(result, bytes | bytearray):
            self.send(bytes(result))
            return
        for chunk in result:
            self.send(chunk)

    def readline(self) -> bytes | None:
        """One command line without CRLF; None when the client has gone."""
        while b"\n" not in self._buffer:
            self._check_time()
            try:
                data = self.conn.recv(4096)
            except TimeoutError:
                continue
            if not data:
                return None
            self._buffer += data
            if len(self._buffer) > 65536:
                raise _Hangup
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.rstrip(b"\r")

    def _pipelined_line(self) -> bytes | None:
        """A further complete command line that is already waiting, if any."""
        with contextlib.suppress(OSError, ValueError):
            while select.select([self.conn], [], [], 0)[0]:
                data = self.conn.recv(4096)
                if not data:
                    break
                self._buffer += data
        if b"\n" not in self._buffer:
            return None
        if not self.server.pipelining:
            with self.server.lock:
                self.server.pipelining_violations += 1
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.rstrip(b"\r")

    # -- what a session can answer -------------------------------------------------------

    def message(self, arg: str) -> tuple[int, FakeMessage] | None:
        """The unmarked message ``arg`` names in this session, if any."""
        if self.state != "TRANSACTION" or not arg.strip().isdigit():
            return None
        number = int(arg.strip())
        if number in self.marked or number not in self.numbered:
            return None
        return number, self.numbered[number]

    def retr_answer(self, message: FakeMessage) -> Iterator[bytes]:
        """Status line, then the message (or its ``wire``); "RETR-body" fires half-way."""
        if message.retr_status is not None:
            yield message.retr_status
            return
        yield b"+OK %d octets\r\n" % message.size
        if message.wire is not None:
            chunks = iter(message.wire())
            yield from itertools.islice(chunks, 1)
            self.step("RETR-body")
            yield from chunks
            return
        data = dot_stuff(message.body)
        if message.cut_after is not None:
            yield data[: message.cut_after]
            self.reset()
        half = len(data) // 2
        yield data[:half]
        self.step("RETR-body")
        yield data[half:]

    def listing(self, verb: str, arg: str) -> Iterator[bytes]:
        if self.state != "TRANSACTION":
            yield b"-ERR not logged in\r\n"
            return

        def line(number: int, message: FakeMessage) -> bytes:
            if verb == "UIDL":
                uidl_for = self.server.uidl_for
                value = message.uidl if uidl_for is None else uidl_for(self, number, message)
                return b"%d" % number if value is None else b"%d %s" % (number, value)
            size = message.listed_size
            size_text = (
                str(message.size).encode()
                if size is None
                else (size if isinstance(size, bytes) else str(size).encode())
            )
            return b"%d %s" % (number, size_text)

        if arg.strip():
            found = self.message(arg)
            yield b"-ERR no such message\r\n" if found is None else b"+OK " + line(*found) + b"\r\n"
            return
        lines = [
            line(number, message)
            for number, message in self.numbered.items()
            if number not in self.marked
        ]
        yield b"+OK\r\n"
        self.step(f"{verb}-body")
        yield b"".join(item + b"\r\n" for item in lines) + b".\r\n"

    # -- cmd_<verb> (RFC 1939, RFC 2449) --------------------------------------------------

    def cmd_capa(self, arg: str) -> ReplyResult:
        if not self.server.capa:
            return b"-ERR unknown command\r\n"
        names = ["TOP", "UIDL", "USER", "RESP-CODES"]
        if self.server.pipelining:
            names.append("PIPELINING")
        names += self.server.extra_capabilities
        return (
            b"+OK capability list follows\r\n"
            + "".join(f"{name}\r\n" for name in names).encode()
            + b".\r\n"
        )

    def cmd_user(self, arg: str) -> ReplyResult:
        if self.state != "AUTHORIZATION":
            return b"-ERR wrong state\r\n"
        self.user = arg
        return b"+OK\r\n"

    def cmd_pass(self, arg: str) -> ReplyResult:
        if self.state != "AUTHORIZATION" or self.user is None:
            return b"-ERR USER first\r\n"
        if self.user != self.server.user or arg != self.server.password:
            self.user = None
            return b"-ERR [AUTH] invalid user name or password\r\n"
        with self.server.lock:
            delay = self.server.enforce_login_delay
            last = self.server.last_login
            if delay and last is not None and time.monotonic() - last < delay:
                self.server.login_delay_violations += 1
                self.user = None
                return b"-ERR [LOGIN-DELAY] logged in too recently\r\n"
            self.server.last_login = time.monotonic()
            offered = self.server.messages
            if self.server.listing_cap is not None:
                offered = offered[: self.server.listing_cap]
            self.numbered = dict(enumerate(offered, start=1))
            self.server.logins += 1
        self.state = "TRANSACTION"
        return b"+OK logged in\r\n"

    def cmd_stat(self, arg: str) -> ReplyResult:
        if self.state != "TRANSACTION":
            return b"-ERR not logged in\r\n"
        live = [m for n, m in self.numbered.items() if n not in self.marked]
        return b"+OK %d %d\r\n" % (len(live), sum(m.size for m in live))

    def cmd_uidl(self, arg: str) -> ReplyResult:
        return self.listing("UIDL", arg)

    def cmd_list(self, arg: str) -> ReplyResult:
        return self.listing("LIST", arg)

    def cmd_retr(self, arg: str) -> ReplyResult:
        found = self.message(arg)
        if found is None:
            return b"-ERR no such message\r\n"
        if found[1].retr_status is None:
            self.retrieved.add(found[0])
        return self.retr_answer(found[1])

    def cmd_dele(self, arg: str) -> ReplyResult:
        found = self.message(arg)
        if found is None:
            return b"-ERR no such message\r\n"
        self.marked.add(found[0])
        return b"+OK message %d deleted\r\n" % found[0]

    def cmd_rset(self, arg: str) -> ReplyResult:
        self.marked.clear()
        return b"+OK\r\n"

    def cmd_noop(self, arg: str) -> ReplyResult:
        return b"+OK\r\n"

    def cmd_quit(self, arg: str) -> ReplyResult:
        if self.state == "TRANSACTION":
            self.server.commit([self.numbered[n] for n in sorted(self.marked)])
            if self.server.gmail:
                kept = sorted(self.retrieved - self.marked)
                self.server.pop_retrieved([self.numbered[n] for n in kept])
            self.marked.clear()
            self.state = "UPDATE"
            self.step("QUIT-after-commit")
        return b"+OK bye\r\n"


class FakePop3Server(ThreadedTcpServer):
    """``with FakePop3Server(messages, ...) as server:`` then point a client at ``server.port``."""

    thread_name = "fake-pop3"

    def __init__(
        self,
        messages: Iterable[FakeMessage] = (),
        *,
        user: str = "alice",
        password: str = "fake-pw",
        greeting: bytes | None = DEFAULT_GREETING,
        pipelining: bool = True,
        capa: bool = True,
        extra_capabilities: Iterable[str] = (),
        replies: dict[str, Reply] | None = None,
        faults: Iterable[Fault] = (),
        reorder_pipelined: bool = False,
        drip_interval: float = 1.0,
        time_limit: float = 20.0,
        gmail: bool = False,
        listing_cap: int | None = None,
        uidl_for: Callable[[FakeSession, int, FakeMessage], bytes | None] | None = None,
        enforce_login_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.messages: list[FakeMessage] = list(messages)
        self.user = user
        self.password = password
        self.greeting = greeting
        self.pipelining = pipelining
        self.capa = capa
        self.extra_capabilities = list(extra_capabilities)
        self.replies: dict[str, Reply] = {k.upper(): v for k, v in (replies or {}).items()}
        self.faults = list(faults)
        self.reorder_pipelined = reorder_pipelined
        self.drip_interval = drip_interval
        self.time_limit = time_limit
        self.gmail = gmail
        self.listing_cap = listing_cap
        self.uidl_for = uidl_for
        self.enforce_login_delay = enforce_login_delay
        # What happened, for the test to check.
        self.committed: list[FakeMessage] = []  # deleted by a QUIT, in order
        # gmail: retrieved (not deleted) in a session that ended with QUIT,
        # so no longer offered; in order.
        self.popped: list[FakeMessage] = []
        self.last_login: float | None = None  # time.monotonic() of the last login
        self.login_delay_violations = 0
        self.commands: list[tuple[int, str]] = []  # (connection, line), PASS argument hidden
        self.faults_applied: list[tuple[int, str, str]] = []
        self.logins = 0
        self.pipelining_violations = 0
        self.reordered = 0  # pairs of pipelined commands answered in reverse order

    # -- what happened -------------------------------------------------------------

    @property
    def received_pass(self) -> bool:
        """Whether any client sent PASS (credentials) to this server."""
        return "PASS" in self.verbs()

    def verbs(self, connection: int | None = None) -> list[str]:
        with self.lock:
            return [
                line.split(" ", 1)[0].upper()
                for index, line in self.commands
                if connection is None or index == connection
            ]

    # -- what sessions change ------------------------------------------------------

    def record(self, connection: int, line: str) -> None:
        """A command arrived (its PASS argument already hidden)."""
        with self.lock:
            self.commands.append((connection, line))

    def commit(self, marked: list[FakeMessage]) -> None:
        """QUIT in the TRANSACTION state: the marked messages are deleted."""
        with self.lock:
            for message in marked:
                self.messages = [m for m in self.messages if m is not message]
                self.committed.append(message)

    def pop_retrieved(self, retrieved: list[FakeMessage]) -> None:
        """Gmail's habit: retrieved in a session ended by QUIT, no longer offered."""
        with self.lock:
            for message in retrieved:
                self.messages = [m for m in self.messages if m is not message]
                self.popped.append(message)

    # -- connections -----------------------------------------------------------------

    def accepted(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(_POLL)
        # Answers go out in several writes; without this, Nagle's algorithm
        # and delayed ACKs add 40 ms to many of them.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.track(conn)
        self.spawn(self._serve, conn, index, name=f"fake-pop3-{index}")

    def _serve(self, conn: socket.socket, index: int) -> None:
        try:
            FakeSession(self, conn, index).run()
        except _Hangup:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()
