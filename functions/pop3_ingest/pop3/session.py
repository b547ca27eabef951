"""The POP3 session the core drives (the ``Session`` port of pop3_ingest.domain.ports).

Commands are written, pipelined when the server allows it, and their answers
read in order: the listing (:mod:`~pop3_ingest.pop3.listing`), each RETR as a
stream (:mod:`~pop3_ingest.pop3.retr_stream`), each DELE. The connection and
the login are :mod:`~pop3_ingest.pop3.connection` and
:mod:`~pop3_ingest.pop3.login`.
"""

from __future__ import annotations

import contextlib
import logging
import poplib
from collections.abc import Callable

from pop3_ingest.config import DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND, MailboxConfig
from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.errors import ConnectionLost, Pop3Error, ProtocolError, SessionOutOfStep
from pop3_ingest.netguard import DEFAULT_ADDRESS_POLICY, AddressPolicy
from pop3_ingest.pop3 import listing
from pop3_ingest.pop3.connection import Pop3Connection, refusal_text
from pop3_ingest.pop3.limits import TransferLimits
from pop3_ingest.pop3.login import SessionSecrets, connect, log_in, secure
from pop3_ingest.pop3.retr_stream import STATUS_LINE, RetrStream, allowed_size
from pop3_ingest.redaction import printable

logger = logging.getLogger(__name__)

# RFC 2449 LOGIN-DELAY is honoured up to a day; a server asking for more is
# capped rather than able to switch the mailbox off.
MAX_LOGIN_DELAY = 24 * 3600


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
        connect_timeout: float | None = None,
        address_policy: AddressPolicy = DEFAULT_ADDRESS_POLICY,
    ) -> None:
        """``address_policy``: where the secret's host and token URL may lead
        (the deployment's ALLOW_PRIVATE_HOSTS; public addresses only by default)."""
        self._config = config
        self._address_policy = address_policy
        self._limits = TransferLimits(timeout, min_bytes_per_second, time_left, connect_timeout)
        self._secrets = SessionSecrets(config)
        self._connection: Pop3Connection | None = None
        self.capabilities: dict[str, list[str]] = {}
        self.quit_ok: bool | None = None
        # Listed messages left alone by the last list_messages() (no usable UIDL).
        self.skipped: list[listing.SkippedMessage] = []

    # -- session life cycle -------------------------------------------------

    def __enter__(self) -> Pop3Mailbox:
        connection = self._connection = connect(
            self._config, self._limits, self._secrets, self._address_policy
        )
        try:
            self.capabilities = secure(connection, self._config)
            log_in(connection, self._config, self.capabilities, self._secrets, self._address_policy)
        except BaseException:
            self._close_quietly()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        """QUIT if the session is in step (committing its DELEs), else just close."""
        if self._connection is None:
            return
        if not self._connection.in_step:
            self._close_quietly()
            return
        try:
            self.quit()
        except Pop3Error as error:
            logger.error(
                "QUIT failed; this session's deletions may not be committed",
                extra={"error": str(error)},
            )
            self._close_quietly()

    def abandon(self) -> None:
        """Close without QUIT: the server forgets this session's DELEs (RFC 1939)."""
        self.quit_ok = False
        self._close_quietly()

    def quit(self) -> None:
        connection = self._require_connection()
        connection.label = "QUIT"
        try:
            connection.quit()  # closes the connection after +OK
            self.quit_ok = True
        except poplib.error_proto as exc:
            self.quit_ok = False
            text = refusal_text(exc, connection.secrets())
            raise ProtocolError(f"QUIT refused, deletions not committed: {text}") from exc
        except ConnectionLost:
            # Whether the server committed is unknown: count nothing as deleted.
            self.quit_ok = False
            raise
        except OSError as exc:
            self.quit_ok = False
            raise ConnectionLost(f"connection lost at QUIT: {exc}") from exc
        finally:
            self._connection = None
            if not self.quit_ok:
                with contextlib.suppress(OSError):
                    connection.close()

    @property
    def usable(self) -> bool:
        return self._connection is not None and self._connection.in_step

    # -- what the server says about itself ---------------------------------------

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

    # -- mailbox commands ---------------------------------------------------

    def list_messages(self) -> list[ServerMessage]:
        """Every message that can be fetched safely, with its size, in server order.

        Messages without a unique UIDL are included, marked ``unique=False``.
        The others (see :func:`~pop3_ingest.pop3.listing.parse_listing`) are in
        :attr:`skipped`, logged, and left on the server.
        """
        messages, self.skipped = listing.list_messages(self._require_connection())
        return messages

    def send_commands(self, commands: list[str]) -> None:
        """Write commands in one go; their answers are read in the same order."""
        connection = self._require_connection()
        lines = [command.encode("ascii") for command in commands]
        with connection.step("sending commands"):
            connection.send_lines(lines)

    def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> RetrStream:
        """Read the answer to ``RETR``; the caller reads the stream to its end (or drains it).

        The whole message must arrive within
        max(POP3_TIMEOUT_SECONDS, LIST size / MIN_TRANSFER_BYTES_PER_SECOND).

        A message whose first line reads like a status line is taken for an
        answer out of step, unless ``exact_size``: then it is read as mail,
        and the stream fails (out of step after all) unless exactly the LIST
        size arrives, which an answer out of step would not match.
        """
        connection = self._require_connection()
        what = f"RETR {message.number}"
        self._read_status(connection, what)
        connection.in_step = False  # until the terminating line is read
        connection.begin_answer(self._limits.clock(what, size=message.size))
        reader = connection.reader()
        with connection.step(what):
            head = reader.peek(8)[:8]
        if exact_size:
            return RetrStream(reader, message.size, connection.answer_finished, exact=True)
        if STATUS_LINE.match(head):
            # An answer too many came before (a stray line, or answers out of
            # order): this "message" would be the next answer. Stop here.
            connection.end_answer()
            raise SessionOutOfStep(
                f"{what}: the message starts with a status line "
                f"({printable(head, connection.secrets())!r}); answers are out of step"
            )
        return RetrStream(reader, allowed_size(message.size), connection.answer_finished)

    def read_dele(self, message: ServerMessage) -> None:
        """Read the answer to ``DELE``."""
        self._read_status(self._require_connection(), f"DELE {message.number}")

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _read_status(connection: Pop3Connection, what: str) -> None:
        """The status line answering ``what``; ``-ERR`` is a ProtocolError."""
        with connection.step(what):
            try:
                connection.read_status()
            except poplib.error_proto as exc:
                text = refusal_text(exc, connection.secrets())
                raise ProtocolError(f"{what} refused: {text}") from exc

    def _require_connection(self) -> Pop3Connection:
        if self._connection is None:
            raise ProtocolError("POP3 session is closed")
        if not self._connection.in_step:
            raise ConnectionLost("POP3 session is out of step after an earlier failure")
        return self._connection

    def _close_quietly(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.in_step = False
            with contextlib.suppress(OSError):
                connection.close()
