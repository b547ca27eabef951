"""A loopback OAuth2 server: token endpoint plus token introspection, for Dovecot.

One HTTP server on 127.0.0.1 serves

- ``POST /token`` (RFC 6749): the client-credentials grant (Microsoft 365
  app-only style) and the refresh-token grant (Google style). Each grant is
  tied to one mailbox user; the endpoint issues a random access token with
  ``expires_in``. Wrong client credentials get ``401 invalid_client``, an
  unknown refresh token ``400 invalid_grant``;
- ``POST /introspect`` (RFC 7662, what Dovecot's ``oauth2`` passdb calls with
  ``introspection_mode = post``): ``{"active": true, "username": ...}`` for a
  token it issued that has not expired or been revoked, ``{"active": false}``
  otherwise.

``oauth_dovecot(make_dovecot, oauth)`` starts a ``DovecotServer`` whose second
passdb checks XOAUTH2/OAUTHBEARER tokens against this server (FIELD-NOTES).
It does not import ``pop3_ingest``.
"""

from __future__ import annotations

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

    def _handle_token(self, form: dict[str, str]) -> tuple[int, bytes | dict[str, Any]]:
        with self._lock:
            self.token_requests.append(dict(form))
            canned = self._canned.pop(0) if self._canned else None
        if self.token_delay_s:
            time.sleep(self.token_delay_s)
        if canned is not None:
            return canned.status, canned.body
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client = self.clients.get(form.get("client_id", ""))
            if client is None or form.get("client_secret") != client.client_secret:
                return 401, {
                    "error": "invalid_client",
                    "error_description": "client authentication failed",
                }
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
                or form.get("client_secret") != client.client_secret
            ):
                return 401, {
                    "error": "invalid_client",
                    "error_description": "client authentication failed",
                }
        else:
            return 400, {"error": "unsupported_grant_type"}
        lifetime = self.expires_in
        try:
            valid_for = float(lifetime) if lifetime is not None else DEFAULT_EXPIRES_IN
        except ValueError:  # a deliberately malformed expires_in
            valid_for = DEFAULT_EXPIRES_IN
        token = self.issue(client.username, client.client_id, valid_for)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if lifetime is not None:
            body["expires_in"] = lifetime
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
