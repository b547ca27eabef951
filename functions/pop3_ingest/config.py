"""The function's settings (environment) and the mailbox secret's schema."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pop3_ingest.errors import ConfigError, SecretError
from pop3_ingest.integrations.oauth_tokens import OAuthSettings


class TlsMode(StrEnum):
    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


DEFAULT_PORTS = {TlsMode.IMPLICIT: 995, TlsMode.STARTTLS: 110, TlsMode.NONE: 110}

_MAILBOX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_SECRET_FIELDS = {
    "host",
    "port",
    "tls",
    "username",
    "password",
    "ca_cert",
    "mailbox",
    "delete",
    "max_message_size",
    "interval_minutes",
    "sasl",
    "auth",
}
SASL_CHOICES = ("auto", "user", "plain", "xoauth2", "xoauth2-oneline")
DEFAULT_MAX_MESSAGE_SIZE = 150 * 1024 * 1024  # above every big provider's own limit
# A message must arrive within max(POP3_TIMEOUT_SECONDS, size / this): slow
# enough for any real server, fast enough that a server dripping a byte a
# second cannot hold a run for hours.
DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND = 16 * 1024.0


@dataclass(frozen=True, repr=False)
class MailboxConfig:
    host: str
    port: int
    tls: TlsMode
    username: str
    password: str
    mailbox: str
    delete: bool = True
    ca_cert: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    interval_minutes: int = 0  # 0: every time the function is invoked
    sasl: str = "auto"
    oauth: OAuthSettings | None = None

    def fingerprint(self) -> str:
        """Changes whenever the login settings change (a rotated secret, say)."""
        material = "\x00".join((self.host, str(self.port), self.tls.value, self.username))
        material += "\x00" + self.password
        if self.oauth is not None:
            material += "\x00" + "\x00".join(self.oauth.secret_values()) + self.oauth.client_id
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        # The password must never reach a log line through a repr.
        return (
            f"MailboxConfig(host={self.host!r}, port={self.port}, tls={self.tls.value!r}, "
            f"username={self.username!r}, mailbox={self.mailbox!r}, delete={self.delete})"
        )

    @classmethod
    def from_secret(cls, data: object) -> MailboxConfig:
        """Validate the decoded secret JSON; every problem names its field."""
        if not isinstance(data, Mapping):
            raise SecretError(f"mailbox secret must be a JSON object, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _SECRET_FIELDS)
        if unknown:
            raise SecretError(
                f"mailbox secret has unknown field(s): {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(_SECRET_FIELDS))})",
                field=unknown[0],
            )
        host = _required_str(data, "host")
        if any(c.isspace() for c in host) or "/" in host:
            raise SecretError("mailbox secret field 'host' must be a bare host name", "host")
        username = _required_str(data, "username")
        oauth = OAuthSettings.from_secret(data["auth"]) if "auth" in data else None
        # With OAuth2 the token is the credential; a password is optional.
        password = _required_str(data, "password") if oauth is None or "password" in data else ""
        sasl = data.get("sasl", "xoauth2" if oauth else "auto")
        if sasl not in SASL_CHOICES:
            raise SecretError(
                f"mailbox secret field 'sasl' must be one of {', '.join(SASL_CHOICES)}", "sasl"
            )
        if sasl.startswith("xoauth2") and oauth is None:
            raise SecretError(
                "mailbox secret field 'sasl' is xoauth2 but 'auth' is missing", "auth"
            )
        if oauth is not None and not sasl.startswith("xoauth2"):
            raise SecretError(
                "with 'auth' (OAuth2), 'sasl' must be xoauth2 or xoauth2-oneline", "sasl"
            )

        tls_raw = data.get("tls", TlsMode.IMPLICIT.value)
        if not isinstance(tls_raw, str):
            raise SecretError(
                f"mailbox secret field 'tls' must be a string, got {type(tls_raw).__name__}",
                "tls",
            )
        try:
            tls = TlsMode(tls_raw.lower())
        except ValueError:
            raise SecretError(
                f"mailbox secret field 'tls' must be one of implicit, starttls, none; "
                f"got {tls_raw[:40]!r}",
                "tls",
            ) from None

        port_raw = data.get("port", DEFAULT_PORTS[tls])
        if isinstance(port_raw, bool) or not isinstance(port_raw, int):
            raise SecretError(
                f"mailbox secret field 'port' must be an integer, got {type(port_raw).__name__}",
                "port",
            )
        if not 1 <= port_raw <= 65535:
            raise SecretError(
                f"mailbox secret field 'port' must be 1-65535, got {port_raw}", "port"
            )

        ca_cert = data.get("ca_cert")
        if ca_cert is not None and (
            not isinstance(ca_cert, str) or "-----BEGIN CERTIFICATE-----" not in ca_cert
        ):
            raise SecretError(
                "mailbox secret field 'ca_cert' must be PEM text "
                "containing '-----BEGIN CERTIFICATE-----'",
                "ca_cert",
            )

        delete = data.get("delete", True)
        if not isinstance(delete, bool):
            raise SecretError(
                f"mailbox secret field 'delete' must be true or false, got {type(delete).__name__}",
                "delete",
            )

        max_size = data.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1024:
            raise SecretError(
                "mailbox secret field 'max_message_size' must be an integer number of "
                "bytes, at least 1024",
                "max_message_size",
            )

        interval = data.get("interval_minutes", 0)
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int)
            or not 0 <= interval <= 10080
        ):
            raise SecretError(
                "mailbox secret field 'interval_minutes' must be an integer from 0 to 10080",
                "interval_minutes",
            )

        mailbox_raw = data.get("mailbox")
        if mailbox_raw is None:
            mailbox = derive_mailbox_name(username, host)
        elif isinstance(mailbox_raw, str) and _MAILBOX_NAME.match(mailbox_raw):
            mailbox = mailbox_raw
        else:
            raise SecretError(
                "mailbox secret field 'mailbox' must be 1-128 characters of "
                "letters, digits and . _ @ + -, starting with a letter or digit",
                "mailbox",
            )
        return cls(
            host=host,
            port=port_raw,
            tls=tls,
            username=username,
            password=password,
            mailbox=mailbox,
            delete=delete,
            ca_cert=ca_cert,
            max_message_size=max_size,
            interval_minutes=interval,
            sasl=sasl,
            oauth=oauth,
        )


def derive_mailbox_name(username: str, host: str) -> str:
    """A stable, key-safe name from user and host (``alice@example.com@pop.example.com``)."""
    raw = f"{username}@{host}".lower()
    safe = re.sub(r"[^a-z0-9._@+-]", "_", raw)
    if not safe[0].isalnum():
        safe = "m" + safe
    return safe[:128]


def _required_str(data: Mapping[str, Any], field: str) -> str:
    if field not in data:
        raise SecretError(f"mailbox secret is missing required field '{field}'", field)
    value = data[field]
    if not isinstance(value, str):
        raise SecretError(
            f"mailbox secret field '{field}' must be a string, got {type(value).__name__}",
            field,
        )
    if not value.strip():
        raise SecretError(f"mailbox secret field '{field}' must not be empty", field)
    if field != "password" and ("\r" in value or "\n" in value):
        raise SecretError(f"mailbox secret field '{field}' must be a single line", field)
    if field == "password" and ("\r" in value or "\n" in value):
        # Said without echoing the value: a CR/LF would inject POP3 commands.
        raise SecretError("mailbox secret field 'password' must not contain line breaks", field)
    return value


@dataclass(frozen=True)
class Settings:
    """What the function reads from its environment, validated once per invocation."""

    secret_id: str | None
    bucket: str
    queue_url: str
    key_prefix: str = "mail/"
    max_messages_per_run: int = 500
    deadline_margin_seconds: float = 20.0
    pop3_timeout_seconds: float = 30.0
    min_transfer_bytes_per_second: float = DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND
    pipeline_window: int = 64
    upload_workers: int = 8
    commit_every_messages: int = 1000
    commit_every_bytes: int = 256 * 1024 * 1024
    commit_every_seconds: float = 60.0
    poison_threshold: int = 3
    auth_failure_limit: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        bucket = env.get("BUCKET_NAME", "").strip()
        queue_url = env.get("QUEUE_URL", "").strip()
        missing = [name for name, v in (("BUCKET_NAME", bucket), ("QUEUE_URL", queue_url)) if not v]
        if missing:
            raise ConfigError(f"environment variable(s) not set: {', '.join(missing)}")
        prefix = env.get("KEY_PREFIX", "mail/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix.startswith("/") or ".." in prefix:
            raise ConfigError("KEY_PREFIX must be a relative prefix such as 'mail/'")
        return cls(
            secret_id=env.get("SECRET_ID", "").strip() or None,
            bucket=bucket,
            queue_url=queue_url,
            key_prefix=prefix,
            max_messages_per_run=_int_env(env, "MAX_MESSAGES_PER_RUN", 500, minimum=0),
            deadline_margin_seconds=_float_env(env, "DEADLINE_MARGIN_SECONDS", 20.0),
            pop3_timeout_seconds=_float_env(env, "POP3_TIMEOUT_SECONDS", 30.0, minimum=0.1),
            min_transfer_bytes_per_second=_float_env(
                env,
                "MIN_TRANSFER_BYTES_PER_SECOND",
                DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND,
                minimum=1.0,
            ),
            pipeline_window=_int_env(env, "PIPELINE_WINDOW", 64, minimum=1),
            upload_workers=_int_env(env, "UPLOAD_WORKERS", 8, minimum=1),
            commit_every_messages=_int_env(env, "COMMIT_EVERY_MESSAGES", 1000, minimum=1),
            commit_every_bytes=_int_env(env, "COMMIT_EVERY_BYTES", 256 * 1024 * 1024, minimum=1),
            commit_every_seconds=_float_env(env, "COMMIT_EVERY_SECONDS", 60.0, minimum=1.0),
            poison_threshold=_int_env(env, "POISON_THRESHOLD", 3, minimum=1),
            auth_failure_limit=_int_env(env, "AUTH_FAILURE_LIMIT", 3, minimum=1),
        )


def _int_env(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float_env(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw[:40]!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value
