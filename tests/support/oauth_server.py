"""A loopback OAuth2 server: token endpoint plus token introspection, for Dovecot.

One HTTP server on 127.0.0.1 serves

- ``POST /token`` (RFC 6749): the client-credentials grant (Microsoft 365
  app-only style) and the refresh-token grant (Google style). Each grant is
  tied to one mailbox user; the endpoint issues a random access token with
  ``expires_in``. Wrong client credentials get ``401 invalid_client``, an
  unknown refresh token ``400 invalid_grant``. A client may authenticate with
  a certificate instead of a secret (RFC 7523 client assertion): the server
  checks the JWT's RS256 signature with the client's public key, its header's
  thumbprint and its claims (``aud``, ``iss``, ``sub``, ``nbf``/``exp``, a
  ``jti`` never seen before). ``refresh_rotation`` makes refresh grants answer
  with a new refresh token (``"rotate"``, Microsoft style: the old one stays
  valid) or the same one again (``"same"``);
- ``POST /device`` and the device-code grant on ``/token`` (RFC 8628): each
  poll of a device code gets the next of its scripted answers
  (:meth:`OAuthTestServer.add_device_client`);
- ``POST /introspect`` (RFC 7662, what Dovecot's ``oauth2`` passdb calls with
  ``introspection_mode = post``): ``{"active": true, "username": ...}`` for a
  token it issued that has not expired or been revoked, ``{"active": false}``
  otherwise.

``oauth_dovecot(make_dovecot, oauth)`` starts a ``DovecotServer`` whose second
passdb checks XOAUTH2/OAUTHBEARER tokens against this server (FIELD-NOTES).
It does not import ``pop3_ingest``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import socketserver
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.background import HOST, SocketServerThread

if TYPE_CHECKING:
    from tests.support.dovecot import DovecotServer

DEFAULT_EXPIRES_IN = 3600
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# The longest client assertion accepted (Microsoft: 10 minutes), and the clock skew allowed.
MAX_ASSERTION_LIFETIME_S = 600
SKEW_S = 60


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str = field(repr=False)
    username: str
    scope: str | None  # None: any scope is accepted


@dataclass
class Issued:
    username: str
    client_id: str
    expires_at: float  # time.monotonic()
    revoked: bool = False


@dataclass(frozen=True)
class CertificateClient:
    """A client that signs assertions; ``thumbprint`` is the header it must name it by."""

    client_id: str
    public_key: Any  # cryptography's RSAPublicKey
    thumbprint: dict[str, str]
    username: str
    scope: str | None


@dataclass
class DeviceClient:
    client_id: str
    username: str
    answers: tuple[str, ...]
    interval: int | None
    expires_in: int
    client_secret: str | None
    uri_field: str
    refusal: str | None = None


@dataclass
class DeviceCode:
    client: DeviceClient
    answers: list[str]


@dataclass(frozen=True)
class CannedResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


class OAuthTestServer(SocketServerThread):
    """Token and introspection endpoint on 127.0.0.1 (``with OAuthTestServer() as oauth:``)."""

    thread_name = "oauth-test-server"

    def __init__(self, *, expires_in: int | str | None = DEFAULT_EXPIRES_IN) -> None:
        super().__init__()
        self.expires_in = expires_in  # None: leave expires_in out of the response
        self.token_delay_s = 0.0  # sleep before answering /token (timeout tests)
        self.clients: dict[str, Client] = {}
        self.refresh_tokens: dict[str, Client] = {}
        self.issued: dict[str, Issued] = {}
        self.token_requests: list[dict[str, str]] = []
        self.certificate_clients: dict[str, CertificateClient] = {}
        # Every assertion presented, decoded: {"header": ..., "claims": ...}.
        self.assertions: list[dict[str, Any]] = []
        self._seen_jti: set[str] = set()
        self.refresh_rotation: str | None = None  # None, "rotate" or "same"
        self.issued_refresh_tokens: list[str] = []
        self.device_clients: dict[str, DeviceClient] = {}
        self.device_codes: dict[str, DeviceCode] = {}
        self.device_requests: list[dict[str, str]] = []
        self.introspections: list[str] = []
        self._canned: list[CannedResponse] = []
        self._lock = threading.Lock()
        self.dir = Path(tempfile.mkdtemp(prefix="pop3-ingest-oauth-"))
        self.dir.chmod(0o755)  # Dovecot's auth process reads the passdb args file here

    # -- set-up ----------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        username: str,
        scope: str | None = None,
    ) -> None:
        """A client-credentials client whose tokens log in as ``username``."""
        self.clients[client_id] = Client(client_id, client_secret, username, scope)

    def add_refresh_token(
        self, refresh_token: str, client_id: str, client_secret: str, username: str
    ) -> None:
        """A refresh token (of a registered or new client) whose tokens log in as ``username``."""
        self.refresh_tokens[refresh_token] = Client(client_id, client_secret, username, None)

    def add_certificate_client(
        self,
        client_id: str,
        public_key: Any,
        thumbprint: dict[str, str],
        username: str,
        scope: str | None = None,
    ) -> None:
        """A client-credentials client that authenticates with a client assertion."""
        self.certificate_clients[client_id] = CertificateClient(
            client_id, public_key, thumbprint, username, scope
        )

    def add_device_client(
        self,
        client_id: str,
        username: str,
        answers: tuple[str, ...] = ("approve",),
        *,
        interval: int | None = 0,
        expires_in: int = 600,
        client_secret: str | None = None,
        uri_field: str = "verification_uri",
        refusal: str | None = None,
    ) -> None:
        """A client of the device flow. Each poll of its device code gets the next of
        ``answers`` ("pending", "slow_down", "denied", "expired", "approve", "no_refresh"),
        then "pending" when they run out; "approve" issues a refresh token for
        ``username``. ``interval`` None leaves it out of the device endpoint's answer;
        ``refusal`` makes the device endpoint answer 400 with that error instead."""
        self.device_clients[client_id] = DeviceClient(
            client_id, username, answers, interval, expires_in, client_secret, uri_field, refusal
        )

    def respond_next(self, status: int, body: bytes | dict[str, Any], times: int = 1) -> None:
        """Answer the next ``times`` token requests with this instead of a token."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        with self._lock:
            self._canned.extend([CannedResponse(status, raw)] * times)

    def issue(self, username: str, client_id: str = "direct", expires_in: float = 3600) -> str:
        """A valid token for ``username`` without going through /token."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.issued[token] = Issued(username, client_id, time.monotonic() + expires_in)
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            if token in self.issued:
                self.issued[token].revoked = True

    def active(self, token: str) -> Issued | None:
        with self._lock:
            grant = self.issued.get(token)
        if grant is None or grant.revoked or time.monotonic() >= grant.expires_at:
            return None
        return grant

    # -- endpoints -------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    @property
    def device_url(self) -> str:
        return f"{self.url}/device"

    def _handle_token(self, form: dict[str, str]) -> tuple[int, bytes | dict[str, Any]]:
        with self._lock:
            self.token_requests.append(dict(form))
            canned = self._canned.pop(0) if self._canned else None
        if self.token_delay_s:
            time.sleep(self.token_delay_s)
        if canned is not None:
            return canned.status, canned.body
        grant = form.get("grant_type")
        if grant == DEVICE_GRANT:
            return self._handle_device_poll(form)
        if grant == "client_credentials":
            client = self._authenticated_client(form)
            if isinstance(client, str):
                return 401, {"error": "invalid_client", "error_description": client}
            if client.scope is not None and form.get("scope") != client.scope:
                return 400, {
                    "error": "invalid_scope",
                    "error_description": f"scope must be {client.scope}",
                }
        elif grant == "refresh_token":
            client = self.refresh_tokens.get(form.get("refresh_token", ""))
            if client is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "refresh token unknown or revoked",
                }
            if (
                form.get("client_id") != client.client_id
                or (form.get("client_secret") or "") != client.client_secret
            ):
                return 401, {
                    "error": "invalid_client",
                    "error_description": "client authentication failed",
                }
        else:
            return 400, {"error": "unsupported_grant_type"}
        return 200, self._token_response(client, form)

    def _token_response(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        lifetime = self.expires_in
        try:
            valid_for = float(lifetime) if lifetime is not None else DEFAULT_EXPIRES_IN
        except ValueError:  # a deliberately malformed expires_in
            valid_for = DEFAULT_EXPIRES_IN
        token = self.issue(client.username, client.client_id, valid_for)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if lifetime is not None:
            body["expires_in"] = lifetime
        if form.get("grant_type") == "refresh_token" and self.refresh_rotation == "rotate":
            body["refresh_token"] = self._new_refresh_token(client)
        elif form.get("grant_type") == "refresh_token" and self.refresh_rotation == "same":
            body["refresh_token"] = form["refresh_token"]
        return body

    def _new_refresh_token(self, client: Client) -> str:
        """A refresh token for ``client``'s user; the ones issued before stay valid."""
        token = "0.rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self.refresh_tokens[token] = client
            self.issued_refresh_tokens.append(token)
        return token

    def _authenticated_client(self, form: dict[str, str]) -> Client | str:
        """The client-credentials client the form authenticates, or why it does not."""
        client_id = form.get("client_id", "")
        if "client_assertion" in form or "client_assertion_type" in form:
            why = self._assertion_problem(form, client_id)
            if why is not None:
                return why
            cert = self.certificate_clients[client_id]
            return Client(client_id, "", cert.username, cert.scope)
        client = self.clients.get(client_id)
        if client is None or form.get("client_secret") != client.client_secret:
            return "client authentication failed"
        return client

    def _assertion_problem(self, form: dict[str, str], client_id: str) -> str | None:
        """Why the client assertion does not authenticate ``client_id``; None if it does."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        cert = self.certificate_clients.get(client_id)
        if cert is None or form.get("client_assertion_type") != ASSERTION_TYPE:
            return "unknown client, or not a jwt-bearer client assertion"
        try:
            head, body, signature = form.get("client_assertion", "").split(".")
            header, claims = json.loads(_b64(head)), json.loads(_b64(body))
        except ValueError:
            return "the client assertion is not a compact JWS"
        with self._lock:
            self.assertions.append({"header": header, "claims": claims})
        if header.get("alg") != "RS256" or header.get("typ") != "JWT":
            return "the assertion must be an RS256 JWT"
        if {k: v for k, v in header.items() if k.startswith("x5t")} != cert.thumbprint:
            return "the assertion names another certificate"
        try:
            cert.public_key.verify(
                _b64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "the assertion's signature does not verify"
        return self._claims_problem(claims, client_id)

    def _claims_problem(self, claims: dict[str, Any], client_id: str) -> str | None:
        now = time.time()
        if claims.get("aud") != self.token_url:
            return "aud must be the token URL"
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return "iss and sub must be the client id"
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if (
            not isinstance(nbf, int)
            or not isinstance(exp, int)
            or exp - nbf > MAX_ASSERTION_LIFETIME_S
        ):
            return "nbf and exp must be numbers at most 10 minutes apart"
        if not nbf - SKEW_S <= now < exp:
            return "the assertion is not valid now"
        jti = claims.get("jti")
        with self._lock:
            if not isinstance(jti, str) or not jti or jti in self._seen_jti:
                return "jti missing or seen before"
            self._seen_jti.add(jti)
        return None

    # -- the device flow (RFC 8628) ---------------------------------------------

    def _handle_device(self, form: dict[str, str]) -> tuple[int, bytes | dict[str, Any]]:
        with self._lock:
            self.device_requests.append(dict(form))
        client = self.device_clients.get(form.get("client_id", ""))
        if client is None:
            return 400, {"error": "invalid_client", "error_description": "unknown client"}
        if not form.get("scope"):
            return 400, {"error": "invalid_request", "error_description": "scope missing"}
        if client.refusal is not None:
            return 400, {"error": client.refusal, "error_description": f"refused: {form['scope']}"}
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.device_codes[code] = DeviceCode(client, list(client.answers))
        body: dict[str, Any] = {
            "device_code": code,
            "user_code": "WDJB-MJHT",
            client.uri_field: f"{self.url}/verify",
            "expires_in": client.expires_in,
        }
        if client.interval is not None:
            body["interval"] = client.interval
        return 200, body

    def _handle_device_poll(self, form: dict[str, str]) -> tuple[int, bytes | dict[str, Any]]:
        with self._lock:
            grant = self.device_codes.get(form.get("device_code", ""))
            answer = grant.answers.pop(0) if grant is not None and grant.answers else "pending"
        if grant is None:
            return 400, {"error": "invalid_grant", "error_description": "unknown device code"}
        client = grant.client
        if form.get("client_id") != client.client_id or form.get("client_secret") != (
            client.client_secret
        ):
            return 401, {"error": "invalid_client", "error_description": "client unknown"}
        errors = {
            "pending": "authorization_pending",
            "slow_down": "slow_down",
            "denied": "access_denied",
            "expired": "expired_token",
        }
        if answer in errors:
            return 400, {"error": errors[answer], "error_description": f"device flow: {answer}"}
        owner = Client(client.client_id, client.client_secret or "", client.username, None)
        body = self._token_response(owner, {"grant_type": DEVICE_GRANT})
        if answer == "approve":
            body["refresh_token"] = self._new_refresh_token(owner)
        return 200, body

    def _handle_introspect(self, form: dict[str, str]) -> tuple[int, bytes | dict[str, Any]]:
        token = form.get("token", "")
        with self._lock:
            self.introspections.append(token)
        grant = self.active(token)
        if grant is None:
            return 200, {"active": False}
        return 200, {"active": True, "username": grant.username, "client_id": grant.client_id}

    # -- life cycle ------------------------------------------------------------

    def make_server(self) -> socketserver.TCPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                form = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
                status, body = owner.answer(self.path.split("?", 1)[0], form)
                data = json.dumps(body).encode() if isinstance(body, dict) else body
                with contextlib.suppress(OSError):  # the client may have timed out
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        httpd = ThreadingHTTPServer((HOST, 0), Handler)
        httpd.daemon_threads = True
        return httpd

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, bytes | dict[str, Any]]:
        """Status and body for a POST to ``path`` with this form."""
        if path == "/token":
            return self._handle_token(form)
        if path == "/introspect":
            return self._handle_introspect(form)
        if path == "/device":
            return self._handle_device(form)
        return 404, {"error": "not_found"}

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- Dovecot -----------------------------------------------------------------

    def dovecot_config(self) -> str:
        """``extra_config`` for a DovecotServer: XOAUTH2/OAUTHBEARER checked against us.

        Writes the oauth2 passdb's args file into this server's directory.
        """
        args = self.dir / "dovecot-oauth2.conf.ext"
        args.write_text(
            "introspection_mode = post\n"
            f"introspection_url = {self.introspection_url}\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )
        args.chmod(0o644)
        return "\n".join(
            [
                "# OAuth2 (tests/support/oauth_server.py)",
                "auth_mechanisms = plain login xoauth2 oauthbearer",
                "passdb {",
                "  driver = oauth2",
                "  mechanisms = xoauth2 oauthbearer",
                f"  args = {args}",
                "}",
            ]
        )


def oauth_dovecot(
    make_dovecot: Callable[..., DovecotServer], oauth: OAuthTestServer, **options: Any
) -> DovecotServer:
    """A started DovecotServer (via the ``make_dovecot`` fixture) that accepts our tokens."""
    extra = options.pop("extra_config", "")
    config = oauth.dovecot_config() + ("\n" + extra if extra else "")
    return make_dovecot(extra_config=config, **options)


def _b64(text: str) -> bytes:
    """Base64url without padding, decoded."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
