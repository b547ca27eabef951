"""SASL logins for POP3 (RFC 5034) on a :mod:`poplib` client: PLAIN and XOAUTH2.

poplib has no AUTH command; this builds it on poplib's line primitives, as
``pop3.py`` does for RETR. Every line that carries a credential (password,
access token) is written straight to the socket, never through poplib's
``_putcmd``/``_putline``: those print the line when debugging is on and pass it
to ``sys.audit`` hooks. No credential ever enters an exception message.

A refused login raises :class:`poplib.error_proto` (as poplib's own ``pass_``
does) whose first argument is the server's ``-ERR`` line cut to its status and
registered response code (:func:`pop3_ingest.redaction.credential_refusal`),
so callers map ``[AUTH]``, ``[IN-USE]``, ``[SYS/TEMP]``... the way they map a
refused PASS. The rest of any answer to AUTH is never kept: it may echo the
credential, whole or in pieces.
"""

from __future__ import annotations

import base64
import binascii
import json
import poplib
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from pop3_ingest.redaction import credential_refusal

# RFC 2449 / RFC 5034 §4: a command line is at most 255 octets including CRLF;
# an initial response that would exceed it must be sent after the "+" instead.
MAX_COMMAND_LINE = 255
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


def supported_mechanisms(capabilities: Mapping[str, Sequence[str]]) -> set[str]:
    """SASL mechanisms from CAPA's ``SASL`` line (poplib's ``capa()`` dict), upper-cased."""
    for name, args in capabilities.items():
        if name.upper() == "SASL":
            return {arg.upper() for arg in args}
    return set()


def plain_response(username: str, password: str, authzid: str = "") -> bytes:
    """RFC 4616 PLAIN: ``base64(authzid NUL authcid NUL passwd)``."""
    if "\0" in username or "\0" in password or "\0" in authzid:
        raise ValueError("PLAIN credentials must not contain NUL characters")
    raw = f"{authzid}\0{username}\0{password}".encode()
    return base64.b64encode(raw)


def xoauth2_response(username: str, token: str) -> bytes:
    """``base64("user=" U "\\x01auth=Bearer " TOKEN "\\x01\\x01")``."""
    if not username or any(ord(c) < 0x20 or c == "\x7f" for c in username):
        raise ValueError("XOAUTH2 user name must be non-empty, without control characters")
    if not token or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in token):
        # The token itself is never shown.
        raise ValueError("XOAUTH2 access token must be printable ASCII without spaces")
    raw = f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
    return base64.b64encode(raw)


def auth_plain(client: poplib.POP3, username: str, password: str) -> bytes:
    """``AUTH PLAIN``; returns the server's ``+OK`` line.

    Sends the one-line form (initial response) unless that would exceed the
    command line limit, and falls back to the two-step form when the server
    answers the one-line form with an empty ``+`` challenge.
    """
    response = plain_response(username, password)
    one_line = len(b"AUTH PLAIN ") + len(response) + 2 <= MAX_COMMAND_LINE
    return _authenticate(client, "PLAIN", response, one_line=one_line)


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
    response = xoauth2_response(username, token)
    return _authenticate(client, "XOAUTH2", response, one_line=not two_step)


def _authenticate(client: poplib.POP3, mechanism: str, response: bytes, *, one_line: bool) -> bytes:
    pop = cast(Any, client)  # poplib's line primitives; no public API for AUTH
    if one_line:
        _send_secret(client, b"AUTH " + mechanism.encode("ascii") + b" " + response)
    else:
        pop._putcmd(f"AUTH {mechanism}")
        challenge = _readline(client)
        if not _is_continuation(challenge):
            raise _refusal(challenge, mechanism)
        _send_secret(client, response)

    reply = _readline(client)
    if one_line and _is_continuation(reply) and not _payload(reply):
        # The server ignored the initial response and asks for it: two-step after all.
        _send_secret(client, response)
        reply = _readline(client)
    if reply.startswith(b"+OK"):
        return reply
    if _is_continuation(reply):
        # An error challenge (XOAUTH2: base64 JSON). RFC 5034 §4 / the XOAUTH2
        # spec: answer with an empty line, then the server sends its -ERR.
        status = _error_status(_payload(reply))
        _send_secret(client, b"")
        final = _readline(client)
        if final.startswith(b"+OK"):
            return final
        raise _refusal(final, mechanism, status)
    raise _refusal(reply, mechanism)


def _send_secret(client: poplib.POP3, line: bytes) -> None:
    """Write a credential-bearing line directly: no debug print, no audit event."""
    client.sock.sendall(line + b"\r\n")


def _readline(client: poplib.POP3) -> bytes:
    line, _ = cast(Any, client)._getline()
    return cast(bytes, line)


def _is_continuation(line: bytes) -> bool:
    return line == b"+" or line.startswith(b"+ ")


def _payload(line: bytes) -> bytes:
    return line[2:].strip()


def _error_status(payload: bytes) -> str | None:
    """The ``status`` of an XOAUTH2 error challenge (``{"status":"401",...}``), if readable."""
    try:
        data = json.loads(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    if isinstance(status, int) and not isinstance(status, bool):
        status = str(status)
    return status if isinstance(status, str) and _STATUS.match(status) else None


def _refusal(line: bytes, mechanism: str, status: str | None = None) -> SaslRejected:
    if line.startswith(b"-ERR"):
        return SaslRejected(credential_refusal(line), status)
    # Not -ERR: the session is out of step. What came is not shown: it answered
    # a credential.
    return SaslRejected(
        b"unexpected answer to AUTH " + mechanism.encode("ascii") + b" (not shown)", status
    )
