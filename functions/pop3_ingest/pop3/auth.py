"""SASL logins for POP3 (RFC 5034): the AUTH command, and PLAIN and XOAUTH2.

poplib has no AUTH yet. :func:`auth` has the shape of its coming
``POP3.auth(mechanism, authobject)``, as ``smtplib.SMTP.auth`` has:
``authobject()`` gives the initial response, sent on the AUTH line where
allowed, and ``authobject(challenge)`` the response to each challenge; auth
does the base64 both ways. It is built on the connection's line primitives
(:func:`pop3_ingest.pop3.connection.line_channel`). Every line that carries a
credential (password, access token) is written straight to the socket, never
through poplib's ``_putcmd``/``_putline``: those print the line when debugging
is on and pass it to ``sys.audit`` hooks. No credential ever enters an
exception message.

A refused login raises :class:`SaslRejected` (a :class:`poplib.error_proto`,
as poplib's own ``pass_`` raises) whose first argument is the server's
``-ERR`` line cut to its status and registered response code
(:func:`pop3_ingest.redaction.credential_refusal`), so callers map ``[AUTH]``,
``[IN-USE]``, ``[SYS/TEMP]``... the way they map a refused PASS. The rest of
any answer to AUTH is never kept: it may echo the credential, whole or in pieces.
"""

from __future__ import annotations

import base64
import binascii
import json
import poplib
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from pop3_ingest.pop3.connection import line_channel
from pop3_ingest.redaction import credential_refusal

# RFC 2449 / RFC 5034 §4: a command line is at most 255 octets including CRLF;
# an initial response that would exceed it must be sent after the "+" instead.
MAX_COMMAND_LINE = 255
# As smtplib: a server that keeps sending challenges is not followed for ever.
MAX_CHALLENGES = 5
# An HTTP status ("401"): three digits carry no usable piece of a credential,
# where a free-form word from the server could.
_STATUS = re.compile(r"^[1-5][0-9]{2}$")


class SaslRejected(poplib.error_proto):
    """The server refused the SASL exchange; ``args[0]`` is ``-ERR`` and its registered
    response code, if any (bytes), never the server's text.

    ``status`` is the HTTP status an XOAUTH2 server sent in its JSON error
    challenge (e.g. ``"401"``), when it sent one.
    """

    def __init__(self, response: bytes, status: str | None = None) -> None:
        super().__init__(response)
        self.status = status


class AuthObject(Protocol):
    """``authobject()``: the initial response (None: none); ``authobject(challenge)``:
    the response to a decoded challenge (None: it has no answer to it)."""

    def __call__(self, challenge: bytes | None = None, /) -> bytes | None: ...


def supported_mechanisms(capabilities: Mapping[str, Sequence[str]]) -> set[str]:
    """SASL mechanisms from CAPA's ``SASL`` line (poplib's ``capa()`` dict), upper-cased."""
    for name, args in capabilities.items():
        if name.upper() == "SASL":
            return {arg.upper() for arg in args}
    return set()


def plain_response(username: str, password: str, authzid: str = "") -> bytes:
    """RFC 4616 PLAIN: ``base64(authzid NUL authcid NUL passwd)``."""
    return base64.b64encode(_plain(username, password, authzid))


def xoauth2_response(username: str, token: str) -> bytes:
    """``base64("user=" U "\\x01auth=Bearer " TOKEN "\\x01\\x01")``."""
    return base64.b64encode(_xoauth2(username, token))


def auth(
    client: poplib.POP3,
    mechanism: str,
    authobject: AuthObject,
    *,
    initial_response_ok: bool = True,
) -> bytes:
    """``AUTH mechanism`` (RFC 5034); returns the server's ``+OK`` line.

    A challenge (``+`` and base64) is decoded, given to ``authobject`` and its
    response sent back in base64; a challenge that is not base64 is given as
    it came. An answer that is neither ``+OK`` after a response, nor a
    challenge ``authobject`` can answer, raises :class:`SaslRejected`.
    """
    channel = line_channel(client)
    name = mechanism.upper()
    initial = authobject() if initial_response_ok else None
    if initial is None:
        channel.send_command(f"AUTH {name}")
    else:
        channel.send_line(b"AUTH " + name.encode("ascii") + b" " + _encoded(initial, b"="))
    responded = initial is not None
    challenges = 0
    while True:
        reply = channel.read_line()
        if reply.startswith(b"+OK") and responded:
            return reply
        response = None
        if _is_challenge(reply) and challenges < MAX_CHALLENGES:
            challenges += 1
            response = authobject(_decoded(reply[2:].strip()))
        if response is None:
            raise _refusal(reply, name)
        channel.send_line(_encoded(response, b""))
        responded = True


class OneResponse:
    """The authobject of a mechanism with one response to give (PLAIN, XOAUTH2).

    Asked for the initial response, or at the first challenge: the response.
    At an empty challenge right after the initial response: the response again
    (the server ignored it and asks for it: two steps after all). Any other
    challenge is an error challenge (XOAUTH2: base64 JSON, whose HTTP status
    is kept in :attr:`error_status`), answered with an empty line as RFC 5034
    section 4 and XOAUTH2 require; the server then owes its final answer, and
    nothing after it is answered.
    """

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._given = 0
        self._initial = False
        self._error_answered = False
        self.error_status: str | None = None

    def __call__(self, challenge: bytes | None = None, /) -> bytes | None:
        if self._error_answered:
            return None
        if self._wants_the_response(challenge):
            self._given += 1
            return self._response
        self.error_status = _error_status(challenge or b"")
        self._error_answered = True
        return b""

    def _wants_the_response(self, challenge: bytes | None) -> bool:
        if self._given == 0:
            self._initial = challenge is None
            return True
        return self._initial and self._given == 1 and not challenge


def auth_plain(client: poplib.POP3, username: str, password: str) -> bytes:
    """``AUTH PLAIN``; returns the server's ``+OK`` line.

    Sends the one-line form (initial response) unless that would exceed the
    command line limit, and falls back to the two-step form when the server
    answers the one-line form with an empty ``+`` challenge.
    """
    raw = _plain(username, password)
    one_line = len(b"AUTH PLAIN ") + len(base64.b64encode(raw)) + 2 <= MAX_COMMAND_LINE
    return _auth_once(client, "PLAIN", raw, one_line=one_line)


def auth_xoauth2(client: poplib.POP3, username: str, token: str, two_step: bool = True) -> bytes:
    """``AUTH XOAUTH2`` with a bearer token; returns the server's ``+OK`` line.

    two_step=True (the default) sends ``AUTH XOAUTH2``, waits for ``+``, then
    the string on its own line: Microsoft 365 accepts only this form, and it
    keeps within the 255-octet command line whatever the token length.
    two_step=False sends ``AUTH XOAUTH2 <b64>`` in one line (Google, Dovecot).

    A rejected token is answered with ``+ <base64 JSON>``; the empty line the
    protocol then requires is sent, and :class:`SaslRejected` is raised with the
    final ``-ERR`` line and the JSON ``status``.
    """
    return _auth_once(client, "XOAUTH2", _xoauth2(username, token), one_line=not two_step)


def _auth_once(client: poplib.POP3, mechanism: str, response: bytes, *, one_line: bool) -> bytes:
    exchange = OneResponse(response)
    try:
        return auth(client, mechanism, exchange, initial_response_ok=one_line)
    except SaslRejected as rejected:
        rejected.status = exchange.error_status
        raise


def _plain(username: str, password: str, authzid: str = "") -> bytes:
    if "\0" in username or "\0" in password or "\0" in authzid:
        raise ValueError("PLAIN credentials must not contain NUL characters")
    return f"{authzid}\0{username}\0{password}".encode()


def _xoauth2(username: str, token: str) -> bytes:
    if not username or any(ord(c) < 0x20 or c == "\x7f" for c in username):
        raise ValueError("XOAUTH2 user name must be non-empty, without control characters")
    if not token or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in token):
        # The token itself is never shown.
        raise ValueError("XOAUTH2 access token must be printable ASCII without spaces")
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def _is_challenge(line: bytes) -> bool:
    return line == b"+" or line.startswith(b"+ ")


def _encoded(response: bytes, empty: bytes) -> bytes:
    """A response in base64; an empty one as ``empty`` ("=" on the AUTH line, RFC 5034)."""
    return base64.b64encode(response) if response else empty


def _decoded(payload: bytes) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        return payload


def _error_status(challenge: bytes) -> str | None:
    """The ``status`` of an XOAUTH2 error challenge (``{"status":"401",...}``), if readable."""
    try:
        data = json.loads(challenge)
    except (ValueError, UnicodeDecodeError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    if isinstance(status, int) and not isinstance(status, bool):
        status = str(status)
    return status if isinstance(status, str) and _STATUS.match(status) else None


def _refusal(line: bytes, mechanism: str) -> SaslRejected:
    if line.startswith(b"-ERR"):
        return SaslRejected(credential_refusal(line))
    # Not -ERR: the session is out of step. What came is not shown: it answered
    # a credential.
    return SaslRejected(b"unexpected answer to AUTH " + mechanism.encode("ascii") + b" (not shown)")
