"""OAuth2 access tokens for XOAUTH2 logins (Microsoft 365 app-only, Google).

Two grants are supported (RFC 6749):

- client credentials (``scope`` set, no ``refresh_token``): Microsoft 365
  app-only access, scope ``https://outlook.office365.com/.default``;
- refresh token (``refresh_token`` set, ``scope`` optional): Google, or a
  delegated Microsoft 365 grant.

The client authenticates with its ``client_secret`` (client_secret_post), or
with a certificate: a client assertion signed with its private key
(:mod:`pop3_ingest.integrations.client_assertion`), fresh for each request.

A refresh-token grant may answer with a new refresh token (Microsoft's
delegated tokens rotate on every use). It is kept as a :class:`Rotation`
until the caller, once the login with the new access token worked, takes it
(:func:`take_rotation`) and writes it back to the secret; the access token is
then cached under the new refresh token as well, so the secret read again
finds it.

Tokens are fetched with a form-encoded POST over verified TLS, cached per
process until shortly before they expire (Lambda reuses warm processes), and
never logged: neither the client secret, the refresh token nor an access
token ever appears in a repr or in an error message. The secret's ``auth``
object itself is :class:`pop3_ingest.config.OAuthSettings`.

The token URL is the tenant's input like the POP3 host: its host is resolved
once and held to the deployment's :class:`~pop3_ingest.netguard.AddressPolicy`,
and the request goes to the addresses checked (TLS verifies the host name),
directly: never through an HTTP(S)_PROXY, which would connect by name. Plain
``http://`` (a local test endpoint) is refused unless private hosts are allowed.
Redirects are never followed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pop3_ingest.config import OAuthSettings
from pop3_ingest.errors import AuthError, ConnectError, TlsError
from pop3_ingest.integrations.client_assertion import ASSERTION_TYPE, signed_assertion
from pop3_ingest.netguard import DEFAULT_ADDRESS_POLICY, Address, AddressPolicy, connect_tcp
from pop3_ingest.redaction import Redactor, display_url, secret_values
from pop3_ingest.tls import client_context

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# A cached token is used until this long before the endpoint said it expires.
EXPIRY_MARGIN_S = 60.0
_MAX_BODY = 1024 * 1024
# Longer than any provider's refresh token; a longer one is not written to a secret.
_MAX_REFRESH_TOKEN = 16 * 1024
# RFC 6750 b64token: what may follow "Bearer " (and so what may enter the XOAUTH2 string).
_BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_ENDPOINT_FIELD = "auth.token_url"
_REQUEST_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "User-Agent": "pop3-ingest",
}


def token_request_form(settings: OAuthSettings, *, now: float | None = None) -> dict[str, str]:
    """The token request body: client_secret_post, or a client assertion signed at ``now``."""
    data = {"grant_type": settings.grant_type, "client_id": settings.client_id}
    if settings.client_secret:
        data["client_secret"] = settings.client_secret
    if settings.client_assertion is not None:
        data["client_assertion_type"] = ASSERTION_TYPE
        data["client_assertion"] = signed_assertion(
            settings.client_assertion,
            client_id=settings.client_id,
            audience=settings.token_url,
            now=now,
        )
    if settings.refresh_token:
        data["refresh_token"] = settings.refresh_token
    if settings.scope:
        data["scope"] = settings.scope
    return data


_Key = tuple[str, str, str, str]


def _cache_key(settings: OAuthSettings, refresh_token: str | None = None) -> _Key:
    """What identifies a token: endpoint, client, scope and (a digest of) the refresh token
    (``refresh_token``, when given, instead of the settings' own)."""
    refresh = refresh_token or settings.refresh_token or ""
    digest = hashlib.sha256(refresh.encode("utf-8")).hexdigest() if refresh else ""
    return (settings.token_url, settings.client_id, settings.scope or "", digest)


# -- tokens -------------------------------------------------------------------


@dataclass(frozen=True)
class _CachedToken:
    value: str = field(repr=False)
    expires_at: float  # on the provider's clock; when to stop using it


@dataclass(frozen=True)
class Rotation:
    """The token endpoint replaced a refresh token: what holds ``old`` should hold ``new``."""

    token_url: str
    client_id: str
    old: str = field(repr=False)
    new: str = field(repr=False)


@dataclass(frozen=True)
class _Grant:
    """What one token request got: the access token, until when to use it (None: once),
    and the refresh token that replaced the settings' one, if the endpoint rotated it."""

    token: str = field(repr=False)
    expires_at: float | None
    rotated: str | None = field(default=None, repr=False)


_cache: dict[_Key, _CachedToken] = {}
_fetch_locks: dict[_Key, threading.Lock] = {}
_rotations: dict[_Key, Rotation] = {}
_cache_lock = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached token and rotation (tests; a rotated secret needs no call,
    its key differs)."""
    with _cache_lock:
        _cache.clear()
        _fetch_locks.clear()
        _rotations.clear()


def take_rotation(settings: OAuthSettings) -> Rotation | None:
    """The refresh token a token request for ``settings`` got in place of theirs, if any
    since the last call: handed out once, for the caller to write back."""
    with _cache_lock:
        return _rotations.pop(_cache_key(settings), None)


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to addresses already checked, never to the name looked up again."""

    def __init__(
        self, host: str, port: int, addresses: Sequence[Address], *, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = connect_tcp(self._addresses, self.timeout)


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to addresses already checked; the certificate is verified for ``host``."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: Sequence[Address],
        *,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls = context

    def connect(self) -> None:
        sock = connect_tcp(self._addresses, self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@dataclass(frozen=True)
class Reach:
    """How an OAuth endpoint is reached: within ``timeout``, over ``context`` (TLS; the
    system's trust by default), and only at addresses ``policy`` allows."""

    timeout: float
    context: ssl.SSLContext | None
    policy: AddressPolicy


def post_form(
    url: str, form: Mapping[str, str], reach: Reach, *, field: str = _ENDPOINT_FIELD
) -> tuple[int, bytes]:
    """POST ``form`` to ``url``, at the addresses ``reach.policy`` allowed (``field``
    names the URL in a refusal); the status and body as they came. A redirect is not
    followed: the credentials in the form go nowhere else."""
    parts = urllib.parse.urlsplit(url)
    connection = _connection(parts, reach, field)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        body = urllib.parse.urlencode(form).encode("ascii")
        connection.request("POST", target, body=body, headers=_REQUEST_HEADERS)
        response = connection.getresponse()
        return response.status, response.read(_MAX_BODY)
    finally:
        connection.close()


def _connection(
    url: urllib.parse.SplitResult, reach: Reach, field: str
) -> http.client.HTTPConnection:
    host = url.hostname or ""  # from_secret requires one
    if url.scheme != "https":
        reach.policy.check_plain_http(host, field)
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = reach.policy.addresses(host, port, field=field)
    if url.scheme != "https":
        return _CheckedHTTPConnection(host, port, addresses, timeout=reach.timeout)
    context = reach.context or _default_context()
    return _CheckedHTTPSConnection(host, port, addresses, timeout=reach.timeout, context=context)


class TokenProvider:
    """Access tokens for one ``OAuthSettings``, shared through a per-process cache.

    Thread-safe: concurrent callers for the same settings wait for one fetch.
    """

    def __init__(
        self,
        settings: OAuthSettings,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        context: ssl.SSLContext | None = None,
        address_policy: AddressPolicy = DEFAULT_ADDRESS_POLICY,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._reach = Reach(timeout, context, address_policy)
        self._key = _cache_key(settings)
        self._redactor = Redactor(settings.secret_values())

    def __repr__(self) -> str:
        return f"TokenProvider({self.settings!r})"

    def token(self) -> str:
        """A valid access token: from the cache, or fetched from the token endpoint."""
        cached = self._cached()
        if cached is not None:
            return cached
        with _cache_lock:
            fetch_lock = _fetch_locks.setdefault(self._key, threading.Lock())
        with fetch_lock:
            cached = self._cached()  # another thread may have fetched it meanwhile
            if cached is not None:
                return cached
            grant = self._fetch()
            with _cache_lock:
                kept = None
                if grant.expires_at is not None:
                    kept = _cache[self._key] = _CachedToken(grant.token, grant.expires_at)
                if grant.rotated is not None:
                    self._note_rotation(grant.rotated, kept)
            return grant.token

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token (only if it is ``token``, when given), e.g. after a refusal."""
        with _cache_lock:
            cached = _cache.get(self._key)
            if cached is not None and (token is None or cached.value == token):
                del _cache[self._key]

    def _cached(self) -> str | None:
        with _cache_lock:
            cached = _cache.get(self._key)
            if cached is None:
                return None
            if self._clock() < cached.expires_at:
                return cached.value
            del _cache[self._key]
            return None

    def _note_rotation(self, new: str, cached: _CachedToken | None) -> None:
        """Keep the rotation for :func:`take_rotation` (under ``_cache_lock``); the access
        token also answers for the new refresh token, which the secret will hold."""
        settings = self.settings
        _rotations[self._key] = Rotation(
            settings.token_url, settings.client_id, settings.refresh_token or "", new
        )
        if cached is not None:
            _cache[_cache_key(settings, new)] = cached

    # -- the HTTP exchange ----------------------------------------------------

    def _fetch(self) -> _Grant:
        settings = self.settings
        where = f"token endpoint {display_url(settings.token_url)}"
        started = self._clock()
        form = token_request_form(settings)
        # A client assertion is a credential too, for as long as it is valid.
        self._redactor = Redactor((*settings.secret_values(), form.get("client_assertion", "")))
        try:
            status, body = post_form(settings.token_url, form, self._reach)
        except (OSError, http.client.HTTPException) as exc:
            raise self._network_error(exc, where) from exc
        if status == 200:
            return self._parse_token(body, where, started)
        raise self._rejection(status, body, where)

    def _network_error(self, reason: object, where: str) -> Exception:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return TlsError(f"TLS certificate of {where} not trusted: {reason.verify_message}")
        if isinstance(reason, ssl.SSLError):
            return TlsError(f"TLS handshake with {where} failed: {reason.reason or reason}")
        if isinstance(reason, TimeoutError):
            return ConnectError(f"{where} did not answer within {self._reach.timeout:g}s")
        if isinstance(reason, OSError):
            text = reason.strerror or str(reason) or type(reason).__name__
        else:
            text = str(reason) or type(reason).__name__
        return ConnectError(f"cannot reach {where}: {self._redactor.mask(text, 300)}")

    def _rejection(self, status: int, body: bytes, where: str) -> Exception:
        error, description = oauth_error(body)
        detail = f"HTTP {status}"
        if error:
            detail += f" {self._redactor.mask(error, 60)}"
        if description:
            detail += f": {self._redactor.mask(description, 300)}"
        client = f"client {self.settings.client_id!r}"
        if status in (408, 429) or status >= 500:
            return ConnectError(f"{where} is unavailable for {client} ({detail}); try later")
        if 300 <= status < 400:
            return AuthError(
                f"{where} redirected the token request ({detail}); "
                "token_url must be the token endpoint itself"
            )
        if 400 <= status < 500:
            return AuthError(f"{where} rejected {client} ({detail})")
        return ConnectError(f"{where} answered unexpectedly for {client} ({detail})")

    def _parse_token(self, body: bytes, where: str, started: float) -> _Grant:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise AuthError(f"{where} answered HTTP 200 without a JSON token response")
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"{where} answered HTTP 200 without an access_token")
        token_type = data.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            # The tokens just issued are secrets too.
            issued = Redactor((*self.settings.secret_values(), *secret_values(data)))
            shown = issued.mask(str(token_type), 20)
            raise AuthError(f"{where} issued a {shown!r} token; XOAUTH2 needs a Bearer token")
        if not _BEARER_TOKEN.match(token):
            raise AuthError(f"{where} issued an access token that is not a valid bearer token")
        rotated = self._rotated(data.get("refresh_token"))
        expires_in = _seconds(data.get("expires_in"))
        if expires_in is None or expires_in <= EXPIRY_MARGIN_S:
            return _Grant(token, None, rotated)  # lifetime unknown or short: use it once
        return _Grant(token, started + expires_in - EXPIRY_MARGIN_S, rotated)

    def _rotated(self, offered: object) -> str | None:
        """The refresh token the endpoint sent in place of the settings' one, if it did
        and it can be stored (RFC 6749 section 6: it may, and the old one may stop working)."""
        current = self.settings.refresh_token
        if not current or not isinstance(offered, str) or not offered or offered == current:
            return None
        if len(offered) > _MAX_REFRESH_TOKEN or not offered.isprintable() or " " in offered:
            logger.warning(
                "the token endpoint sent a new refresh token that cannot be stored; "
                "the secret keeps its own",
                extra={"client_id": self.settings.client_id},
            )
            return None
        return offered


def _default_context() -> ssl.SSLContext:
    return client_context()


def oauth_error(body: bytes) -> tuple[str | None, str | None]:
    """``error`` and ``error_description`` of an RFC 6749 §5.2 error response, if any."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    error, description = data.get("error"), data.get("error_description")
    return (
        error if isinstance(error, str) and error else None,
        description if isinstance(description, str) and description else None,
    )


def _seconds(value: object) -> float | None:
    """``expires_in``: a number, or a numeric string as some endpoints send."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
