"""A POP3 session built on :mod:`poplib`, with the pieces poplib lacks.

poplib gives us connection set-up, TLS, USER/PASS and the short commands. It
cannot stream a message (``retr`` returns every line in memory) and it refuses
lines longer than 2048 bytes, leaving the socket out of step. RETR is
therefore read here straight from poplib's socket file, one bounded chunk at a
time, without any line-length limit.
"""

from __future__ import annotations

import contextlib
import poplib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, cast

from pop3_ingest.config import MailboxConfig, TlsMode
from pop3_ingest.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    MessageTooLarge,
    Pop3Error,
    ProtocolError,
    TlsError,
)
from pop3_ingest.oauth import TokenProvider
from pop3_ingest.sasl import auth_plain, auth_xoauth2, supported_mechanisms

BUSY_CODES = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP"})
_RESP_CODE = re.compile(rb"^-ERR \[([A-Za-z0-9/\-]+)\]")
# One read from the socket; also the most a single over-long line can cost us.
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ServerMessage:
    """One entry of the mailbox listing: session number, UIDL and LIST size."""

    number: int
    uidl: str
    size: int


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


class PeekableSource(Protocol):
    """What RetrStream reads from: a buffered reader (poplib's socket file)."""

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
    ) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._on_finish = on_finish
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
        except (OSError, ValueError) as exc:
            self._fail()
            raise ConnectionLost(f"connection lost during RETR: {exc}") from exc

    def _fail(self) -> None:
        self._done = True
        self._pending.clear()
        self._carry.clear()
        self._on_finish(False)


class Pop3Mailbox:
    """A logged-in POP3 session; leaving the ``with`` block ends it.

    On a clean exit, or an error that left the session in step, QUIT commits
    the DELEs sent so far (each of them only after its message was stored and
    announced). If the session is out of step, the socket is just closed and
    the server forgets every DELE, which is safe.
    """

    def __init__(self, config: MailboxConfig, timeout: float) -> None:
        self._config = config
        self._timeout = timeout
        self._client: poplib.POP3 | None = None
        self._in_sync = False
        self.capabilities: dict[str, list[str]] = {}
        self.quit_ok: bool | None = None

    # -- session life cycle -------------------------------------------------

    def __enter__(self) -> Pop3Mailbox:
        self._client = self._connect()
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
            except Pop3Error:
                self._close_quietly()
        else:
            self._close_quietly()

    def abandon(self) -> None:
        """Close without QUIT: the server forgets this session's DELEs (RFC 1939)."""
        self.quit_ok = False
        self._close_quietly()

    def quit(self) -> None:
        client = self._require_client()
        try:
            client.quit()
            self.quit_ok = True
        except poplib.error_proto as exc:
            self.quit_ok = False
            raise ProtocolError(
                f"QUIT refused, deletions not committed: {self._text(exc)}"
            ) from exc
        except OSError as exc:
            self.quit_ok = False
            raise ConnectionLost(f"connection lost at QUIT: {exc}") from exc
        finally:
            self._in_sync = False
            self._client = None

    def _connect(self) -> poplib.POP3:
        cfg = self._config
        where = f"{cfg.host}:{cfg.port}"
        try:
            if cfg.tls is TlsMode.IMPLICIT:
                return poplib.POP3_SSL(
                    cfg.host, cfg.port, timeout=self._timeout, context=self._tls_context()
                )
            return poplib.POP3(cfg.host, cfg.port, timeout=self._timeout)
        except ssl.SSLCertVerificationError as exc:
            raise TlsError(f"TLS certificate of {where} not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise TlsError(f"TLS handshake with {where} failed: {exc.reason or exc}") from exc
        except poplib.error_proto as exc:
            raise self._greeting_error(exc, where) from exc
        except TimeoutError as exc:
            raise ConnectError(f"timed out connecting to {where}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from exc

    def _greeting_error(self, exc: poplib.error_proto, where: str) -> Pop3Error:
        raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
        code = response_code(raw)
        if code in BUSY_CODES:
            return MailboxBusy(f"{where} is busy ({code}): {self._text(exc)}", code)
        return ProtocolError(f"{where} sent no valid POP3 greeting: {self._text(exc)}")

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

    def _secure_and_login(self, client: poplib.POP3) -> None:
        cfg = self._config
        self._in_sync = True
        self.capabilities = self._capa(client)
        if cfg.tls is TlsMode.STARTTLS:
            if "STLS" not in self.capabilities:
                raise TlsError(
                    f"{cfg.host}:{cfg.port} does not offer STLS; refusing to send "
                    "credentials in clear text (tls is 'starttls')"
                )
            try:
                client.stls(context=self._tls_context())
            except ssl.SSLCertVerificationError as exc:
                self._in_sync = False
                raise TlsError(
                    f"TLS certificate of {cfg.host}:{cfg.port} not trusted: {exc.verify_message}"
                ) from exc
            except ssl.SSLError as exc:
                self._in_sync = False
                raise TlsError(f"STLS handshake with {cfg.host}:{cfg.port} failed: {exc}") from exc
            except poplib.error_proto as exc:
                raise TlsError(f"server refused STLS: {self._text(exc)}") from exc
            # Capabilities may change once TLS is up (RFC 2595).
            self.capabilities = self._capa(client)
        self._login(client)

    def _capa(self, client: poplib.POP3) -> dict[str, list[str]]:
        try:
            return client.capa()
        except poplib.error_proto:
            return {}  # CAPA is optional (RFC 2449); we then assume the basics.
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost at CAPA: {exc}") from exc

    def _login(self, client: poplib.POP3) -> None:
        cfg = self._config
        token_provider = TokenProvider(cfg.oauth) if cfg.oauth is not None else None
        token = ""
        try:
            if token_provider is not None:
                token = token_provider.token()
                auth_xoauth2(client, cfg.username, token, two_step=cfg.sasl == "xoauth2")
            elif cfg.sasl == "plain" or (
                cfg.sasl == "auto"
                and "PLAIN" in supported_mechanisms(self.capabilities)
                and "USER" not in self.capabilities
            ):
                auth_plain(client, cfg.username, cfg.password)
            else:
                client.user(cfg.username)
                client.pass_(cfg.password)
        except poplib.error_proto as exc:
            if token_provider is not None:
                token_provider.invalidate(token)  # the next attempt fetches a fresh one
            raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
            code = response_code(raw)
            if code in BUSY_CODES:
                raise MailboxBusy(
                    f"mailbox {cfg.mailbox} is busy ({code}): {self._text(exc)}", code
                ) from exc
            raise AuthError(
                f"login as {cfg.username!r} at {cfg.host}:{cfg.port} failed: {self._text(exc)}",
                code,
            ) from exc
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost during login: {exc}") from exc

    # -- mailbox commands ---------------------------------------------------

    def list_messages(self) -> list[ServerMessage]:
        """Every message with its UIDL and size, in server order."""
        client = self._require_client()
        try:
            _, uidl_lines, _ = client.uidl()
            _, list_lines, _ = client.list()
        except poplib.error_proto as exc:
            raise ProtocolError(
                f"UIDL/LIST failed ({self._text(exc)}); UIDL is required for safe deletion"
            ) from exc
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost while listing: {exc}") from exc
        uidls = _parse_pairs(uidl_lines, "UIDL")
        sizes = _parse_pairs(list_lines, "LIST")
        messages = []
        for number, uidl in uidls.items():
            size_text = sizes.get(number)
            if size_text is None or not size_text.isdigit():
                raise ProtocolError(f"LIST gave no valid size for message {number}")
            messages.append(ServerMessage(number=number, uidl=uidl, size=int(size_text)))
        return sorted(messages, key=lambda m: m.number)

    @property
    def login_delay(self) -> int:
        """RFC 2449 LOGIN-DELAY: seconds the server wants between logins (0 if none)."""
        values = self.capabilities.get("LOGIN-DELAY", [])
        return int(values[0]) if values and values[0].isdigit() else 0

    @property
    def pipelining(self) -> bool:
        """RFC 2449: the server lets us send commands before reading answers."""
        return "PIPELINING" in self.capabilities

    def send_commands(self, commands: list[str]) -> None:
        """Write commands in one go; their answers are read in the same order."""
        client = self._require_client()
        data = b"".join(command.encode("ascii") + b"\r\n" for command in commands)
        try:
            client.sock.sendall(data)
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost sending commands: {exc}") from exc

    def read_retr(self, message: ServerMessage) -> RetrStream:
        """Read the answer to ``RETR``; the caller reads the stream to its end (or drains it)."""
        client = self._require_client()
        try:
            cast(Any, client)._getresp()  # poplib's status-line reader; no public API
        except poplib.error_proto as exc:
            raise ProtocolError(f"RETR {message.number} refused: {self._text(exc)}") from exc
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost at RETR: {exc}") from exc
        self._in_sync = False  # until the terminating line is read
        return RetrStream(
            cast(PeekableSource, client.file), allowed_size(message.size), self._retr_finished
        )

    def read_dele(self, message: ServerMessage) -> None:
        """Read the answer to ``DELE``."""
        client = self._require_client()
        try:
            cast(Any, client)._getresp()
        except poplib.error_proto as exc:
            raise ProtocolError(f"DELE {message.number} refused: {self._text(exc)}") from exc
        except OSError as exc:
            self._in_sync = False
            raise ConnectionLost(f"connection lost at DELE: {exc}") from exc

    def _retr_finished(self, clean: bool) -> None:
        self._in_sync = clean

    @property
    def usable(self) -> bool:
        return self._client is not None and self._in_sync

    # -- helpers ------------------------------------------------------------

    def _require_client(self) -> poplib.POP3:
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

    def _text(self, exc: poplib.error_proto) -> str:
        """Server text for an error message: printable, bounded, never the password."""
        raw = exc.args[0] if exc.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        text = "".join(c if c.isprintable() else "?" for c in text)[:200]
        if self._config.password and self._config.password in text:
            text = text.replace(self._config.password, "***")
        return text


def _parse_pairs(lines: list[bytes], command: str) -> dict[int, str]:
    pairs: dict[int, str] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ProtocolError(f"malformed {command} line: {line[:80]!r}")
        # latin-1 keeps any byte a hostile server sends, reversibly; keys are
        # derived from a hash of it, never from the text itself.
        pairs[int(parts[0])] = parts[1].decode("latin-1")
    return pairs
