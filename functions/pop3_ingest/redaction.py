"""The one home of redaction: what of a remote party's text may reach a log line or an error.

What is a secret: every value under a :data:`SECRET_FIELDS` name
(:func:`secret_values`), plus what only its user derives (an access token, the
base64 SASL strings). A URL is shown without its credentials, query and
fragment (:func:`display_url`).

Two rules for text (docs/security.md):

- What a server answers to a credential (USER, PASS, every AUTH step) is never
  shown. Only its response code is kept, and only when it is a registered one
  (:func:`credential_refusal`); the caller adds a fixed description.
- Any other remote text (a greeting, CAPA, a refused command, a token
  endpoint's error) goes through :meth:`Redactor.mask`: every run of
  :data:`MIN_SECRET_RUN` or more characters that also occurs in a secret is
  replaced by ``***``, then the text is made printable and bounded. Masking
  comes before the bound, and the bound is masked again, so a secret cut
  short (by the server, or by us) is hidden like a whole one.

Why runs of 4: a server that echoes a password cut at any byte, or a slice
from its middle, shows every run of the password that it shows at all; hiding
each run of 4 or more leaves at most 3 characters of it between two
``***``, which tells an attacker next to nothing. Runs of 3 would hide common
words ("ERR", "the", "bad") whenever a password contains them and make
diagnostics useless; runs of 5 or more would let 4-character pieces through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import urllib.parse
from collections.abc import Iterable, Mapping

MIN_SECRET_RUN = 4
MASK = "***"
DEFAULT_LIMIT = 200
# RFC 2449, RFC 3206 and RFC 6856 response codes: the only words of an answer
# to a credential that are ever repeated. Anything else in the brackets is
# server text, and a hostile server could put a piece of the password there.
RESPONSE_CODES = frozenset({"AUTH", "IN-USE", "LOGIN-DELAY", "SYS/PERM", "SYS/TEMP", "UTF8"})
# Fields whose values are secrets wherever they appear: in the mailbox
# secret's JSON, in a parsed MailboxConfig, in a token endpoint's answer.
SECRET_FIELDS = frozenset(
    {"password", "client_secret", "refresh_token", "access_token", "token", "private_key_pem"}
)
# Masking a masked text again changes nothing, short of a secret made of "*".
_MAX_PASSES = 8
_CODE = re.compile(rb"^-ERR \[([A-Za-z0-9/\-]+)\]")


class Redactor:
    """Masks every run of ``min_run`` or more characters of any of ``secrets``.

    Each secret is looked for as UTF-8, as latin-1 (a server may echo it in
    either) and URL-encoded (as a form body carries it); callers add the
    derived forms only they know, such as the base64 SASL strings.
    Secrets are short, so every ``min_run``-byte window of each form goes in
    one set and a text is scanned window by window: O(len(text)).
    A secret shorter than ``min_run`` is masked where it occurs whole.
    """

    def __init__(self, secrets: Iterable[str | bytes], *, min_run: int = MIN_SECRET_RUN) -> None:
        if min_run < 1:
            raise ValueError("min_run must be at least 1")
        self._windows: dict[int, set[bytes]] = {}
        for form in _forms(secrets):
            width = min(min_run, len(form))
            windows = self._windows.setdefault(width, set())
            windows.update(form[i : i + width] for i in range(len(form) - width + 1))

    def __bool__(self) -> bool:
        return bool(self._windows)

    def mask_bytes(self, raw: bytes) -> bytes:
        """``raw`` with every run that matches part of a secret replaced by ``***``."""
        if not self._windows:
            return raw
        hidden = bytearray(len(raw))
        for width, windows in self._windows.items():
            for start in range(len(raw) - width + 1):
                if raw[start : start + width] in windows:
                    hidden[start : start + width] = b"\x01" * width
        if not any(hidden):
            return raw
        out = bytearray()
        for index, byte in enumerate(raw):
            if not hidden[index]:
                out.append(byte)
            elif index == 0 or not hidden[index - 1]:
                out += MASK.encode("ascii")
        return bytes(out)

    def mask_status_line(self, line: bytes) -> bytes:
        """A ``-ERR`` line masked after its status and registered code, which are kept
        as sent: a password that happens to hold "TEMP" must not hide ``[SYS/TEMP]``."""
        match = _CODE.match(line)
        if match and response_code(line) in RESPONSE_CODES:
            head = match.group(0)
        else:
            head = b"-ERR" if line.startswith(b"-ERR") else b""
        return head + self.mask_bytes(line[len(head) :])

    def mask(self, text: str | bytes, limit: int | None = DEFAULT_LIMIT) -> str:
        """Remote text for a log line or an error: secrets masked, printable, bounded.

        The result never holds a run of ``min_run`` characters of a secret,
        even one formed by the masking, the printable form or the cut itself:
        those steps are repeated until nothing more is masked.
        """
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        if limit is not None:
            # Cutting first is safe (every run is masked wherever the text ends)
            # and keeps a megabyte of remote text from costing a megabyte of scan.
            raw = raw[: 4 * (limit + 16)]
        shown = _printable(self.mask_bytes(raw).decode("utf-8", "replace"))
        if limit is not None and len(shown) > limit:
            shown = shown[: max(0, limit - 3)] + "..."
        for _ in range(_MAX_PASSES):
            again = self.mask_bytes(shown.encode("utf-8")).decode("utf-8", "replace")
            if again == shown:
                return shown
            shown = again
        return MASK  # a text that keeps changing under the mask is not worth showing


def printable(raw: bytes, secrets: Iterable[str | bytes] = (), limit: int = 120) -> str:
    """Server bytes for an error message, masked with a one-off :class:`Redactor`."""
    return Redactor(secrets).mask(raw, limit)


def secret_values(data: object) -> tuple[str, ...]:
    """Every non-empty string held under a :data:`SECRET_FIELDS` name, at any depth, in
    the order found: in decoded JSON (dicts and lists) and in dataclasses alike."""
    found: dict[str, None] = {}  # ordered, without repeats
    _collect_secrets(data, found)
    return tuple(found)


def display_url(url: str) -> str:
    """A URL for a message: no user information, query or fragment (they may carry
    credentials or tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def response_code(response: bytes) -> str | None:
    """The RFC 2449 code in ``-ERR [CODE] text``, upper-cased, if any."""
    match = _CODE.match(response)
    return match.group(1).decode("ascii").upper() if match else None


def credential_refusal(line: bytes) -> bytes:
    """What may be kept of a server's ``-ERR`` to USER, PASS or AUTH: ``-ERR [CODE]``.

    The text after the code is dropped (it may echo the credential, cut or
    whole), and so is a code outside :data:`RESPONSE_CODES`.
    """
    code = response_code(line)
    return b"-ERR [" + code.encode("ascii") + b"]" if code in RESPONSE_CODES else b"-ERR"


def _forms(secrets: Iterable[str | bytes]) -> set[bytes]:
    forms: set[bytes] = set()
    for secret in secrets:
        if not secret:
            continue
        if isinstance(secret, bytes):
            forms.add(secret)
            continue
        forms.add(secret.encode("utf-8", "surrogatepass"))
        with contextlib.suppress(UnicodeEncodeError):
            forms.add(secret.encode("latin-1"))
        with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate has no URL form
            forms.add(urllib.parse.quote_plus(secret, safe="").encode("ascii"))
    return forms


def _collect_secrets(data: object, found: dict[str, None]) -> None:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = {field.name: getattr(data, field.name) for field in dataclasses.fields(data)}
    if isinstance(data, Mapping):
        for name, value in data.items():
            if isinstance(value, str) and str(name).lower() in SECRET_FIELDS:
                if value:
                    found[value] = None
            else:
                _collect_secrets(value, found)
    elif isinstance(data, list | tuple):
        for item in data:
            _collect_secrets(item, found)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " if c.isspace() else "?" for c in text).strip()
