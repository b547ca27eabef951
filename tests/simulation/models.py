"""The world the simulation runs the core against: a POP3 server, S3, SQS and a clock.

Nothing here imports ``pop3_ingest``: the models speak POP3 bytes over a real
loopback socket, and S3/SQS through plain methods that raise :class:`ModelFault`.
``harness.py`` alone turns them into the core's ports, so a change to the core's
API touches one file.

Every model records what it did (objects written, pointers sent, messages
removed, faults fired) for the invariants to read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

# -- the clock ----------------------------------------------------------------------


class CompressedClock:
    """Simulated seconds that run ``factor`` times faster than real ones.

    The core measures its own waits with ``time.monotonic()``, so a fake clock
    that jumps would punish it for waits it never made. A compressed one keeps
    every wait consistent (a model's latency of L simulated seconds is a real
    sleep of L / factor) while a run with a deadline "minutes" away costs
    milliseconds.
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.factor

    def to_real(self, sim_seconds: float) -> float:
        return sim_seconds / self.factor

    def sleep(self, sim_seconds: float) -> None:
        if sim_seconds > 0:
            time.sleep(sim_seconds / self.factor)


# -- AWS faults -----------------------------------------------------------------------


class ModelFault(Exception):
    """A model refused a call (the harness turns it into the core's error type)."""


@dataclass
class Latency:
    """Per-call latency that changes after ``switch_after`` calls (mid-run, typically)."""

    before: float = 0.0
    switch_after: int = 0
    after: float = 0.0
    calls: int = 0

    def next_delay(self) -> float:
        self.calls += 1
        return self.before if self.calls <= self.switch_after else self.after


def _selected(key: str, salt: int, scope: Literal["all", "some"]) -> bool:
    """Which calls a fault hits: all, or about half chosen by key (stable across re-runs)."""
    return scope == "all" or zlib.crc32(f"{salt}:{key}".encode()) % 2 == 0


@dataclass
class StoreFaults:
    """S3 calls that fail: which operations, on which keys, and at which point of a stream."""

    ops: frozenset[str] = frozenset()  # put_bytes, put_stream, stored_object
    scope: Literal["all", "some"] = "all"
    salt: int = 0
    # put_stream fails before reading the body, or after reading all of it.
    stream_point: Literal["before", "after"] = "before"

    def hits(self, op: str, key: str) -> bool:
        return op in self.ops and _selected(key, self.salt, self.scope)


@dataclass
class StoredBlob:
    data: bytes
    metadata: dict[str, str]


@dataclass
class WriteAttempt:
    key: str
    sha256: str
    accepted: bool
    same_bytes: bool | None  # refused: did the attempt carry the stored bytes?


class ModelBucket:
    """S3 with ``If-None-Match: *`` on every write: an existing key is never overwritten.

    Records every object ever written and every write attempt.
    """

    def __init__(self, clock: CompressedClock, name: str = "sim-bucket") -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self.objects: dict[str, StoredBlob] = {}
        self.attempts: list[WriteAttempt] = []
        self.latency = Latency()
        self.faults = StoreFaults()
        self.fired: Counter[str] = Counter()

    def _call(self, op: str, key: str, cancelled: Callable[[], bool] | None = None) -> None:
        with self._lock:
            delay = self.latency.next_delay()
        if cancelled is None:
            self._clock.sleep(delay)
        else:
            # An upload that can be given up: it notices within a simulated second.
            while delay > 0:
                if cancelled():
                    self._fire("s3 upload given up by the caller")
                    raise ModelFault(f"S3 upload of {key} aborted by the caller")
                self._clock.sleep(min(delay, 1.0))
                delay -= 1.0
        if self.faults.hits(op, key) and not (
            op == "put_stream" and self.faults.stream_point == "after"
        ):
            self._fire(f"s3 {op} failed")
            raise ModelFault(f"S3 {op} of {key}: 503 SlowDown (simulated)")

    def _fire(self, what: str) -> None:
        with self._lock:
            self.fired[what] += 1

    def put(self, key: str, data: bytes, metadata: dict[str, str], op: str = "put_bytes") -> bool:
        """Conditional write; False (412) when the key exists."""
        self._call(op, key)
        return self._write(key, data, metadata)

    def put_stream(
        self,
        key: str,
        read: Callable[[int], bytes],
        metadata: dict[str, str],
        cancelled: Callable[[], bool] | None = None,
    ) -> bool:
        """A multipart upload: the whole body is read first, the condition checked at the end."""
        self._call("put_stream", key, cancelled)
        parts = []
        while chunk := read(5000):
            parts.append(chunk)
        if self.faults.hits("put_stream", key):
            self._fire("s3 put_stream failed after the body")
            raise ModelFault(f"S3 CompleteMultipartUpload of {key}: 500 (simulated)")
        return self._write(key, b"".join(parts), metadata)

    def _write(self, key: str, data: bytes, metadata: dict[str, str]) -> bool:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            existing = self.objects.get(key)
            if existing is not None:
                self.attempts.append(WriteAttempt(key, digest, False, existing.data == data))
                if existing.data != data:
                    self.fired["s3 412 on other bytes"] += 1
                return False
            self.objects[key] = StoredBlob(data, dict(metadata))
            self.attempts.append(WriteAttempt(key, digest, True, None))
            return True

    def snapshot(self) -> tuple[list[WriteAttempt], dict[str, StoredBlob]]:
        """Attempts and objects as of one moment: an upload the core abandoned at
        its cut-off may still finish in its own thread while the invariants read."""
        with self._lock:
            return list(self.attempts), dict(self.objects)

    def head(self, key: str) -> StoredBlob | None:
        self._call("stored_object", key)
        with self._lock:
            return self.objects.get(key)


# -- SQS ------------------------------------------------------------------------------

# SQS accepts only these characters in a message body.
_SQS_INVALID = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_text_ok(body: str) -> bool:
    return _SQS_INVALID.search(body) is None


@dataclass
class QueueFaults:
    # "call": the whole SendMessageBatch fails; "entry": some entries fail (InternalError).
    mode: Literal["off", "call", "entry"] = "off"
    scope: Literal["all", "some"] = "all"
    salt: int = 0


@dataclass
class Refusal:
    body: str
    code: str


class ModelQueue:
    """SQS's SendMessageBatch, with its character rules; records every body it accepted."""

    def __init__(self, clock: CompressedClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.sent: list[dict[str, Any]] = []
        self.refused: list[Refusal] = []
        self.latency = Latency()
        self.faults = QueueFaults()
        self.fired: Counter[str] = Counter()

    def send_batch(self, bodies: list[str]) -> dict[int, str]:
        """Accept what it can; the indexes it refused, with SQS's error code."""
        with self._lock:
            delay = self.latency.next_delay()
            faults = self.faults
        self._clock.sleep(delay)
        first = bodies[0] if bodies else ""
        if faults.mode == "call" and _selected(first, faults.salt, faults.scope):
            with self._lock:
                self.fired["sqs call failed"] += 1
            raise ModelFault("SQS SendMessageBatch: 500 InternalError (simulated)")
        failed: dict[int, str] = {}
        with self._lock:
            for index, body in enumerate(bodies):
                if not sqs_text_ok(body):
                    failed[index] = "InvalidMessageContents"
                    self.refused.append(Refusal(body, failed[index]))
                    self.fired["sqs refused characters"] += 1
                elif faults.mode == "entry" and _selected(body, faults.salt, faults.scope):
                    failed[index] = "InternalError"
                    self.fired["sqs entry failed"] += 1
                else:
                    self.sent.append(json.loads(body))
        return failed


# -- POP3 -----------------------------------------------------------------------------


@dataclass(eq=False)
class ModelMessage:
    """One delivered message. ``served`` is what a client reads: CRLF lines, final CRLF."""

    ident: int
    content: bytes
    uidl: str
    removed: bool = False

    @property
    def served(self) -> bytes:
        return self.content if self.content.endswith(b"\r\n") else self.content + b"\r\n"

    @property
    def size(self) -> int:
        return len(self.served)


@dataclass
class CutPlan:
    """Close the line ``at_byte`` bytes into the ``answer``-th answer of a session (0: greeting)."""

    answer: int
    fraction: float
    sessions: int  # how many sessions, from now, get cut


@dataclass
class ServerFaults:
    cut: CutPlan | None = None
    lost_quit_answers: int = 0  # sessions whose QUIT commits, then drops the line
    busy_sessions: int = 0  # logins answered -ERR [IN-USE]
    unstable_uidls: bool = False  # UIDLs permuted among the listed messages, per session
    # UIDLs are listing positions ("1", "2", ...): the classic unstable server.
    numbered_uidls: bool = False
    lying_sizes: Literal["truthful", "zero", "smaller", "larger"] = "truthful"
    salt: int = 0

    def any_on(self) -> bool:
        return bool(
            self.cut
            or self.lost_quit_answers
            or self.busy_sessions
            or self.unstable_uidls
            or self.numbered_uidls
            or self.lying_sizes != "truthful"
        )


@dataclass(frozen=True)
class ServerRules:
    """What kind of server this is; fixed for one simulated mailbox."""

    provider: Literal["dovecot", "gmail"] = "dovecot"
    pipelining: bool = True
    uidl: bool = True
    cap: int | None = None  # only the first N messages are offered per session


@dataclass
class Removal:
    message: ModelMessage
    how: str  # "deleted" or "popped"
    proven: bool  # stored and announced when the server let it go


class _LineCut(Exception):
    pass


class Pop3ServerModel:
    """A threaded POP3 server on 127.0.0.1 whose maildrop follows the chosen provider's rules.

    Dovecot (RFC 1939): DELE marks, QUIT commits, a dropped line commits
    nothing. Gmail: at a QUIT, every message retrieved or deleted in the
    session stops being offered. ``on_remove`` is asked, at the moment a
    message stops being offered, whether it was safe to let it go.
    """

    def __init__(self, rules: ServerRules, on_remove: Callable[[ModelMessage], bool]) -> None:
        self.rules = rules
        self.faults = ServerFaults()
        self.messages: list[ModelMessage] = []
        self.removals: list[Removal] = []
        self.fired: Counter[str] = Counter()
        self.sessions = 0
        self._on_remove = on_remove
        self._lock = threading.RLock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name="sim-pop3", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=2)

    def offered(self) -> list[ModelMessage]:
        with self._lock:
            present = [m for m in self.messages if not m.removed]
        return present[: self.rules.cap] if self.rules.cap else present

    def present(self) -> list[ModelMessage]:
        with self._lock:
            return [m for m in self.messages if not m.removed]

    # -- threads --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.append(conn)
                self.sessions += 1
                number = self.sessions
            threading.Thread(
                target=self._serve, args=(conn, number), name=f"sim-pop3-{number}", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            _Session(self, conn, number).run()
        except (_LineCut, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock, contextlib.suppress(ValueError):
                self._conns.remove(conn)

    def commit(self, gone: list[ModelMessage], how: dict[int, str]) -> None:
        with self._lock:
            for message in gone:
                if message.removed:
                    continue
                message.removed = True
                proven = self._on_remove(message)
                self.removals.append(Removal(message, how[message.ident], proven))
                self.fired[f"server {how[message.ident]} a message"] += 1


class _Session:
    """One connection: reads command lines (pipelined or not) and answers in order."""

    def __init__(self, server: Pop3ServerModel, conn: socket.socket, number: int) -> None:
        self.server = server
        self.conn = conn
        self.number = number
        self.reader = conn.makefile("rb")
        self.answers = 0
        with server._lock:
            self.faults = ServerFaults(**vars(server.faults))
            cut = server.faults.cut
            if cut is not None:
                cut.sessions -= 1
                if cut.sessions <= 0:
                    server.faults.cut = None
            if server.faults.lost_quit_answers:
                server.faults.lost_quit_answers -= 1
            if server.faults.busy_sessions:
                server.faults.busy_sessions -= 1
        self.listed: list[tuple[ModelMessage, str, int]] = []  # message, UIDL, LIST size
        self.marked: set[int] = set()
        self.retrieved: set[int] = set()
        self.logged_in = False

    def send(self, data: bytes, what: str) -> None:
        cut = self.faults.cut
        index = self.answers
        self.answers += 1
        if cut is not None and index == cut.answer:
            at = min(len(data) - 1, int(cut.fraction * len(data)))
            self.server.fired[f"line cut in {what} answer"] += 1
            if at:
                self.conn.sendall(data[:at])
            raise _LineCut
        self.conn.sendall(data)

    def run(self) -> None:
        self.send(b"+OK sim POP3 ready\r\n", "greeting")
        while True:
            line = self.reader.readline(4096)
            if not line.endswith(b"\n"):
                return  # the client went away: nothing is committed
            words = line.strip().decode("ascii", "replace").split(" ")
            verb, args = words[0].upper(), words[1:]
            if self.command(verb, args):
                return

    def command(self, verb: str, args: list[str]) -> bool:
        """Answer one command; True when the session is over."""
        rules = self.server.rules
        if verb == "CAPA":
            caps = [b"USER", b"RESP-CODES"]
            caps += [b"UIDL"] if rules.uidl else []
            caps += [b"PIPELINING"] if rules.pipelining else []
            body = b"".join(c + b"\r\n" for c in caps)
            self.send(b"+OK capabilities\r\n" + body + b".\r\n", "CAPA")
        elif verb == "USER":
            self.send(b"+OK\r\n", "USER")
        elif verb == "PASS":
            if self.faults.busy_sessions:
                self.server.fired["login answered [IN-USE]"] += 1
                self.send(b"-ERR [IN-USE] mailbox locked by another session\r\n", "PASS")
                return True
            self.logged_in = True
            self._take_listing()
            self.send(b"+OK logged in\r\n", "PASS")
        elif verb == "QUIT":
            return self.quit()
        elif not self.logged_in:
            self.send(b"-ERR log in first\r\n", verb)
        elif verb == "UIDL" and not args:
            if not rules.uidl:
                self.send(b"-ERR UIDL not supported\r\n", "UIDL")
            else:
                body = b"".join(f"{n} {u}\r\n".encode() for n, (_, u, _s) in self._numbered())
                self.send(b"+OK\r\n" + body + b".\r\n", "UIDL")
        elif verb == "LIST" and not args:
            body = b"".join(f"{n} {s}\r\n".encode() for n, (_, _u, s) in self._numbered())
            self.send(b"+OK\r\n" + body + b".\r\n", "LIST")
        elif verb == "STAT":
            self.send(f"+OK {len(self.listed)} 0\r\n".encode(), "STAT")
        elif verb in ("RETR", "DELE"):
            entry = self._entry(args)
            if entry is None:
                self.send(b"-ERR no such message\r\n", verb)
            elif verb == "RETR":
                message = entry[0]
                self.retrieved.add(message.ident)
                answer = f"+OK {message.size} octets\r\n".encode() + _dot_stuff(message.served)
                self.send(answer, "RETR")
            else:
                self.marked.add(entry[0].ident)
                self.send(b"+OK marked\r\n", "DELE")
        elif verb == "RSET":
            self.marked.clear()
            self.send(b"+OK\r\n", "RSET")
        elif verb == "NOOP":
            self.send(b"+OK\r\n", "NOOP")
        else:
            self.send(b"-ERR unknown command\r\n", verb)
        return False

    def quit(self) -> bool:
        if self.logged_in:
            gone = set(self.marked)
            how = dict.fromkeys(self.marked, "deleted")
            if self.server.rules.provider == "gmail":
                # Popped at QUIT: retrieved counts as downloaded, deleted or not.
                for ident in self.retrieved - gone:
                    how[ident] = "popped"
                gone |= self.retrieved
            self.server.commit([m for m, _, _ in self.listed if m.ident in gone], how)
        if self.faults.lost_quit_answers:
            self.server.fired["QUIT answer lost after commit"] += 1
            raise _LineCut
        self.send(b"+OK bye\r\n", "QUIT")
        return True

    def _take_listing(self) -> None:
        offered = self.server.offered()
        uidls = [m.uidl for m in offered]
        if self.faults.numbered_uidls:
            uidls = [str(n) for n in range(1, len(uidls) + 1)]
            self.server.fired["UIDLs are message numbers"] += 1
        elif self.faults.unstable_uidls and len(uidls) > 1:
            # A rotation by a drawn offset: every UIDL moves to another message
            # (a plain shuffle often leaves small listings as they were).
            shift = 1 + random.Random(self.faults.salt * 1000 + self.number).randrange(
                len(uidls) - 1
            )
            uidls = uidls[shift:] + uidls[:shift]
            self.server.fired["UIDLs permuted for a session"] += 1
        for message, uidl in zip(offered, uidls, strict=True):
            self.listed.append((message, uidl, _listed_size(message.size, self.faults)))
        if self.faults.lying_sizes != "truthful" and offered:
            self.server.fired[f"LIST sizes {self.faults.lying_sizes}"] += 1

    def _numbered(self) -> list[tuple[int, tuple[ModelMessage, str, int]]]:
        return [(n, e) for n, e in enumerate(self.listed, start=1) if e[0].ident not in self.marked]

    def _entry(self, args: list[str]) -> tuple[ModelMessage, str, int] | None:
        if len(args) != 1 or not args[0].isdigit():
            return None
        number = int(args[0])
        if not 1 <= number <= len(self.listed):
            return None
        entry = self.listed[number - 1]
        return None if entry[0].ident in self.marked else entry


def _listed_size(size: int, faults: ServerFaults) -> int:
    match faults.lying_sizes:
        case "zero":
            return 0
        case "smaller":
            return size // 3
        case "larger":
            return size * 3 + 1000
    return size


def _dot_stuff(served: bytes) -> bytes:
    lines = served.split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


@dataclass
class World:
    """Everything one simulated mailbox lives in."""

    clock: CompressedClock
    server: Pop3ServerModel
    bucket: ModelBucket
    queue: ModelQueue
    messages: list[ModelMessage] = field(default_factory=list)
