"""The mailbox listing (UIDL and LIST, RFC 1939) and the response codes of RFC 2449.

Listings are bounded and parsed line by line. A message without a usable
UIDL (empty, or shared with another message) is still listed, known by its
content instead; one that cannot be fetched safely at all is left out, left
on the server and reported in ``skipped``.
"""

from __future__ import annotations

import logging
import poplib
import re
from dataclasses import dataclass

from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.errors import ProtocolError, SessionOutOfStep
from pop3_ingest.pop3.connection import Pop3Connection, refusal_text
from pop3_ingest.redaction import printable

logger = logging.getLogger(__name__)

# The answers that mean "come back later" (RFC 2449 and RFC 3206 codes).
BUSY_CODES = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP"})
# A listing that never ends is cut here: about 400,000 messages' UIDLs.
MAX_LISTING_BYTES = 32 * 1024 * 1024
_SKIPS_LOGGED = 20
# "<message number>[ <text>]" (RFC 1939 scan and unique-id listings).
_NUMBERED = re.compile(rb"(\d{1,10})(?:[ \t]+(.*))?", re.DOTALL)


@dataclass(frozen=True)
class SkippedMessage:
    """A listed message left alone because it cannot be identified safely."""

    number: int
    reason: str


def list_messages(connection: Pop3Connection) -> tuple[list[ServerMessage], list[SkippedMessage]]:
    """UIDL (optional: RFC 1939) and LIST read and paired (see :func:`parse_listing`);
    the entries left alone are logged."""
    try:
        uidl_lines: list[bytes] | None = read_listing(connection, "UIDL")
    except ProtocolError:
        # RFC 1939 makes UIDL optional: every message is then known by
        # its content digest (see parse_listing).
        logger.warning("server has no UIDL; messages are identified by their content")
        uidl_lines = None
    list_lines = read_listing(connection, "LIST")
    try:
        messages, skipped = parse_listing(uidl_lines, list_lines, connection.secrets())
    except SessionOutOfStep:
        connection.in_step = False
        raise
    _log_skipped(skipped)
    return messages, skipped


def read_listing(connection: Pop3Connection, command: str) -> list[bytes]:
    """The lines of a UIDL or LIST answer; a refusal is a ProtocolError."""
    with connection.step(command):
        try:
            connection.send_line(command.encode("ascii"))
            connection.read_status()
        except poplib.error_proto as exc:
            text = refusal_text(exc, connection.secrets())
            # UIDL is optional (its refusal is handled by the caller); LIST is not.
            raise ProtocolError(
                f"{command} refused ({text}); LIST is required to fetch safely"
                if command == "LIST"
                else f"{command} refused ({text})"
            ) from exc
        return connection.multiline(f"{command} listing", MAX_LISTING_BYTES)


def _log_skipped(skipped: list[SkippedMessage]) -> None:
    for entry in skipped[:_SKIPS_LOGGED]:
        logger.warning(
            "listing entry that cannot be fetched safely left on server",
            extra={"message_number": entry.number, "reason": entry.reason},
        )
    if len(skipped) > _SKIPS_LOGGED:
        logger.warning(
            "more listing entries that cannot be fetched safely left on server",
            extra={"count": len(skipped) - _SKIPS_LOGGED},
        )


def parse_listing(
    uidl_lines: list[bytes] | None,
    list_lines: list[bytes],
    secrets: tuple[str | bytes, ...] = (),
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
    twice = uidl_twice | size_twice
    by_uidl: dict[bytes, list[int]] = {}
    for number, rest in uidls.items():
        uidl = rest.strip(b" \t")
        if uidl and number not in uidl_twice:
            by_uidl.setdefault(uidl, []).append(number)
    messages: list[ServerMessage] = []
    skipped: list[SkippedMessage] = []
    for number in sorted(set(uidls) | set(sizes) | twice):
        reason = _skip_reason(number, sizes, twice)
        if reason is not None:
            skipped.append(SkippedMessage(number, reason))
            continue
        uidl = uidls.get(number, b"").strip(b" \t")
        unique = bool(uidl) and len(by_uidl[uidl]) == 1
        size = int(sizes[number].split()[0])
        messages.append(ServerMessage(number, uidl.decode("latin-1"), size, unique=unique))
    return messages, skipped


def _skip_reason(number: int, sizes: dict[int, bytes], twice: set[int]) -> str | None:
    """Why a listed message cannot be fetched safely, or None if it can."""
    if number == 0:
        return "message number 0"
    if number in twice:
        return "message number listed twice"
    if number not in sizes:
        return "listed by UIDL but not by LIST"
    size_words = sizes[number].split()
    if not size_words or not size_words[0].isdigit():
        return "LIST size is not a number"
    return None


def _numbered(
    lines: list[bytes], command: str, secrets: tuple[str | bytes, ...] = ()
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
