"""From nothing to a logged-in connection: connect, TLS, CAPA, and the login.

The secret's host is resolved once and its addresses checked against the
deployment's :class:`~pop3_ingest.netguard.AddressPolicy` before any connect;
the connection goes to those addresses, and TLS verifies the host name.

TLS is implicit (from the first byte), STARTTLS (RFC 2595) or none. With
STARTTLS the wire carries CAPA, STLS, then CAPA again under TLS, as the
capabilities may change; a server that does not offer STLS is refused before
any credential is sent. The login is USER/PASS, AUTH PLAIN or AUTH XOAUTH2
(:mod:`pop3_ingest.pop3.auth`), as the secret and CAPA say. Nothing of a
server's answer to a credential is kept but a registered response code.
"""

from __future__ import annotations

import contextlib
import poplib
import ssl

from pop3_ingest.config import MailboxConfig, TlsMode
from pop3_ingest.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    Pop3Error,
    TlsError,
)
from pop3_ingest.integrations.oauth_tokens import TokenProvider
from pop3_ingest.netguard import AddressPolicy
from pop3_ingest.pop3.auth import (
    SaslRejected,
    auth_plain,
    auth_xoauth2,
    plain_response,
    supported_mechanisms,
    xoauth2_response,
)
from pop3_ingest.pop3.connection import Pop3Connection, refusal_text
from pop3_ingest.pop3.limits import TransferLimits
from pop3_ingest.pop3.listing import BUSY_CODES
from pop3_ingest.redaction import credential_refusal, response_code
from pop3_ingest.tls import client_context

Capabilities = dict[str, list[str]]


class SessionSecrets:
    """What no error message of one session may show, for pop3_ingest.redaction to mask:
    the password, the OAuth2 secrets, the access token once fetched, and the
    base64 SASL strings that carry them (a server may echo any of them)."""

    def __init__(self, config: MailboxConfig) -> None:
        self._config = config
        # Empty until the OAuth2 access token of this session is fetched.
        self.token = ""  # nosec B105

    def __call__(self) -> tuple[str | bytes, ...]:
        cfg = self._config
        values: list[str | bytes] = [*cfg.secret_values(), self.token]
        if cfg.password:
            with contextlib.suppress(ValueError):
                values.append(plain_response(cfg.username, cfg.password))
        if self.token:
            with contextlib.suppress(ValueError):
                values.append(xoauth2_response(cfg.username, self.token))
        return tuple(value for value in values if value)


def tls_context(config: MailboxConfig) -> ssl.SSLContext:
    """Certificates verified (against the secret's ``ca_cert`` too, if given), TLS 1.2
    or later; one context per CA set for the whole process (:mod:`pop3_ingest.tls`)."""
    try:
        return client_context(config.ca_cert or None)
    except ssl.SSLError as exc:
        raise TlsError(f"ca_cert from the secret is not a usable certificate: {exc}") from exc


def connect(
    config: MailboxConfig,
    limits: TransferLimits,
    secrets: SessionSecrets,
    address_policy: AddressPolicy,
) -> Pop3Connection:
    """The host resolved and checked, then TCP, TLS when implicit, and the greeting;
    any failure is a ConnectError (AddressRefused for a host the policy refuses),
    a TlsError, or MailboxBusy when the greeting says so."""
    where = f"{config.host}:{config.port}"
    context = tls_context(config) if config.tls is TlsMode.IMPLICIT else None
    try:
        addresses = address_policy.addresses(config.host, config.port, field="host")
        return Pop3Connection(
            config.host,
            config.port,
            limits,
            addresses=addresses,
            tls_context=context,
            secrets=secrets,
        )
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(f"TLS certificate of {where} not trusted: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        raise TlsError(f"TLS handshake with {where} failed: {exc.reason or exc}") from exc
    except poplib.error_proto as exc:
        raise _greeting_refusal(exc, where, secrets) from exc
    except ConnectionLost as exc:  # no greeting, too slow, or not POP3 at all
        raise ConnectError(f"no usable POP3 greeting from {where}: {exc}") from exc
    except TimeoutError as exc:
        raise ConnectError(f"timed out connecting to {where}") from exc
    except OSError as exc:
        raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from exc


def secure(connection: Pop3Connection, config: MailboxConfig) -> Capabilities:
    """CAPA; with STARTTLS, STLS and CAPA again. The capabilities the login goes by."""
    capabilities = _capa(connection)
    if config.tls is not TlsMode.STARTTLS:
        return capabilities
    if "STLS" not in capabilities:
        raise TlsError(
            f"{config.host}:{config.port} does not offer STLS; refusing to send "
            "credentials in clear text (tls is 'starttls')"
        )
    _start_tls(connection, config)
    # Capabilities may change once TLS is up (RFC 2595).
    return _capa(connection)


def log_in(
    connection: Pop3Connection,
    config: MailboxConfig,
    capabilities: Capabilities,
    secrets: SessionSecrets,
    address_policy: AddressPolicy,
) -> None:
    """USER/PASS, AUTH PLAIN or AUTH XOAUTH2. A refusal is AuthError, or MailboxBusy for
    [IN-USE], [LOGIN-DELAY] and [SYS/TEMP]; a refused token is not used again. The
    token URL is held to ``address_policy`` as the host is."""
    tokens = (
        TokenProvider(config.oauth, address_policy=address_policy)
        if config.oauth is not None
        else None
    )
    try:
        with connection.step("login"):
            _send_credentials(connection, config, capabilities, secrets, tokens)
    except poplib.error_proto as exc:
        if tokens is not None:
            tokens.invalidate(secrets.token)  # the next attempt fetches a fresh one
        # "from None": the refusal's text may echo the credential, cut anywhere.
        raise _login_refusal(exc, config) from None
    except ValueError as exc:  # credentials that cannot be put on the wire
        why = (
            "the user name or password cannot be sent as UTF-8"
            if isinstance(exc, UnicodeError)
            else str(exc)
        )
        raise AuthError(
            f"login as {config.username!r} at {config.host}:{config.port} impossible: {why}"
        ) from None


def _capa(connection: Pop3Connection) -> Capabilities:
    with connection.step("CAPA"):
        try:
            return connection.capa()
        except poplib.error_proto:
            return {}  # CAPA is optional (RFC 2449); we then assume the basics.


def _start_tls(connection: Pop3Connection, config: MailboxConfig) -> None:
    where = f"{config.host}:{config.port}"
    with connection.step("STLS"):
        try:
            connection.stls(context=tls_context(config))
        except ssl.SSLCertVerificationError as exc:
            connection.in_step = False
            raise TlsError(f"TLS certificate of {where} not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            connection.in_step = False
            raise TlsError(f"STLS handshake with {where} failed: {exc}") from exc
        except poplib.error_proto as exc:
            text = refusal_text(exc, connection.secrets())
            raise TlsError(f"server refused STLS: {text}") from exc


def _send_credentials(
    connection: Pop3Connection,
    config: MailboxConfig,
    capabilities: Capabilities,
    secrets: SessionSecrets,
    tokens: TokenProvider | None,
) -> None:
    if tokens is not None:
        secrets.token = tokens.token()
        auth_xoauth2(connection, config.username, secrets.token, two_step=config.sasl == "xoauth2")
    elif config.sasl == "plain" or (
        config.sasl == "auto"
        and "PLAIN" in supported_mechanisms(capabilities)
        and "USER" not in capabilities
    ):
        auth_plain(connection, config.username, config.password)
    else:
        connection.label = "USER"
        connection.user(config.username)
        connection.label = "PASS"
        connection.pass_(config.password)


def _login_refusal(exc: poplib.error_proto, config: MailboxConfig) -> Pop3Error:
    # Only a registered code is kept of the answer (credential_refusal).
    raw = credential_refusal(exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b"")
    code = response_code(raw)
    if code in BUSY_CODES:
        return MailboxBusy(
            f"mailbox {config.mailbox} is busy ({code}): the server refused the login for now",
            code,
        )
    shown = f" [{code}]" if code else ""
    status = exc.status if isinstance(exc, SaslRejected) else None
    if status is not None:
        shown += f" (XOAUTH2 status {status})"
    return AuthError(
        f"login as {config.username!r} at {config.host}:{config.port} failed:{shown} "
        "the server rejected the credentials",
        code,
    )


def _greeting_refusal(exc: poplib.error_proto, where: str, secrets: SessionSecrets) -> Pop3Error:
    raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
    code = response_code(raw)
    text = refusal_text(exc, secrets())
    if code in BUSY_CODES:
        return MailboxBusy(f"{where} is busy ({code}): {text}", code)
    return ConnectError(f"{where} refused the session in its greeting: {text}")
