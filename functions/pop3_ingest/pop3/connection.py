"""poplib's POP3 connection with what poplib lacks, in this one module.

poplib connects, reads the greeting, and sends USER/PASS, STLS and QUIT. It
cannot stream a message (``retr`` returns every line in memory), it refuses
lines longer than 2048 bytes leaving the socket out of step, it takes any line
that starts with ``+`` for success, its socket timeout bounds one read rather
than an answer, and it has no AUTH. :class:`Pop3Connection` subclasses it to:

- create the socket (TCP, or implicit TLS as ``POP3_SSL`` does) within the
  run's time left, to the addresses already resolved and checked
  (:mod:`pop3_ingest.netguard`), never to the name looked up again;
- read through one buffered reader whose raw reads keep the current answer's
  clock (:mod:`pop3_ingest.pop3.limits`): RETR streams from it, and pipelined
  answers wait in it for whoever reads them next;
- take ``+OK`` or ``-ERR`` (RFC 1939) as a status line and nothing else: the
  session is then out of step, and is dropped without QUIT so the server
  forgets its DELEs;
- write credentials straight to the socket, never through poplib's
  ``_putline`` (debug prints, ``sys.audit`` hooks);
- read CAPA bounded, once per layer: poplib's ``stls()`` asks for it before
  STLS and gets the answer already read, so STARTTLS sends CAPA, STLS, CAPA.

Listings, RETR, AUTH and the login are built on the public methods here; no
other module touches poplib's private ones.
"""

from __future__ import annotations

import contextlib
import io
import poplib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, cast

from pop3_ingest.errors import ConnectError, ConnectionLost, SessionOutOfStep
from pop3_ingest.netguard import Address, connect_tcp
from pop3_ingest.pop3.limits import READ_BLOCK, AnswerClock, TransferLimits
from pop3_ingest.redaction import Redactor, credential_refusal

# The longest status or listing line we accept (poplib's own limit). Message
# lines (RETR) have no limit.
MAX_LINE = 2048
MAX_CAPA_BYTES = 64 * 1024

Secrets = Callable[[], tuple[str | bytes, ...]]


class LineChannel(Protocol):
    """The line primitives a command poplib lacks (AUTH) is built on."""

    def send_command(self, command: str) -> None:
        """A command as poplib sends its own (debug print, audit hook): never a credential."""
        ...

    def send_line(self, line: bytes) -> None:
        """A line straight to the socket: the way for anything that carries a credential."""
        ...

    def read_line(self) -> bytes:
        """One answer line, without its line ending: a status or a continuation line."""
        ...


class Pop3Connection(poplib.POP3):
    """poplib's client with reads that keep time limits and strict status lines.

    ============================  ===================================================
    ``send_line(s)``              command lines straight to the socket, in one write
    ``send_command``              a command through poplib (debug print, audit hook)
    ``read_line``/``read_status`` one answer line / a status line (``-ERR`` raised)
    ``multiline``                 the rest of a multi-line answer, bounded
    ``reader``                    the buffered socket reader (RETR streams from it)
    ``step``                      one protocol step: its name, its transport failures
    ``capa``, ``stls``            CAPA once per layer; poplib's STLS
    ``user``, ``pass_``, ``quit`` poplib's (PASS written straight to the socket)
    ============================  ===================================================

    Every line is read through :meth:`reader`, whose raw reads follow
    :attr:`clock`: a fresh one per line unless a multi-line answer has set its
    own (:meth:`begin_answer`). :attr:`in_step` turns False, for good, once the
    answers may no longer match the commands.
    """

    # Steps whose answers may echo a credential: never shown (docs/security.md).
    CREDENTIAL_STEPS = frozenset({"login", "USER", "PASS"})

    def __init__(
        self,
        host: str,
        port: int,
        limits: TransferLimits,
        *,
        addresses: Sequence[Address],
        tls_context: ssl.SSLContext | None = None,
        secrets: Secrets = tuple,
    ) -> None:
        """``host`` is the name TLS verifies; ``addresses`` are where it was resolved to
        (and checked): the only ones connected to."""
        self.limits = limits
        self._addresses = tuple(addresses)
        self.label = "greeting"  # what is being read, for error messages
        self.clock = limits.clock(self.label)
        self.in_step = True
        self._answer: AnswerClock | None = None
        self._tls_context = tls_context
        self._secrets = secrets
        self._capabilities: dict[str, list[str]] | None = None
        self._reader: io.BufferedReader | None = None
        self._reader_sock: socket.socket | None = None
        try:
            super().__init__(host, port, timeout=limits.timeout)  # reads the greeting
        except BaseException:
            sock = self.__dict__.get("sock")
            if sock is not None:
                sock.close()
            raise

    def _create_socket(self, timeout: float) -> socket.socket:
        return _open_socket(self.host, self.port, self._addresses, self.limits, self._tls_context)

    # -- reading --------------------------------------------------------------------

    def reader(self) -> io.BufferedReader:
        """The buffered reader over the current socket (a new one after STLS).

        Bytes buffered before STLS are dropped with the old reader, never read
        as if they had come over TLS.
        """
        if self._reader is None or self._reader_sock is not self.sock:
            raw = _TimedSocketReader(self.sock, self)
            self._reader = io.BufferedReader(raw, buffer_size=READ_BLOCK)
            self._reader_sock = self.sock
        return self._reader

    def begin_answer(self, clock: AnswerClock) -> None:
        """Every read until :meth:`end_answer` keeps to ``clock`` (a multi-line answer's)."""
        self._answer = clock
        self.clock = clock

    def end_answer(self) -> None:
        self._answer = None

    def answer_finished(self, clean: bool) -> None:
        """A streamed answer ended: read to its end (``clean``) or given up half-way."""
        self.in_step = clean
        self.end_answer()

    def read_line(self) -> bytes:
        """One answer line, without its line ending (at most :data:`MAX_LINE` bytes)."""
        line, _ = self._getline()
        return line

    def read_status(self) -> bytes:
        """A status line: ``+OK`` returned, ``-ERR`` raised as :class:`poplib.error_proto`."""
        return self._getresp()

    def multiline(self, what: str, max_bytes: int) -> list[bytes]:
        """The lines of a multi-line answer after its status line, dot-unstuffed."""
        self.begin_answer(self.limits.clock(what, size=0))
        try:
            lines: list[bytes] = []
            total = 0
            while True:
                line, octets = self._getline()
                if line == b".":
                    return lines
                total += octets
                if total > max_bytes:
                    raise SessionOutOfStep(f"{what}: more than {max_bytes} bytes and no end")
                lines.append(line[1:] if line.startswith(b".") else line)
        finally:
            self.end_answer()

    def secrets(self) -> tuple[str | bytes, ...]:
        """What no error message may show of this session (see pop3_ingest.redaction)."""
        return self._secrets()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One protocol step: transport failures become ConnectionLost, and out of step."""
        self.label = name
        try:
            yield
        except ConnectionLost:  # ours: closed, too slow, out of step
            self.in_step = False
            raise
        except OSError as exc:
            self.in_step = False
            raise ConnectionLost(f"connection lost at {name}: {exc}") from exc

    # -- writing --------------------------------------------------------------------

    def send_line(self, line: bytes) -> None:
        """Write one command line straight to the socket (no debug print, no audit event)."""
        self.sock.sendall(line + b"\r\n")

    def send_lines(self, lines: Iterable[bytes]) -> None:
        """Write command lines in one go (pipelining); their answers come in order."""
        self.sock.sendall(b"".join(line + b"\r\n" for line in lines))

    def send_command(self, command: str) -> None:
        """A command through poplib's ``_putcmd``, as poplib sends its own: never a credential."""
        cast(Any, self)._putcmd(command)

    # -- poplib's line primitives, replaced -------------------------------------------

    def _getline(self) -> tuple[bytes, int]:
        if self._answer is None:
            self.clock = self.limits.clock(self.label)
        line = self.reader().readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise SessionOutOfStep(f"{self.label}: a response line longer than {MAX_LINE} bytes")
        if not line.endswith(b"\n"):
            where = " in the middle of a line" if line else ""
            raise ConnectionLost(f"{self.label}: the server closed the connection{where}")
        return (line[:-2] if line.endswith(b"\r\n") else line[:-1]), len(line)

    def _getresp(self) -> bytes:
        line, _ = self._getline()
        if line.startswith(b"+OK"):
            return line
        if self.label in self.CREDENTIAL_STEPS:
            raise _credential_answer_error(self.label, line)
        raise _status_error(self.label, line, Redactor(self.secrets()))

    # -- commands -------------------------------------------------------------------

    def pass_(self, pswd: str) -> bytes:
        """PASS written straight to the socket: poplib's own would pass the line to
        ``sys.audit`` hooks and debug prints."""
        self.send_line(b"PASS " + pswd.encode(self.encoding))
        return self._getresp()

    def capa(self) -> dict[str, list[str]]:
        """RFC 2449 CAPA, bounded; names upper-cased, any bytes tolerated.

        Read once per layer: asked again before STLS (poplib's ``stls()``
        does), it answers with what was read. ``-ERR`` is raised, as poplib's
        ``capa()`` does.
        """
        if self._capabilities is None:
            self.send_line(b"CAPA")
            self._getresp()
            self._capabilities = _capabilities(self.multiline("CAPA", MAX_CAPA_BYTES))
        return dict(self._capabilities)

    def stls(self, context: ssl.SSLContext | None = None) -> bytes:
        """poplib's STLS; the capabilities are read afresh once TLS is up (RFC 2595)."""
        try:
            return super().stls(context)
        finally:
            self._capabilities = None


class _TimedSocketReader(io.RawIOBase):
    """Raw reads from the connection's socket, each bounded by the current answer's clock."""

    def __init__(self, sock: socket.socket, connection: Pop3Connection) -> None:
        self._sock = sock
        self._connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        clock = self._connection.clock
        per_read = self._connection.limits.timeout
        left = clock.deadline() - time.monotonic()
        if left <= 0:
            raise clock.expired()
        wait = min(per_read, left)
        if wait != per_read:
            self._sock.settimeout(wait)
        try:
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            if wait != per_read:
                raise clock.expired() from None
            raise
        finally:
            if wait != per_read:
                with contextlib.suppress(OSError):
                    self._sock.settimeout(per_read)
        clock.received += count
        return count


def line_channel(client: poplib.POP3) -> LineChannel:
    """The line primitives of a poplib client: a :class:`Pop3Connection`'s own, or those
    of any other ``poplib.POP3`` (the integration tests log in with one)."""
    return client if isinstance(client, Pop3Connection) else _PoplibLines(client)


class _PoplibLines:
    """:class:`LineChannel` over a plain ``poplib.POP3``, through its own primitives."""

    def __init__(self, client: poplib.POP3) -> None:
        self._client = cast(Any, client)

    def send_command(self, command: str) -> None:
        self._client._putcmd(command)

    def send_line(self, line: bytes) -> None:
        self._client.sock.sendall(line + b"\r\n")

    def read_line(self) -> bytes:
        line, _ = self._client._getline()
        return cast(bytes, line)


def refusal_text(exc: poplib.error_proto, secrets: Iterable[str | bytes]) -> str:
    """A refused command's server text (never an answer to a credential) for an error
    message: every run of a secret masked, printable, bounded (pop3_ingest.redaction)."""
    raw = exc.args[0] if exc.args else b""
    data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace")
    return Redactor(secrets).mask(data, limit=200)


def _open_socket(
    host: str,
    port: int,
    addresses: Sequence[Address],
    limits: TransferLimits,
    tls_context: ssl.SSLContext | None,
) -> socket.socket:
    """TCP connect to ``addresses`` and TLS handshake with ``host`` (the name the
    certificate must carry), each within the run's time left; the greeting is read
    next, under a clock that keeps to it as well."""
    where = f"{host}:{port}"
    with _cut_off(limits, where, "connecting to") as wait:
        sock = connect_tcp(addresses, wait)
    try:
        # Pipelined commands are small writes; without this, Nagle's algorithm
        # holds each one back for a round trip, and the window drains.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_context is not None:
            with _cut_off(limits, where, "TLS handshake with") as wait:
                sock.settimeout(wait)
                sock = tls_context.wrap_socket(sock, server_hostname=host)
        sock.settimeout(limits.timeout)  # each read's own limit from here (_TimedSocketReader)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _cut_off(limits: TransferLimits, where: str, step: str) -> Iterator[float]:
    """The wait for one connect step; a timeout caused by the run's cut-off says so."""
    wait = limits.connect_wait(where)
    try:
        yield wait
    except TimeoutError as exc:
        if wait < limits.connect_limit:
            raise ConnectError(f"{step} {where}: cut off, the run is out of time") from exc
        raise


def _credential_answer_error(label: str, line: bytes) -> Exception:
    """The answer to a credential may echo it, whole or cut: only its code is kept."""
    if line.startswith(b"-ERR"):
        return poplib.error_proto(credential_refusal(line))
    return SessionOutOfStep(
        f"{label}: expected +OK or -ERR, the server sent something else "
        "(not shown: it answered a credential)"
    )


def _status_error(label: str, line: bytes, redactor: Redactor) -> Exception:
    """``-ERR`` as poplib raises it; anything else means the answers no longer match
    our commands."""
    if line.startswith(b"-ERR"):
        return poplib.error_proto(redactor.mask_status_line(line))
    return SessionOutOfStep(
        f"{label}: expected +OK or -ERR, the server sent {redactor.mask(line, 120)!r}"
    )


def _capabilities(lines: list[bytes]) -> dict[str, list[str]]:
    capabilities: dict[str, list[str]] = {}
    for line in lines:
        words = line.decode("ascii", "replace").split()
        if words:
            capabilities[words[0].upper()] = words[1:]
    return capabilities
