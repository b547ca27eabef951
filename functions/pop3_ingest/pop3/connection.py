"""A POP3 session built on :mod:`poplib`, with the pieces poplib lacks.

poplib gives us connection set-up, TLS and the short commands. It cannot
stream a message (``retr`` returns every line in memory), it refuses lines
longer than 2048 bytes leaving the socket out of step, it takes any line that
starts with ``+`` for success, and its socket timeout bounds one read, not an
answer: a server that sends a byte a second keeps it waiting for ever. So here:

- every answer has a time limit as a whole (:class:`_Clock`): a command's
  answer POP3_TIMEOUT_SECONDS, a message or listing
  max(POP3_TIMEOUT_SECONDS, size / MIN_TRANSFER_BYTES_PER_SECOND);
- a status line is ``+OK`` or ``-ERR`` (RFC 1939) or the session is out of
  step: it is then dropped without QUIT, so the server forgets its DELEs;
- listings are bounded, parsed line by line, and a message without a usable
  UIDL (empty, or shared with another message) is left out and left alone;
- RETR is read straight from the socket, one bounded block at a time, without
  any line-length limit and never past ``allowed_size(LIST size)``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import poplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from pop3_ingest.config import DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND, MailboxConfig, TlsMode
from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    MessageTooLarge,
    Pop3Error,
    ProtocolError,
    SessionOutOfStep,
    TlsError,
    TransferTooSlow,
)
from pop3_ingest.integrations.oauth_tokens import TokenProvider
from pop3_ingest.pop3.auth import (
    SaslRejected,
    auth_plain,
    auth_xoauth2,
    plain_response,
    supported_mechanisms,
    xoauth2_response,
)
from pop3_ingest.redaction import Redactor, credential_refusal, printable

logger = logging.getLogger(__name__)

BUSY_CODES = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP"})
_RESP_CODE = re.compile(rb"^-ERR \[([A-Za-z0-9/\-]+)\]")
# One read from the socket; also the most a single over-long line can cost us.
_CHUNK = 64 * 1024
# The longest status or listing line we accept (poplib's own limit). Message
# lines (RETR) have no limit.
MAX_LINE = 2048
# A listing that never ends is cut here: about 400,000 messages' UIDLs.
MAX_LISTING_BYTES = 32 * 1024 * 1024
MAX_CAPA_BYTES = 64 * 1024
# RFC 2449 LOGIN-DELAY is honoured up to a day; a server asking for more is
# capped rather than able to switch the mailbox off.
MAX_LOGIN_DELAY = 24 * 3600
_SKIPS_LOGGED = 20
# What an answer's first line looks like; no message starts so.
STATUS_LINE = re.compile(rb"(\+OK|-ERR)( |\r?\n|$)")
# "<message number>[ <text>]" (RFC 1939 scan and unique-id listings).
_NUMBERED = re.compile(rb"(\d{1,10})(?:[ \t]+(.*))?", re.DOTALL)


@dataclass(frozen=True)
class SkippedMessage:
    """A listed message left alone because it cannot be identified safely."""

    number: int
    reason: str


def response_code(response: bytes) -> str | None:
    """The RFC 2449 code in ``-ERR [CODE] text``, upper-cased, if any."""
    match = _RESP_CODE.match(response)
    return match.group(1).decode("ascii").upper() if match else None


def allowed_size(listed_size: int) -> int:
    """How far a message may outgrow its LIST size before we stop reading.

    Servers count octets differently (LF vs CRLF), so some slack is fair; an
    unbounded stream is not.
    """
    return listed_size + listed_size // 4 + 1024 * 1024


# -- time limits ------------------------------------------------------------------


class _Clock:
    """How long the answer being read may take, as a whole.

    ``timeout`` alone for a command's answer; with ``min_rate`` the allowance
    grows with the size, ``max(timeout, max(expected, received) / min_rate)``,
    for messages and listings. ``stop_at`` (a ``time.monotonic()`` value) cuts
    any answer off when the run's own time is up.
    """

    def __init__(
        self,
        what: str,
        timeout: float,
        *,
        min_rate: float = 0.0,
        expected: int = 0,
        stop_at: float | None = None,
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.min_rate = min_rate
        self.expected = expected
        self.stop_at = stop_at
        self.started = time.monotonic()
        self.received = 0

    def _limit(self) -> float:
        allowance = self.timeout
        if self.min_rate > 0:
            allowance = max(allowance, max(self.expected, self.received) / self.min_rate)
        return self.started + allowance

    def deadline(self) -> float:
        limit = self._limit()
        return limit if self.stop_at is None else min(limit, self.stop_at)

    def expired(self) -> TransferTooSlow:
        elapsed = time.monotonic() - self.started
        if self.stop_at is not None and self.stop_at < self._limit():
            return TransferTooSlow(
                f"{self.what}: cut off, the run is out of time "
                f"({self.received} bytes in {elapsed:.1f} s)"
            )
        if self.min_rate > 0:
            return TransferTooSlow(
                f"{self.what}: server too slow, {self.received} bytes in {elapsed:.1f} s "
                f"(allowed: POP3_TIMEOUT_SECONDS={self.timeout:g} s, or longer at "
                f"MIN_TRANSFER_BYTES_PER_SECOND={self.min_rate:g})"
            )
        return TransferTooSlow(
            f"{self.what}: no complete answer within POP3_TIMEOUT_SECONDS={self.timeout:g} s "
            f"({self.received} bytes)"
        )


@dataclass(frozen=True)
class TransferLimits:
    """The time limits of one session (see :class:`_Clock`)."""

    timeout: float
    min_rate: float = DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND
    # Seconds left before reads must give up whatever they are reading.
    time_left: Callable[[], float] | None = None

    def clock(self, what: str, *, size: int | None = None) -> _Clock:
        """A command's answer (``size`` None) or a message/listing of ``size`` bytes."""
        stop_at = None if self.time_left is None else time.monotonic() + self.time_left()
        if size is None:
            return _Clock(what, self.timeout, stop_at=stop_at)
        return _Clock(what, self.timeout, min_rate=self.min_rate, expected=size, stop_at=stop_at)


class _TimedSocketReader(io.RawIOBase):
    """Raw reads from the client's socket, each bounded by the current answer's clock."""

    def __init__(self, sock: socket.socket, client: _Client) -> None:
        self._sock = sock
        self._client = client

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        clock = self._client.clock
        per_read = self._client.limits.timeout
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


class _Client(poplib.POP3):
    """poplib's client with reads that keep time limits and strict status lines.

    Plain TCP, or implicit TLS when given a context (what ``POP3_SSL`` does).
    Every line and every RETR block is read through :meth:`reader`, whose raw
    reads follow :attr:`clock`: a fresh one per line unless a multi-line answer
    has set its own (:meth:`begin_answer`).
    """

    # Steps whose answers may echo a credential: never shown (docs/security.md).
    CREDENTIAL_STEPS = frozenset({"login", "USER", "PASS"})

    def __init__(
        self,
        host: str,
        port: int,
        limits: TransferLimits,
        *,
        tls_context: ssl.SSLContext | None = None,
        secrets: Callable[[], tuple[bytes, ...]] = tuple,
    ) -> None:
        self.limits = limits
        self.label = "greeting"  # what is being read, for error messages
        self.clock = limits.clock(self.label)
        self._answer: _Clock | None = None
        self._tls_context = tls_context
        self._secrets = secrets
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
        """TCP connect and TLS handshake, each within the run's time left; the greeting
        is read next, under a clock that keeps to it as well."""
        where = f"{self.host}:{self.port}"
        with self._cut_off(timeout, where, "connecting to") as wait:
            sock = socket.create_connection((self.host, self.port), wait)
        try:
            if self._tls_context is not None:
                with self._cut_off(timeout, where, "TLS handshake with") as wait:
                    sock.settimeout(wait)
                    sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(timeout)  # each read's own limit from here (_TimedSocketReader)
        except BaseException:
            sock.close()
            raise
        return sock

    @contextlib.contextmanager
    def _cut_off(self, timeout: float, where: str, step: str) -> Iterator[float]:
        """The wait for one connect step; a timeout caused by the run's cut-off says so."""
        wait = self._connect_wait(timeout, where)
        try:
            yield wait
        except TimeoutError as exc:
            if wait < timeout:
                raise ConnectError(f"{step} {where}: cut off, the run is out of time") from exc
            raise

    def _connect_wait(self, timeout: float, where: str) -> float:
        """How long the next connect step may take: the timeout, or less if the run ends first."""
        if self.limits.time_left is None:
            return timeout
        left = self.limits.time_left()
        if left <= 0:
            raise ConnectError(f"no time left to connect to {where}: the run's cut-off is reached")
        return min(timeout, left)

    def reader(self) -> io.BufferedReader:
        """The buffered reader over the current socket (a new one after STLS).

        Bytes buffered before STLS are dropped with the old reader, never read
        as if they had come over TLS.
        """
        if self._reader is None or self._reader_sock is not self.sock:
            raw = _TimedSocketReader(self.sock, self)
            self._reader = io.BufferedReader(raw, buffer_size=_CHUNK)
            self._reader_sock = self.sock
        return self._reader

    def begin_answer(self, clock: _Clock) -> None:
        self._answer = clock
        self.clock = clock

    def end_answer(self) -> None:
        self._answer = None

    def secrets(self) -> tuple[bytes, ...]:
        return self._secrets()

    def send_line(self, line: bytes) -> None:
        """Write one command line straight to the socket (no debug print, no audit event)."""
        self.sock.sendall(line + b"\r\n")

    # poplib's line primitives, replaced ------------------------------------------

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
        """A status line: ``+OK`` returned, ``-ERR`` raised as poplib does, anything else
        means the answers no longer match our commands."""
        line, _ = self._getline()
        if line.startswith(b"+OK"):
            return line
        if self.label in self.CREDENTIAL_STEPS:
            # The answer to a credential may echo it, whole or cut: only its code is kept.
            if line.startswith(b"-ERR"):
                raise poplib.error_proto(credential_refusal(line))
            raise SessionOutOfStep(
                f"{self.label}: expected +OK or -ERR, the server sent something else "
                "(not shown: it answered a credential)"
            )
        redactor = Redactor(self.secrets())
        if line.startswith(b"-ERR"):
            raise poplib.error_proto(redactor.mask_status_line(line))
        raise SessionOutOfStep(
            f"{self.label}: expected +OK or -ERR, the server sent {redactor.mask(line, 120)!r}"
        )

    def pass_(self, pswd: str) -> bytes:
        """PASS written straight to the socket: poplib's own would pass the line to
        ``sys.audit`` hooks and debug prints."""
        self.send_line(b"PASS " + pswd.encode(self.encoding))
        return self._getresp()

    def capa(self) -> dict[str, list[str]]:
        """RFC 2449 CAPA, bounded; names upper-cased, any bytes tolerated."""
        self.send_line(b"CAPA")
        self._getresp()  # -ERR: raised, as poplib's capa() does
        capabilities: dict[str, list[str]] = {}
        for line in self.multiline("CAPA", MAX_CAPA_BYTES):
            words = line.decode("ascii", "replace").split()
            if words:
                capabilities[words[0].upper()] = words[1:]
        return capabilities

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


# -- RETR ---------------------------------------------------------------------------


class PeekableSource(Protocol):
    """What RetrStream reads from: a buffered reader (the client's socket reader)."""

    def peek(self, size: int = 0, /) -> bytes: ...

    def read(self, size: int = -1, /) -> bytes: ...


class RetrStream:
    """File-like reader over one multi-line RETR response.

    Yields the message's exact bytes: the terminating ``.`` line removed,
    dot-stuffing undone, every line ending CRLF. Reads are exact (``read(n)``
    returns n bytes unless the message ends), as boto3's managed upload of a
    non-seekable stream expects.

    Decoding works on whole buffered blocks with ``bytes`` operations rather
    than line by line, and consumes exactly up to the terminator, so the next
    pipelined response stays in the buffer for whoever reads it.
    """

    def __init__(
        self,
        source: PeekableSource,
        max_bytes: int,
        on_finish: Callable[[bool], None],
        *,
        exact: bool = False,
    ) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._on_finish = on_finish
        # Exactly max_bytes must arrive (see Pop3Mailbox.read_retr).
        self._exact = exact
        self._pending = bytearray()
        self._carry = bytearray()  # a line whose end has not arrived yet
        self._at_line_start = True
        self._done = False
        self.bytes_out = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            self._pull()
        if size < 0 or size >= len(self._pending):
            out = bytes(self._pending)
            self._pending.clear()
        else:
            out = bytes(self._pending[:size])
            del self._pending[:size]
        return out

    def read_all(self) -> bytes:
        return self.read(-1)

    def drain(self) -> None:
        """Consume the rest of the response so the session stays usable."""
        while not self._done:
            self._pull()
            self._pending.clear()

    @property
    def finished(self) -> bool:
        return self._done

    def _pull(self) -> None:
        try:
            block = self._source.peek(_CHUNK)
        except Pop3Error:  # too slow (the clock ran out)
            self._fail()
            raise
        except (OSError, ValueError) as exc:
            self._fail()
            raise ConnectionLost(f"connection lost during RETR: {exc}") from exc
        if not block:
            self._fail()
            raise ConnectionLost("server closed the connection in the middle of RETR")
        last_lf = block.rfind(b"\n")
        if last_lf < 0:
            self._consume(len(block))
            self._carry += block
            if len(self._carry) > _CHUNK:
                self._flush_partial_line()
            return
        lines = bytes(self._carry) + block[: last_lf + 1]
        carried = len(self._carry)
        self._carry.clear()
        end, after = self._find_terminator(lines)
        if end < 0:
            self._consume(last_lf + 1)
            self._emit(lines, self._at_line_start)
            self._at_line_start = True
            return
        self._consume(after - carried)
        self._emit(lines[:end], self._at_line_start)
        if self._exact and self.bytes_out != self._max_bytes:
            self._fail()
            raise SessionOutOfStep(
                f"message of {self.bytes_out} bytes where exactly {self._max_bytes} were listed"
            )
        self._done = True
        self._on_finish(True)

    def _find_terminator(self, lines: bytes) -> tuple[int, int]:
        """Start of the lone-dot line and the index just past it, or (-1, -1)."""
        if self._at_line_start:
            for term in (b".\r\n", b".\n"):
                if lines.startswith(term):
                    return 0, len(term)
        best = (-1, -1)
        for term in (b"\n.\r\n", b"\n.\n"):
            i = lines.find(term)
            if i >= 0 and (best[0] < 0 or i + 1 < best[0]):
                best = (i + 1, i + len(term))
        return best

    def _flush_partial_line(self) -> None:
        # A line longer than a buffer: pass its start on. Keep a trailing CR
        # back so a CRLF split across blocks is not mistaken for a bare LF.
        keep = 1 if self._carry.endswith(b"\r") else 0
        part = bytes(self._carry[: len(self._carry) - keep])
        del self._carry[: len(part)]
        self._emit(part, self._at_line_start)
        self._at_line_start = False

    def _emit(self, data: bytes, starts_line: bool) -> None:
        if starts_line and data.startswith(b"."):
            data = data[1:]
        data = data.replace(b"\n.", b"\n")  # undo dot-stuffing
        if data.count(b"\n") != data.count(b"\r\n"):
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.bytes_out += len(data)
        if self.bytes_out > self._max_bytes:
            self._fail()
            raise MessageTooLarge(
                f"message exceeded {self._max_bytes} bytes, more than its listed size allows"
            )
        self._pending += data

    def _consume(self, count: int) -> None:
        try:
            self._source.read(count)
        except Pop3Error:
            self._fail()
            raise
        except (OSError, ValueError) as exc:
            self._fail()
            raise ConnectionLost(f"connection lost during RETR: {exc}") from exc

    def _fail(self) -> None:
        self._done = True
        self._pending.clear()
        self._carry.clear()
        self._on_finish(False)


# -- the session ----------------------------------------------------------------------


class Pop3Mailbox:
    """A logged-in POP3 session; leaving the ``with`` block ends it.

    On a clean exit, or an error that left the session in step, QUIT commits
    the DELEs sent so far (each of them only after its message was stored and
    announced). If the session is out of step, the socket is just closed and
    the server forgets every DELE, which is safe.
    """

    def __init__(
        self,
        config: MailboxConfig,
        timeout: float,
        *,
        min_bytes_per_second: float = DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND,
        time_left: Callable[[], float] | None = None,
    ) -> None:
        self._config = config
        self._limits = TransferLimits(timeout, min_bytes_per_second, time_left)
        self._client: _Client | None = None
        self._in_sync = False
        # Empty until the OAuth2 access token of this session is fetched.
        self._token = ""  # nosec B105
        self.capabilities: dict[str, list[str]] = {}
        self.quit_ok: bool | None = None
        # Listed messages left alone by the last list_messages() (no usable UIDL).
        self.skipped: list[SkippedMessage] = []

    # -- session life cycle -------------------------------------------------

    def __enter__(self) -> Pop3Mailbox:
        self._client = self._connect()
        # Pipelined commands are small writes; without this, Nagle's algorithm
        # holds each one back for a round trip, and the window drains.
        with contextlib.suppress(OSError):
            self._client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._secure_and_login(self._client)
        except BaseException:
            self._close_quietly()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is None:
            return
        if self._in_sync:
            try:
                self.quit()
            except Pop3Error as error:
                logger.error(
                    "QUIT failed; this session's deletions may not be committed",
                    extra={"error": str(error)},
                )
                self._close_quietly()
        else:
            self._close_quietly()

    def abandon(self) -> None:
        """Close without QUIT: the server forgets this session's DELEs (RFC 1939)."""
        self.quit_ok = False
        self._close_quietly()

    def quit(self) -> None:
        client = self._require_client()
        client.label = "QUIT"
        try:
            client.quit()  # closes the connection after +OK
            self.quit_ok = True
        except poplib.error_proto as exc:
            self.quit_ok = False
            raise ProtocolError(
                f"QUIT refused, deletions not committed: {self._text(exc)}"
            ) from exc
        except ConnectionLost:
            # Whether the server committed is unknown: count nothing as deleted.
            self.quit_ok = False
            raise
        except OSError as exc:
            self.quit_ok = False
            raise ConnectionLost(f"connection lost at QUIT: {exc}") from exc
        finally:
            self._in_sync = False
            self._client = None
            if not self.quit_ok:
                with contextlib.suppress(OSError):
                    client.close()

    def _connect(self) -> _Client:
        cfg = self._config
        where = f"{cfg.host}:{cfg.port}"
        context = self._tls_context() if cfg.tls is TlsMode.IMPLICIT else None
        try:
            return _Client(
                cfg.host, cfg.port, self._limits, tls_context=context, secrets=self._secret_bytes
            )
        except ssl.SSLCertVerificationError as exc:
            raise TlsError(f"TLS certificate of {where} not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise TlsError(f"TLS handshake with {where} failed: {exc.reason or exc}") from exc
        except poplib.error_proto as exc:
            raise self._greeting_error(exc, where) from exc
        except ConnectionLost as exc:  # no greeting, too slow, or not POP3 at all
            raise ConnectError(f"no usable POP3 greeting from {where}: {exc}") from exc
        except TimeoutError as exc:
            raise ConnectError(f"timed out connecting to {where}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from exc

    def _greeting_error(self, exc: poplib.error_proto, where: str) -> Pop3Error:
        raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
        code = response_code(raw)
        if code in BUSY_CODES:
            return MailboxBusy(f"{where} is busy ({code}): {self._text(exc)}", code)
        return ConnectError(f"{where} refused the session in its greeting: {self._text(exc)}")

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._config.ca_cert:
            try:
                context.load_verify_locations(cadata=self._config.ca_cert)
            except ssl.SSLError as exc:
                raise TlsError(
                    f"ca_cert from the secret is not a usable certificate: {exc}"
                ) from exc
        return context

    def _secure_and_login(self, client: _Client) -> None:
        cfg = self._config
        self._in_sync = True
        self.capabilities = self._capa(client)
        if cfg.tls is TlsMode.STARTTLS:
            if "STLS" not in self.capabilities:
                raise TlsError(
                    f"{cfg.host}:{cfg.port} does not offer STLS; refusing to send "
                    "credentials in clear text (tls is 'starttls')"
                )
            with self._step(client, "STLS"):
                try:
                    client.stls(context=self._tls_context())
                except ssl.SSLCertVerificationError as exc:
                    self._in_sync = False
                    raise TlsError(
                        f"TLS certificate of {cfg.host}:{cfg.port} not trusted: "
                        f"{exc.verify_message}"
                    ) from exc
                except ssl.SSLError as exc:
                    self._in_sync = False
                    raise TlsError(
                        f"STLS handshake with {cfg.host}:{cfg.port} failed: {exc}"
                    ) from exc
                except poplib.error_proto as exc:
                    raise TlsError(f"server refused STLS: {self._text(exc)}") from exc
            # Capabilities may change once TLS is up (RFC 2595).
            self.capabilities = self._capa(client)
        self._login(client)

    def _capa(self, client: _Client) -> dict[str, list[str]]:
        with self._step(client, "CAPA"):
            try:
                return client.capa()
            except poplib.error_proto:
                return {}  # CAPA is optional (RFC 2449); we then assume the basics.

    def _login(self, client: _Client) -> None:
        cfg = self._config
        token_provider = TokenProvider(cfg.oauth) if cfg.oauth is not None else None
        token = ""  # nosec B105
        try:
            with self._step(client, "login"):
                if token_provider is not None:
                    token = self._token = token_provider.token()
                    auth_xoauth2(client, cfg.username, token, two_step=cfg.sasl == "xoauth2")
                elif cfg.sasl == "plain" or (
                    cfg.sasl == "auto"
                    and "PLAIN" in supported_mechanisms(self.capabilities)
                    and "USER" not in self.capabilities
                ):
                    auth_plain(client, cfg.username, cfg.password)
                else:
                    client.label = "USER"
                    client.user(cfg.username)
                    client.label = "PASS"
                    client.pass_(cfg.password)
        except poplib.error_proto as exc:
            if token_provider is not None:
                token_provider.invalidate(token)  # the next attempt fetches a fresh one
            # Only a registered code is kept of the answer (credential_refusal): its
            # text may echo the credential, cut anywhere. "from None" for the same reason.
            raw = credential_refusal(
                exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
            )
            code = response_code(raw)
            if code in BUSY_CODES:
                raise MailboxBusy(
                    f"mailbox {cfg.mailbox} is busy ({code}): the server refused the login for now",
                    code,
                ) from None
            shown = f" [{code}]" if code else ""
            status = exc.status if isinstance(exc, SaslRejected) else None
            if status is not None:
                shown += f" (XOAUTH2 status {status})"
            raise AuthError(
                f"login as {cfg.username!r} at {cfg.host}:{cfg.port} failed:{shown} "
                "the server rejected the credentials",
                code,
            ) from None
        except ValueError as exc:  # credentials that cannot be put on the wire
            why = (
                "the user name or password cannot be sent as UTF-8"
                if isinstance(exc, UnicodeError)
                else str(exc)
            )
            raise AuthError(
                f"login as {cfg.username!r} at {cfg.host}:{cfg.port} impossible: {why}"
            ) from None

    # -- mailbox commands ---------------------------------------------------

    def list_messages(self) -> list[ServerMessage]:
        """Every message that can be fetched safely, with its size, in server order.

        Messages without a unique UIDL are included, marked ``unique=False``.
        The others (see :func:`parse_listing`) are in :attr:`skipped`, logged,
        and left on the server.
        """
        client = self._require_client()
        try:
            uidl_lines: list[bytes] | None = self._listing(client, "UIDL")
        except ProtocolError:
            # RFC 1939 makes UIDL optional: every message is then known by
            # its content digest (see parse_listing).
            logger.warning("server has no UIDL; messages are identified by their content")
            uidl_lines = None
        list_lines = self._listing(client, "LIST")
        try:
            messages, self.skipped = parse_listing(uidl_lines, list_lines, client.secrets())
        except SessionOutOfStep:
            self._in_sync = False
            raise
        for skipped in self.skipped[:_SKIPS_LOGGED]:
            logger.warning(
                "listing entry that cannot be fetched safely left on server",
                extra={"message_number": skipped.number, "reason": skipped.reason},
            )
        if len(self.skipped) > _SKIPS_LOGGED:
            logger.warning(
                "more listing entries that cannot be fetched safely left on server",
                extra={"count": len(self.skipped) - _SKIPS_LOGGED},
            )
        return messages

    def _listing(self, client: _Client, command: str) -> list[bytes]:
        with self._step(client, command):
            try:
                client.send_line(command.encode("ascii"))
                client._getresp()
            except poplib.error_proto as exc:
                # UIDL is optional (its refusal is handled by the caller); LIST is not.
                raise ProtocolError(
                    f"{command} refused ({self._text(exc)}); LIST is required to fetch safely"
                    if command == "LIST"
                    else f"{command} refused ({self._text(exc)})"
                ) from exc
            return client.multiline(f"{command} listing", MAX_LISTING_BYTES)

    @property
    def login_delay(self) -> int:
        """RFC 2449 LOGIN-DELAY: seconds the server wants between logins (0 if none)."""
        values = self.capabilities.get("LOGIN-DELAY", [])
        if not values or not (values[0].isascii() and values[0].isdigit()):
            return 0
        return min(int(values[0]), MAX_LOGIN_DELAY)

    @property
    def pipelining(self) -> bool:
        """RFC 2449: the server lets us send commands before reading answers."""
        return "PIPELINING" in self.capabilities

    def send_commands(self, commands: list[str]) -> None:
        """Write commands in one go; their answers are read in the same order."""
        client = self._require_client()
        data = b"".join(command.encode("ascii") + b"\r\n" for command in commands)
        with self._step(client, "sending commands"):
            client.sock.sendall(data)

    def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> RetrStream:
        """Read the answer to ``RETR``; the caller reads the stream to its end (or drains it).

        The whole message must arrive within
        max(POP3_TIMEOUT_SECONDS, LIST size / MIN_TRANSFER_BYTES_PER_SECOND).

        A message whose first line reads like a status line is taken for an
        answer out of step, unless ``exact_size``: then it is read as mail,
        and the stream fails (out of step after all) unless exactly the LIST
        size arrives, which an answer out of step would not match.
        """
        client = self._require_client()
        what = f"RETR {message.number}"
        with self._step(client, what):
            try:
                client._getresp()
            except poplib.error_proto as exc:
                raise ProtocolError(f"{what} refused: {self._text(exc)}") from exc
        self._in_sync = False  # until the terminating line is read
        client.begin_answer(self._limits.clock(what, size=message.size))
        reader = client.reader()
        with self._step(client, what):
            head = reader.peek(8)[:8]
        if exact_size:
            return RetrStream(reader, message.size, self._retr_finished, exact=True)
        if STATUS_LINE.match(head):
            # An answer too many came before (a stray line, or answers out of
            # order): this "message" would be the next answer. Stop here.
            client.end_answer()
            raise SessionOutOfStep(
                f"{what}: the message starts with a status line "
                f"({printable(head, client.secrets())!r}); answers are out of step"
            )
        return RetrStream(reader, allowed_size(message.size), self._retr_finished)

    def read_dele(self, message: ServerMessage) -> None:
        """Read the answer to ``DELE``."""
        client = self._require_client()
        with self._step(client, f"DELE {message.number}"):
            try:
                client._getresp()
            except poplib.error_proto as exc:
                raise ProtocolError(f"DELE {message.number} refused: {self._text(exc)}") from exc

    def _retr_finished(self, clean: bool) -> None:
        self._in_sync = clean
        if self._client is not None:
            self._client.end_answer()

    @property
    def usable(self) -> bool:
        return self._client is not None and self._in_sync

    # -- helpers ------------------------------------------------------------

    @contextlib.contextmanager
    def _step(self, client: _Client, step: str) -> Iterator[None]:
        """One protocol step: transport failures become ConnectionLost, and out of step."""
        client.label = step
        try:
            yield
        except ConnectionLost:  # ours: closed, too slow, out of step
            self._in_sync = False
            raise
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost at {step}: {exc}") from exc

    def _require_client(self) -> _Client:
        if self._client is None:
            raise ProtocolError("POP3 session is closed")
        if not self._in_sync:
            raise ConnectionLost("POP3 session is out of step after an earlier failure")
        return self._client

    def _close_quietly(self) -> None:
        client, self._client = self._client, None
        self._in_sync = False
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()

    def _secret_bytes(self) -> tuple[bytes, ...]:
        """What no run of may appear in an error message, as a server might echo it:
        the password, the access token and OAuth2 secrets (as UTF-8 and latin-1),
        and the base64 SASL strings that carry them."""
        cfg = self._config
        values = [cfg.password, self._token]
        if cfg.oauth is not None:
            values += cfg.oauth.secret_values()
        out: set[bytes] = set()
        for value in values:
            if value:
                out.add(value.encode("utf-8", "replace"))
                with contextlib.suppress(UnicodeError):
                    out.add(value.encode("latin-1"))
        if cfg.password:
            with contextlib.suppress(ValueError):
                out.add(plain_response(cfg.username, cfg.password))
        if self._token:
            with contextlib.suppress(ValueError):
                out.add(xoauth2_response(cfg.username, self._token))
        return tuple(sorted(out))

    def _text(self, exc: poplib.error_proto) -> str:
        """Server text (not an answer to a credential) for an error message: every run
        of a secret masked, printable, bounded (pop3_ingest.redaction)."""
        raw = exc.args[0] if exc.args else b""
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace")
        return Redactor(self._secret_bytes()).mask(data, limit=200)


# -- listings ---------------------------------------------------------------------------


def parse_listing(
    uidl_lines: list[bytes] | None,
    list_lines: list[bytes],
    secrets: tuple[bytes, ...] = (),
) -> tuple[list[ServerMessage], list[SkippedMessage]]:
    """Pair the UIDL and LIST listings (``uidl_lines`` None: the server has no UIDL).

    A line that does not start with a message number means the answers are out
    of step (:class:`SessionOutOfStep`). A message is skipped, and stays on the
    server, only when it cannot be fetched safely: its number is 0 or listed
    twice, it is missing from LIST, or its size is not a number.

    A message whose UIDL is empty, shared with another message, or missing
    (RFC 1939 makes UIDL optional) is still listed, with ``unique=False``: it
    cannot be told apart from its twins across sessions, so the core knows it
    by its content digest instead and deletes it only in the session that
    downloaded and hashed it.

    Any other UIDL is accepted as the server sent it (RFC 1939 asks for 1-70
    characters in 0x21-0x7E; longer ones, ``/``, ``..``, ``%``, spaces inside
    and 8-bit bytes are taken as they are, decoded as latin-1 so every byte
    survives). Object keys hold a digest of it, never the text itself.
    """
    uidls, uidl_twice = _numbered(uidl_lines or [], "UIDL", secrets)
    sizes, size_twice = _numbered(list_lines, "LIST", secrets)
    by_uidl: dict[bytes, list[int]] = {}
    for number, rest in uidls.items():
        uidl = rest.strip(b" \t")
        if uidl and number not in uidl_twice:
            by_uidl.setdefault(uidl, []).append(number)
    messages: list[ServerMessage] = []
    skipped: list[SkippedMessage] = []
    for number in sorted(set(uidls) | set(sizes) | uidl_twice | size_twice):
        uidl = uidls.get(number, b"").strip(b" \t")
        size_words = sizes.get(number, b"").split()
        reason = None
        if number == 0:
            reason = "message number 0"
        elif number in uidl_twice or number in size_twice:
            reason = "message number listed twice"
        elif number not in sizes:
            reason = "listed by UIDL but not by LIST"
        elif not size_words or not size_words[0].isdigit():
            reason = "LIST size is not a number"
        if reason is not None:
            skipped.append(SkippedMessage(number, reason))
            continue
        unique = bool(uidl) and len(by_uidl[uidl]) == 1
        messages.append(
            ServerMessage(number, uidl.decode("latin-1"), int(size_words[0]), unique=unique)
        )
    return messages, skipped


def _numbered(
    lines: list[bytes], command: str, secrets: tuple[bytes, ...] = ()
) -> tuple[dict[int, bytes], set[int]]:
    """``{number: rest of line}`` and the numbers that came more than once."""
    entries: dict[int, bytes] = {}
    twice: set[int] = set()
    for index, line in enumerate(lines, start=1):
        match = _NUMBERED.fullmatch(line)
        if match is None:
            raise SessionOutOfStep(
                f"{command} listing line {index} is not '<number> <value>': "
                f"{printable(line, secrets, limit=80)!r}"
            )
        number = int(match.group(1))
        if number in entries:
            twice.add(number)
        entries[number] = match.group(2) or b""
    return entries, twice
