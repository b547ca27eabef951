"""One error hierarchy for the whole function.

Every message is written for an operator reading a log line: it names the
field, host or response code involved and never carries a password or token.
"""

from __future__ import annotations


class Pop3IngestError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(Pop3IngestError):
    """The function's environment is incomplete or invalid."""


class SecretError(Pop3IngestError):
    """The mailbox secret is missing, unreadable or malformed."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Pop3Error(Pop3IngestError):
    """Something went wrong talking to the POP3 server.

    ``code`` is the response code it answered with, if any (RFC 2449, RFC 3206).
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectError(Pop3Error):
    """The server could not be reached (DNS, refused, timeout)."""


class AddressRefused(ConnectError):
    """A secret's host or token URL resolves to an address this deployment does not
    connect to (loopback, private, link-local...: pop3_ingest.netguard).

    ``field`` names the secret's field to fix (``host``, ``auth.token_url``).
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class TlsError(Pop3Error):
    """TLS could not be established safely (bad certificate, no STLS)."""


class AuthError(Pop3Error):
    """The server rejected the credentials ([AUTH], [SYS/PERM] or plain -ERR)."""


class MailboxBusy(Pop3Error):
    """The server asked us to come back later ([IN-USE], [LOGIN-DELAY], [SYS/TEMP])."""

    code: str  # always given: what to wait for decides how long

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code)


class ProtocolError(Pop3Error):
    """The server answered something POP3 does not allow here."""


class ConnectionLost(Pop3Error):
    """The connection dropped or timed out; the session cannot continue."""


class SessionOutOfStep(ConnectionLost):
    """The server's answers no longer line up with our commands.

    A status line that is neither ``+OK`` nor ``-ERR``, a listing line that is
    not ``<number> <text>``, a response line that never ends: the session is
    dropped without QUIT, so the server forgets every DELE of it.
    """


class TransferTooSlow(ConnectionLost):
    """A response did not arrive in time; the session is dropped without QUIT.

    A command's answer must arrive within POP3_TIMEOUT_SECONDS as a whole (not
    per read: a server dripping one byte a second is too slow), a message or
    listing within max(POP3_TIMEOUT_SECONDS, size / MIN_TRANSFER_BYTES_PER_SECOND).
    """


class MessageTooLarge(ProtocolError):
    """A message grew past its announced size plus the allowed margin."""


class StoreError(Pop3IngestError):
    """A message could not be written to S3 (after the SDK's retries)."""


class AnnounceError(Pop3IngestError):
    """A pointer could not be sent to SQS (after the SDK's retries)."""


class JobError(Pop3IngestError):
    """A job from the dispatcher's queue is malformed."""


class ScheduleError(Pop3IngestError):
    """Mode fleet: a mailbox's schedule, or the secrets behind the schedules, could not be
    read or written (after the SDK's retries)."""


class StateDamaged(Pop3IngestError):
    """A mailbox's run state cannot be read as written: set aside, never trusted."""
