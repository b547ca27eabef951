"""OAuth2 access tokens for XOAUTH2 logins (Microsoft 365 app-only, Google).

Two grants are supported (RFC 6749):

- client credentials (``scope`` set, no ``refresh_token``): Microsoft 365
  app-only access, scope ``https://outlook.office365.com/.default``;
- refresh token (``refresh_token`` set, ``scope`` optional): Google, or a
  delegated Microsoft 365 grant.

Tokens are fetched with a form-encoded POST over verified TLS, cached per
process until shortly before they expire (Lambda reuses warm processes), and
never logged: neither the client secret, the refresh token nor an access
token ever appears in a repr or in an error message.
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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pop3_ingest.errors import AuthError, ConnectError, SecretError, TlsError
from pop3_ingest.redaction import Redactor

MICROSOFT_365_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105  # nosec B105

DEFAULT_TIMEOUT_S = 10.0
# A cached token is used until this long before the endpoint said it expires.
EXPIRY_MARGIN_S = 60.0
_MAX_BODY = 1024 * 1024
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_FIELDS = ("type", "token_url", "client_id", "client_secret", "scope", "refresh_token")
# RFC 6750 b64token: what may follow "Bearer " (and so what may enter the XOAUTH2 string).
_BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


@dataclass(frozen=True, repr=False)
class OAuthSettings:
    """Where and how to get an access token; the ``auth`` object of the mailbox secret."""

    token_url: str
    client_id: str
    client_secret: str | None = None
    scope: str | None = None
    refresh_token: str | None = None

    def __post_init__(self) -> None:
        if not self.scope and not self.refresh_token:
            raise ValueError("OAuthSettings needs a scope (client credentials) or a refresh_token")
        if not self.refresh_token and not self.client_secret:
            raise ValueError("the client-credentials grant needs a client_secret")

    @property
    def grant_type(self) -> str:
        return "refresh_token" if self.refresh_token else "client_credentials"

    def __repr__(self) -> str:
        # Secrets stay out of every log line that formats this object.
        return (
            f"OAuthSettings(token_url={_display_url(self.token_url)!r}, "
            f"client_id={self.client_id!r}, grant_type={self.grant_type!r}, scope={self.scope!r})"
        )

    def cache_key(self) -> tuple[str, str, str, str]:
        """What identifies a token: endpoint, client, scope and (a digest of) the refresh token."""
        refresh = (
            hashlib.sha256(self.refresh_token.encode("utf-8")).hexdigest()
            if self.refresh_token
            else ""
        )
        return (self.token_url, self.client_id, self.scope or "", refresh)

    def form(self) -> dict[str, str]:
        """The token request body (client_secret_post client authentication)."""
        data = {"grant_type": self.grant_type, "client_id": self.client_id}
        if self.client_secret:
            data["client_secret"] = self.client_secret
        if self.refresh_token:
            data["refresh_token"] = self.refresh_token
        if self.scope:
            data["scope"] = self.scope
        return data

    def secret_values(self) -> tuple[str, ...]:
        """The values that must never appear in an error message."""
        return tuple(v for v in (self.client_secret, self.refresh_token) if v)

    @classmethod
    def from_secret(cls, data: object, prefix: str = "auth") -> OAuthSettings:
        """Validate the secret's OAuth2 object; errors name the field as ``<prefix>.<field>``.

        Values are never echoed in an error (they may be secrets).
        """

        def name(field_name: str) -> str:
            return f"{prefix}.{field_name}" if prefix else field_name

        if not isinstance(data, Mapping):
            raise SecretError(
                f"mailbox secret field '{prefix or 'auth'}' must be a JSON object, "
                f"got {type(data).__name__}",
                prefix or None,
            )
        unknown = sorted(str(k) for k in data if k not in _FIELDS)
        if unknown:
            shown = ", ".join(name(k[:40]) for k in unknown)
            raise SecretError(
                f"mailbox secret has unknown field(s): {shown} "
                f"(allowed: {', '.join(name(f) for f in _FIELDS)})",
                name(unknown[0]),
            )
        kind = _string(data, "type", name, required=False)
        if kind is not None and kind != "oauth2":
            raise SecretError(
                f"mailbox secret field '{name('type')}' must be \"oauth2\" (or left out)",
                name("type"),
            )
        token_url = _string(data, "token_url", name, required=True)
        assert token_url is not None
        _check_token_url(token_url, name("token_url"))
        client_id = _string(data, "client_id", name, required=True)
        assert client_id is not None
        scope = _string(data, "scope", name, required=False)
        refresh_token = _string(data, "refresh_token", name, required=False)
        client_secret = _string(data, "client_secret", name, required=refresh_token is None)
        if scope is None and refresh_token is None:
            raise SecretError(
                f"mailbox secret field '{name('scope')}' or '{name('refresh_token')}' is "
                f"required: a scope for the client-credentials grant (Microsoft 365 app-only: "
                f"{MICROSOFT_365_SCOPE}), or a refresh token (Google)",
                name("scope"),
            )
        return cls(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            refresh_token=refresh_token,
        )


def _string(
    data: Mapping[Any, Any], key: str, name: Callable[[str], str], *, required: bool
) -> str | None:
    if key not in data or data[key] is None:
        if required:
            raise SecretError(f"mailbox secret is missing required field '{name(key)}'", name(key))
        return None
    value = data[key]
    if not isinstance(value, str):
        raise SecretError(
            f"mailbox secret field '{name(key)}' must be a string, got {type(value).__name__}",
            name(key),
        )
    if not value.strip():
        raise SecretError(f"mailbox secret field '{name(key)}' must not be empty", name(key))
    if any(not c.isprintable() for c in value):
        # Said without echoing the value: it may be a secret.
        raise SecretError(
            f"mailbox secret field '{name(key)}' must not contain line breaks or control "
            "characters",
            name(key),
        )
    return value


def _check_token_url(url: str, field_name: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SecretError(
            f"mailbox secret field '{field_name}' is not a valid URL", field_name
        ) from None
    if not host:
        raise SecretError(f"mailbox secret field '{field_name}' needs a host name", field_name)
    if parts.username is not None or parts.password is not None:
        raise SecretError(
            f"mailbox secret field '{field_name}' must not carry credentials; "
            "use client_id and client_secret",
            field_name,
        )
    if parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK_HOSTS):
        return
    raise SecretError(
        f"mailbox secret field '{field_name}' must be an https:// URL "
        "(plain http only to 127.0.0.1, ::1 or localhost)",
        field_name,
    )


def _display_url(url: str) -> str:
    """The URL without query or fragment, for messages."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token request is never re-sent elsewhere: a redirect is an error."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


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
    ) -> None:
        self.settings = settings
        self._timeout = timeout
        self._clock = clock
        self._context = context
        self._key = settings.cache_key()

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
        where = f"token endpoint {_display_url(settings.token_url)}"
        started = self._clock()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in from_secret
            settings.token_url,
            data=urllib.parse.urlencode(settings.form()).encode("ascii"),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": "pop3-ingest",
            },
        )
        try:
            with self._opener().open(request, timeout=self._timeout) as response:
                status = int(response.status)
                body = response.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:
            status = exc.code
            body = _read_quietly(exc)
        except urllib.error.URLError as exc:
            raise self._network_error(exc.reason, where) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._network_error(exc, where) from exc

        if status == 200:
            return self._parse_token(body, where, started)
        raise self._rejection(status, body, where)

    def _opener(self) -> urllib.request.OpenerDirector:
        context = self._context or _default_context()
        handlers: list[urllib.request.BaseHandler] = [
            _NoRedirect(),
            urllib.request.HTTPSHandler(context=context),
        ]
        host = urllib.parse.urlsplit(self.settings.token_url).hostname
        if host in _LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))  # loopback never via a proxy
        return urllib.request.build_opener(*handlers)

    def _network_error(self, reason: object, where: str) -> Exception:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return TlsError(f"TLS certificate of {where} not trusted: {reason.verify_message}")
        if isinstance(reason, ssl.SSLError):
            return TlsError(f"TLS handshake with {where} failed: {reason.reason or reason}")
        if isinstance(reason, TimeoutError):
            return ConnectError(f"{where} did not answer within {self._timeout:g}s")
        if isinstance(reason, OSError):
            text = reason.strerror or str(reason) or type(reason).__name__
        else:
            text = str(reason) or type(reason).__name__
        return ConnectError(f"cannot reach {where}: {self._clean(text)}")

    def _rejection(self, status: int, body: bytes, where: str) -> Exception:
        error, description = _oauth_error(body)
        detail = f"HTTP {status}"
        if error:
            detail += f" {self._clean(error, 60)}"
        if description:
            detail += f": {self._clean(description)}"
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
        secrets = (token,)
        token_type = data.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = self._clean(str(token_type), 20, extra=secrets)
            raise AuthError(f"{where} issued a {shown!r} token; XOAUTH2 needs a Bearer token")
        if not _BEARER_TOKEN.match(token):
            raise AuthError(f"{where} issued an access token that is not a valid bearer token")
        expires_in = _seconds(data.get("expires_in"))
        if expires_in is None or expires_in <= EXPIRY_MARGIN_S:
            return token, None  # lifetime unknown or short: use it once, do not cache
        return token, started + expires_in - EXPIRY_MARGIN_S

    def _clean(self, text: str, limit: int = 300, extra: Iterable[str] = ()) -> str:
        """The token endpoint's text for an error: every run of a secret masked
        (also URL-encoded, as the form carried it), printable, bounded."""
        return Redactor((*self.settings.secret_values(), *extra)).mask(text, limit)


def _default_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(_MAX_BODY)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        exc.close()


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
