"""OAuth2 access tokens for XOAUTH2 logins (Microsoft 365 app-only, Google).

Two grants are supported (RFC 6749):

- client credentials (``scope`` set, no ``refresh_token``): Microsoft 365
  app-only access, scope ``https://outlook.office365.com/.default``;
- refresh token (``refresh_token`` set, ``scope`` optional): Google, or a
  delegated Microsoft 365 grant.

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
import math
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pop3_ingest.config import OAuthSettings
from pop3_ingest.errors import AuthError, ConnectError, TlsError
from pop3_ingest.netguard import DEFAULT_ADDRESS_POLICY, Address, AddressPolicy, connect_tcp
from pop3_ingest.redaction import Redactor, display_url

DEFAULT_TIMEOUT_S = 10.0
# A cached token is used until this long before the endpoint said it expires.
EXPIRY_MARGIN_S = 60.0
_MAX_BODY = 1024 * 1024
# RFC 6750 b64token: what may follow "Bearer " (and so what may enter the XOAUTH2 string).
_BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_ENDPOINT_FIELD = "auth.token_url"
_REQUEST_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "User-Agent": "pop3-ingest",
}


def token_request_form(settings: OAuthSettings) -> dict[str, str]:
    """The token request body (client_secret_post client authentication)."""
    data = {"grant_type": settings.grant_type, "client_id": settings.client_id}
    if settings.client_secret:
        data["client_secret"] = settings.client_secret
    if settings.refresh_token:
        data["refresh_token"] = settings.refresh_token
    if settings.scope:
        data["scope"] = settings.scope
    return data


def _cache_key(settings: OAuthSettings) -> tuple[str, str, str, str]:
    """What identifies a token: endpoint, client, scope and (a digest of) the refresh token."""
    refresh = settings.refresh_token or ""
    digest = hashlib.sha256(refresh.encode("utf-8")).hexdigest() if refresh else ""
    return (settings.token_url, settings.client_id, settings.scope or "", digest)


# -- tokens -------------------------------------------------------------------


@dataclass(frozen=True)
class _CachedToken:
    value: str = field(repr=False)
    expires_at: float  # on the provider's clock; when to stop using it


_cache: dict[tuple[str, str, str, str], _CachedToken] = {}
_fetch_locks: dict[tuple[str, str, str, str], threading.Lock] = {}
_cache_lock = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached token (tests; a rotated secret needs no call, its key differs)."""
    with _cache_lock:
        _cache.clear()
        _fetch_locks.clear()


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
class _Reach:
    """How the token endpoint is reached: within ``timeout``, over ``context`` (TLS),
    and only at addresses ``policy`` allows."""

    timeout: float
    context: ssl.SSLContext | None
    policy: AddressPolicy


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
        self._reach = _Reach(timeout, context, address_policy)
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
            value, expires_at = self._fetch()
            if expires_at is not None:
                with _cache_lock:
                    _cache[self._key] = _CachedToken(value, expires_at)
            return value

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

    # -- the HTTP exchange ----------------------------------------------------

    def _fetch(self) -> tuple[str, float | None]:
        settings = self.settings
        where = f"token endpoint {display_url(settings.token_url)}"
        started = self._clock()
        form = urllib.parse.urlencode(token_request_form(settings)).encode("ascii")
        try:
            status, body = self._post(form)
        except (OSError, http.client.HTTPException) as exc:
            raise self._network_error(exc, where) from exc
        if status == 200:
            return self._parse_token(body, where, started)
        raise self._rejection(status, body, where)

    def _post(self, form: bytes) -> tuple[int, bytes]:
        """The token request, to the addresses the policy allowed; the answer as it
        came (a redirect is not followed: the client secret goes nowhere else)."""
        url = urllib.parse.urlsplit(self.settings.token_url)
        connection = self._connection(url)
        try:
            target = url.path or "/"
            if url.query:
                target += "?" + url.query
            connection.request("POST", target, body=form, headers=_REQUEST_HEADERS)
            response = connection.getresponse()
            return response.status, response.read(_MAX_BODY)
        finally:
            connection.close()

    def _connection(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host = url.hostname or ""  # from_secret requires one
        policy = self._reach.policy
        if url.scheme != "https":
            policy.check_plain_http(host, _ENDPOINT_FIELD)
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = policy.addresses(host, port, field=_ENDPOINT_FIELD)
        if url.scheme != "https":
            return _CheckedHTTPConnection(host, port, addresses, timeout=self._reach.timeout)
        context = self._reach.context or _default_context()
        return _CheckedHTTPSConnection(
            host, port, addresses, timeout=self._reach.timeout, context=context
        )

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
        error, description = _oauth_error(body)
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

    def _parse_token(self, body: bytes, where: str, started: float) -> tuple[str, float | None]:
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
            # The token just issued is a secret too.
            shown = Redactor((*self.settings.secret_values(), token)).mask(str(token_type), 20)
            raise AuthError(f"{where} issued a {shown!r} token; XOAUTH2 needs a Bearer token")
        if not _BEARER_TOKEN.match(token):
            raise AuthError(f"{where} issued an access token that is not a valid bearer token")
        expires_in = _seconds(data.get("expires_in"))
        if expires_in is None or expires_in <= EXPIRY_MARGIN_S:
            return token, None  # lifetime unknown or short: use it once, do not cache
        return token, started + expires_in - EXPIRY_MARGIN_S


def _default_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _oauth_error(body: bytes) -> tuple[str | None, str | None]:
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
