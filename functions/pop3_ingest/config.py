"""The function's settings and the mailbox secret: one schema each, and every default once.

- :class:`MailboxConfig` is the secret's schema, :class:`OAuthSettings` its
  ``auth`` object. :meth:`MailboxConfig.from_secret` turns any problem into a
  :class:`SecretError` that names the field and never shows the value.
- :class:`Settings` is the function's environment. :meth:`Settings.from_env`
  turns any problem into a :class:`ConfigError` that names the variable.
- The ``DEFAULT_*`` constants below are the only home of each default:
  Settings, the secret and :class:`pop3_ingest.domain.options.IngestOptions`
  all start from them (docs/configuration.md lists them).

Both schemas are pydantic dataclasses. The secret refuses unknown fields, and
no error carries its input (``hide_input_in_errors``).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import InitVar
from enum import StrEnum
from typing import Annotated, Any, TypeVar, get_args

from pydantic import (
    AfterValidator,
    AliasGenerator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass, is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from pop3_ingest import redaction
from pop3_ingest.errors import ConfigError, SecretError

# -- every default, written once ---------------------------------------------------------

MIB = 1024 * 1024
DEFAULT_KEY_PREFIX = "mail/"
DEFAULT_DELETE = True  # delete from the server once stored and announced
# 0: delete once stored and announced. N: keep each message on the server N
# days after it was first announced, then delete it on proof (with delete on).
DEFAULT_DELETE_AFTER_DAYS = 0
MAX_DELETE_AFTER_DAYS = 3650
DEFAULT_MAX_MESSAGES_PER_RUN = 500
DEFAULT_MAX_MESSAGE_SIZE = 150 * MIB  # above every big provider's own limit
DEFAULT_DEADLINE_MARGIN_SECONDS = 20.0
DEFAULT_POP3_TIMEOUT_SECONDS = 30.0
# TCP connect and TLS handshake: short, so a dead host holds a run (and, in
# Mode fleet, one of the batch's slots) for seconds, not for a read timeout.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
# Mode fleet: jobs of one SQS batch (each its own mailbox) run at the same
# time, so their POP3 round trips overlap; a batch holds at most 10 jobs.
DEFAULT_JOB_CONCURRENCY = 10
# A message must arrive within max(POP3_TIMEOUT_SECONDS, size / this): slow
# enough for any real server, fast enough that a server dripping a byte a
# second cannot hold a run for hours.
DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND = 16 * 1024.0
DEFAULT_PIPELINE_WINDOW = 64
DEFAULT_UPLOAD_WORKERS = 8
# A session is committed (QUIT, reconnect) after whichever comes first, so a
# crash repeats at most that much work; each commit costs a reconnect.
DEFAULT_COMMIT_EVERY_MESSAGES = 1000
DEFAULT_COMMIT_EVERY_BYTES = 256 * MIB
DEFAULT_COMMIT_EVERY_SECONDS = 60.0
# Failures in a row (across runs) after which a message is quarantined.
DEFAULT_POISON_THRESHOLD = 3
# Failed logins in a row after which a mailbox waits for its secret to change.
DEFAULT_AUTH_FAILURE_LIMIT = 3
# Downloaded messages waiting for their upload, counted by the bytes actually
# held (a LIST size can lie).
DEFAULT_MEMORY_BUDGET = 32 * MIB
# Bigger messages are spooled to a temporary file (Lambda's /tmp) while they
# are hashed, so the digest is known before the object is written; S3 uploads
# them in parts.
DEFAULT_STREAM_THRESHOLD = 8 * MIB
DEFAULT_SPOOL_BUDGET = 384 * MIB
# A listing at least this long may be a provider's partial view (Gmail offers
# about 250 per session): it is not proof that a message is gone, and draining
# it is followed by another session.
DEFAULT_CAPPED_LISTING = 200
# A secret's host or token URL may not resolve to a loopback, private or other
# non-public address unless the deployment allows it (pop3_ingest.netguard).
DEFAULT_ALLOW_PRIVATE_HOSTS = False
# Mode fleet: each mailbox has its own schedule, at its secret's interval_minutes,
# or this often when the secret sets none (0), and at least this often (a job
# older than the longest interval has a newer one behind it).
DEFAULT_INTERVAL_MINUTES = 5
MAX_INTERVAL_MINUTES = 60
# Mode fleet: a job scheduled longer ago than the longest interval a schedule
# has has a newer tick behind it, or soon one: it is dropped unread.
JOB_STALE_AFTER_SECONDS = MAX_INTERVAL_MINUTES * 60
# Mode fleet: a secret carrying this tag (key and value) is a mailbox to poll.
DEFAULT_MAILBOX_TAG_KEY = "pop3-ingest"
DEFAULT_MAILBOX_TAG_VALUE = "enabled"
# The secret the template creates (MailboxSecret) is a placeholder whose host is
# under .invalid, a top-level domain reserved never to resolve (RFC 6761). A
# secret whose host is under it is "not configured yet": no run logs in, and
# the run says how to configure it (MailboxConfig.configured).
PLACEHOLDER_DOMAIN = "invalid"
# A refresh token the token endpoint rotated (Microsoft's delegated tokens) is
# written back to its secret, unless the secret changed less than this long
# ago: Secrets Manager asks for at most one PutSecretValue per secret every 10
# minutes, and the token still in the secret stays valid meanwhile.
DEFAULT_REFRESH_TOKEN_WRITEBACK_SECONDS = 3600


class TlsMode(StrEnum):
    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


class Start(StrEnum):
    """The secret's ``start``: which of the mail on the server is taken."""

    ALL = "all"  # everything listed
    # Only mail listed after the mailbox's first run: what its first run
    # lists is left alone on the server (domain/plan.py: the baseline).
    NOW = "now"


DEFAULT_START = Start.ALL


class Mode(StrEnum):
    """The deployment's Mode (the template parameter, env MODE)."""

    SINGLE = "single"  # scheduled runs of one mailbox secret: per-mailbox metrics, a lease
    FLEET = "fleet"  # jobs from the FIFO queue: fleet-level metrics only


DEFAULT_MODE = Mode.SINGLE


DEFAULT_PORTS = {TlsMode.IMPLICIT: 995, TlsMode.STARTTLS: 110, TlsMode.NONE: 110}
SASL_CHOICES = ("auto", "user", "plain", "xoauth2", "xoauth2-oneline")
MICROSOFT_365_SCOPE = "https://outlook.office365.com/.default"
# Where a token endpoint may be plain http (a local test or sidecar endpoint).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_MAILBOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")

# -- the rules a field's value must keep ---------------------------------------------------

_Value = TypeVar("_Value")


def _rule(holds: Callable[[Any], bool], must: str) -> AfterValidator:
    """A check on one value; a failure is reported as "field 'x' <must>", never the value."""

    def check(value: _Value) -> _Value:
        if not holds(value):
            raise PydanticCustomError("rule", must)
        return value

    return AfterValidator(check)


def _one_line(text: str) -> bool:
    return "\r" not in text and "\n" not in text


def _bare_host(text: str) -> bool:
    return "/" not in text and not any(c.isspace() for c in text)


def _tls_mode(value: object) -> TlsMode:
    """Any case names a mode (``"STARTTLS"``)."""
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be a string")
    try:
        return TlsMode(value.lower())
    except ValueError:
        raise PydanticCustomError("rule", f"must be one of {', '.join(TlsMode)}") from None


def _start(value: object) -> Start:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be a string")
    try:
        return Start(value)
    except ValueError:
        raise PydanticCustomError("rule", 'must be "all" or "now"') from None


def _token_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise PydanticCustomError("rule", "is not a valid URL") from None
    if not host:
        raise PydanticCustomError("rule", "needs a host name")
    if parts.username is not None or parts.password is not None:
        raise PydanticCustomError(
            "rule", "must not carry credentials; use client_id and client_secret"
        )
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return url
    raise PydanticCustomError(
        "rule", "must be an https:// URL (plain http only to 127.0.0.1, ::1 or localhost)"
    )


def _key_prefix(prefix: str) -> str:
    # Object keys are <prefix><mailbox>/...: a folder-like prefix, never one that climbs out.
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix.startswith("/") or ".." in prefix:
        raise PydanticCustomError("rule", "must be a relative prefix such as 'mail/'")
    return prefix


_FILLED = _rule(lambda text: bool(text.strip()), "must not be empty")
_Line = Annotated[StrictStr, _FILLED, _rule(_one_line, "must be a single line")]
# Said without echoing the value: a CR/LF would inject POP3 commands.
_Password = Annotated[StrictStr, _FILLED, _rule(_one_line, "must not contain line breaks")]
_HostName = Annotated[_Line, _rule(_bare_host, "must be a bare host name")]
_Port = Annotated[StrictInt, _rule(lambda port: 1 <= port <= 65535, "must be 1-65535")]
_Tls = Annotated[TlsMode, PlainValidator(_tls_mode)]
_Sasl = Annotated[
    StrictStr, _rule(lambda sasl: sasl in SASL_CHOICES, f"must be one of {', '.join(SASL_CHOICES)}")
]
_MailboxName = Annotated[
    StrictStr,
    _rule(
        _MAILBOX_NAME.fullmatch,
        "must be 1-128 characters of letters, digits and . _ @ + -, "
        "starting with a letter or digit",
    ),
]
_PemText = Annotated[
    StrictStr,
    _rule(
        lambda pem: "-----BEGIN CERTIFICATE-----" in pem,
        "must be PEM text containing '-----BEGIN CERTIFICATE-----'",
    ),
]
_MessageSize = Annotated[
    StrictInt,
    _rule(lambda size: size >= 1024, "must be an integer number of bytes, at least 1024"),
]
_DeleteAfterDays = Annotated[
    StrictInt,
    _rule(
        lambda days: 0 <= days <= MAX_DELETE_AFTER_DAYS,
        f"must be an integer from 0 to {MAX_DELETE_AFTER_DAYS}",
    ),
]
_StartChoice = Annotated[Start, PlainValidator(_start)]
_IntervalMinutes = Annotated[
    StrictInt,
    _rule(lambda minutes: 0 <= minutes <= 10080, "must be an integer from 0 to 10080"),
]
_OAuthText = Annotated[
    StrictStr, _FILLED, _rule(str.isprintable, "must not contain line breaks or control characters")
]
_TokenUrl = Annotated[_OAuthText, AfterValidator(_token_url)]
_OAuthType = Annotated[
    StrictStr | None, _rule(lambda kind: kind in (None, "oauth2"), 'must be "oauth2" (or left out)')
]
# Unencrypted PKCS#8 or PKCS#1 PEM: the function has nowhere to keep a passphrase.
_KEY_PEM = re.compile(
    r"-----BEGIN (RSA )?PRIVATE KEY-----[A-Za-z0-9+/=\s]+-----END \1?PRIVATE KEY-----"
)
_PrivateKeyPem = Annotated[
    StrictStr,
    _rule(
        lambda pem: _KEY_PEM.search(pem) is not None,
        "must be an unencrypted PEM private key ('-----BEGIN PRIVATE KEY-----' or "
        "'-----BEGIN RSA PRIVATE KEY-----', with \\n for line breaks in JSON)",
    ),
]
# SHA-1 (as the Entra admin center shows it) or SHA-256 of the certificate, in hex.
_HEX_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}")
_Thumbprint = Annotated[
    StrictStr,
    _rule(
        lambda hexed: _HEX_THUMBPRINT.fullmatch(re.sub(r"[\s:]", "", hexed)) is not None,
        "must be the certificate's SHA-1 (40) or SHA-256 (64) thumbprint in hex",
    ),
]
_X5tS256 = Annotated[
    StrictStr,
    _rule(
        lambda value: re.fullmatch(r"[A-Za-z0-9_-]{43}=?", value) is not None,
        "must be the base64url SHA-256 thumbprint of the certificate (43 characters)",
    ),
]


def _combination(field: str, sentence: str) -> PydanticCustomError:
    """A rule on how fields go together; ``{name}`` in ``sentence`` becomes that field's
    full name (``auth.scope``) when reported, and ``field`` is the one to fix."""
    return PydanticCustomError("combination", sentence, {"field": field})


# -- the mailbox secret --------------------------------------------------------------------

_SECRET = ConfigDict(extra="forbid", hide_input_in_errors=True)


@dataclass(frozen=True, repr=False, kw_only=True, config=_SECRET)
class ClientAssertion:
    """A certificate credential, the secret's ``auth.client_assertion`` (RFC 7523).

    Instead of a client secret, each token request carries a JWT signed (RS256)
    with the application's private key; the token endpoint knows the
    certificate by its thumbprint: ``certificate_thumbprint`` in hex (SHA-1, as
    the Entra admin center shows it, or SHA-256), or ``x5t#S256`` already in
    base64url. Exactly one of the two.
    """

    private_key_pem: _PrivateKeyPem
    certificate_thumbprint: _Thumbprint | None = None
    x5t_s256: _X5tS256 | None = Field(default=None, alias="x5t#S256")

    def __post_init__(self) -> None:
        if (self.certificate_thumbprint is None) == (self.x5t_s256 is None):
            raise _combination(
                "certificate_thumbprint",
                "mailbox secret needs exactly one of '{certificate_thumbprint}' and '{x5t#S256}'",
            )

    def __repr__(self) -> str:
        shown = self.certificate_thumbprint or self.x5t_s256
        return f"ClientAssertion(thumbprint={shown!r})"


@dataclass(frozen=True, repr=False, kw_only=True, config=_SECRET)
class OAuthSettings:
    """Where and how to get an access token: the secret's ``auth`` object (RFC 6749).

    Client credentials (``scope`` and ``client_secret``, or ``client_assertion``
    for a certificate; Microsoft 365 app-only) or a refresh token
    (``refresh_token``, ``scope`` optional; Google, Microsoft 365 delegated).
    """

    token_url: _TokenUrl
    client_id: _OAuthText
    client_secret: _OAuthText | None = None
    client_assertion: ClientAssertion | None = None
    scope: _OAuthText | None = None
    refresh_token: _OAuthText | None = None
    type: InitVar[_OAuthType] = None  # "oauth2", or left out; not kept

    def __post_init__(self, type: str | None) -> None:
        if not self.scope and not self.refresh_token:
            raise _combination(
                "scope",
                "mailbox secret field '{scope}' or '{refresh_token}' is required: a scope "
                f"for the client-credentials grant (Microsoft 365 app-only: {MICROSOFT_365_SCOPE}),"
                " or a refresh token (Google)",
            )
        if self.client_secret and self.client_assertion is not None:
            raise _combination(
                "client_assertion",
                "mailbox secret fields '{client_secret}' and '{client_assertion}' exclude each "
                "other: the client authenticates with one of them",
            )
        if not self.refresh_token and not self.client_secret and self.client_assertion is None:
            raise _combination(
                "client_secret",
                "mailbox secret is missing required field '{client_secret}' "
                "(or '{client_assertion}', a certificate credential)",
            )

    @property
    def grant_type(self) -> str:
        return "refresh_token" if self.refresh_token else "client_credentials"

    def __repr__(self) -> str:
        # Secrets stay out of every log line that formats this object.
        return (
            f"OAuthSettings(token_url={redaction.display_url(self.token_url)!r}, "
            f"client_id={self.client_id!r}, grant_type={self.grant_type!r}, scope={self.scope!r}, "
            f"certificate={self.client_assertion is not None})"
        )

    def secret_values(self) -> tuple[str, ...]:
        """The values that must never appear in an error message."""
        return redaction.secret_values(self)

    @classmethod
    def from_secret(cls, data: object, prefix: str = "auth") -> OAuthSettings:
        """Validate the secret's OAuth2 object; errors name the field as ``<prefix>.<field>``."""
        return _validated(cls, data, prefix)


@dataclass(frozen=True, repr=False, kw_only=True, config=_SECRET)
class MailboxConfig:
    """The mailbox secret: where the mailbox is, how to log in, what to do with its mail."""

    # In the order problems are reported, the first one found.
    host: _HostName
    username: _Line
    oauth: OAuthSettings | None = Field(default=None, alias="auth")
    password: _Password = ""  # required unless `auth` is given
    sasl: _Sasl = "auto"  # "xoauth2" when `auth` is given
    tls: _Tls = TlsMode.IMPLICIT
    port: _Port  # default: DEFAULT_PORTS for the tls mode
    ca_cert: _PemText | None = None
    delete: StrictBool = DEFAULT_DELETE
    delete_after_days: _DeleteAfterDays = DEFAULT_DELETE_AFTER_DAYS
    start: _StartChoice = DEFAULT_START
    max_message_size: _MessageSize = DEFAULT_MAX_MESSAGE_SIZE
    interval_minutes: _IntervalMinutes = 0  # 0: every time the function is invoked
    mailbox: _MailboxName  # default: derive_mailbox_name(username, host)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_other_fields(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data  # keyword arguments, or not an object at all
        filled = dict(data)
        tls, host, username = (
            data.get("tls", TlsMode.IMPLICIT),
            data.get("host"),
            data.get("username"),
        )
        if isinstance(tls, str) and tls.lower() in set(TlsMode):
            filled.setdefault("port", DEFAULT_PORTS[TlsMode(tls.lower())])
        if data.get("mailbox") is None and isinstance(host, str) and isinstance(username, str):
            filled["mailbox"] = derive_mailbox_name(username, host)
        filled.setdefault("sasl", "auto" if data.get("auth") is None else "xoauth2")
        return filled

    def __post_init__(self) -> None:
        # With OAuth2 the token is the credential and the login must carry it.
        if self.sasl.startswith("xoauth2") and self.oauth is None:
            raise _combination(
                "auth", "mailbox secret field '{sasl}' is xoauth2 but '{auth}' is missing"
            )
        if self.oauth is not None and not self.sasl.startswith("xoauth2"):
            raise _combination(
                "sasl", "with '{auth}' (OAuth2), '{sasl}' must be xoauth2 or xoauth2-oneline"
            )
        if self.oauth is None and not self.password:
            raise _combination("password", "mailbox secret is missing required field '{password}'")
        if self.delete_after_days and not self.delete:
            raise _combination(
                "delete_after_days",
                "mailbox secret field '{delete_after_days}' deletes mail after that many days; "
                "it cannot go with '{delete}' false (keep for ever): leave one of them out",
            )

    @property
    def configured(self) -> bool:
        """False while the secret is a placeholder (see PLACEHOLDER_DOMAIN)."""
        return not is_placeholder_host(self.host)

    def fingerprint(self) -> str:
        """Changes whenever the login settings change (a rotated secret, say)."""
        material = "\x00".join((self.host, str(self.port), self.tls.value, self.username))
        material += "\x00" + self.password
        if self.oauth is not None:
            material += "\x00" + "\x00".join(self.oauth.secret_values()) + self.oauth.client_id
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def secret_values(self) -> tuple[str, ...]:
        """What of this mailbox's settings must never be shown: password and OAuth2 secrets."""
        return redaction.secret_values(self)

    def __repr__(self) -> str:
        # The password must never reach a log line through a repr.
        return (
            f"MailboxConfig(host={self.host!r}, port={self.port}, tls={self.tls.value!r}, "
            f"username={self.username!r}, mailbox={self.mailbox!r}, delete={self.delete})"
        )

    @classmethod
    def from_secret(cls, data: object) -> MailboxConfig:
        """Validate the decoded secret JSON; every problem names its field."""
        return _validated(cls, data, prefix="")


def is_placeholder_host(host: str) -> bool:
    """Whether ``host`` is under the reserved placeholder domain (``pop3.example.invalid``)."""
    return host.lower().rstrip(".").rpartition(".")[2] == PLACEHOLDER_DOMAIN


def derive_mailbox_name(username: str, host: str) -> str:
    """A stable, key-safe name from user and host (``alice@example.com@pop.example.com``)."""
    raw = f"{username}@{host}".lower()
    safe = re.sub(r"[^a-z0-9._@+-]", "_", raw)
    if not safe[0].isalnum():
        safe = "m" + safe
    return safe[:128]


_Schema = TypeVar("_Schema")
_UNKNOWN = "unexpected_keyword_argument"  # pydantic's name for a field the schema lacks
# What a value of the wrong JSON type should have been.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "dataclass_type": "a JSON object",
}


def _validated(schema: type[_Schema], data: object, prefix: str) -> _Schema:
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as exc:
        raise _secret_error(exc, schema, prefix) from None


def _secret_error(exc: ValidationError, schema: type[Any], prefix: str) -> SecretError:
    """The first problem as one sentence naming the field (``auth.scope``), never its value.

    First means: an unknown field, then the fields in the order they are declared.
    """
    problems = exc.errors(include_url=False)
    order = [info.alias or key for key, info in _fields(schema).items()]

    def position(problem: Any) -> int:
        loc = problem["loc"]
        if problem["type"] == _UNKNOWN and len(loc) == 1:
            return -2
        if not loc:
            return -1
        return order.index(loc[0]) if loc[0] in order else len(order)

    problem = min(problems, key=position)
    if problem["type"] == _UNKNOWN:
        level = problem["loc"][:-1]
        unknown = [p for p in problems if p["type"] == _UNKNOWN and p["loc"][:-1] == level]
        return _unknown_fields(unknown, schema, prefix)
    at = [prefix, *map(str, problem["loc"])]

    def name(*field: str) -> str:
        return ".".join(part for part in (*at, *field) if part)

    kind = problem["type"]
    if kind == "combination":
        sentence = problem["msg"].format_map(_FieldNames(name))
        return SecretError(sentence, name(problem["ctx"]["field"]))
    got = type(problem.get("input")).__name__
    if not name():
        return SecretError(f"mailbox secret must be a JSON object, got {got}")
    if kind == "missing":
        return SecretError(f"mailbox secret is missing required field '{name()}'", name())
    must = f"must be {_EXPECTED[kind]}, got {got}" if kind in _EXPECTED else problem["msg"]
    return SecretError(f"mailbox secret field '{name()}' {must}", name())


class _FieldNames(dict[str, str]):
    def __init__(self, name: Callable[[str], str]) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)


def _unknown_fields(problems: list[Any], schema: type[Any], prefix: str) -> SecretError:
    def name(*parts: object) -> str:
        return ".".join(str(part)[:40] for part in (prefix, *parts) if part)

    level = problems[0]["loc"][:-1]
    unknown = sorted(name(*p["loc"]) for p in problems)
    allowed = (name(*level, field) for field in _field_names(schema, level))
    return SecretError(
        f"mailbox secret has unknown field(s): {', '.join(unknown)} "
        f"(allowed: {', '.join(allowed)})",
        unknown[0],
    )


def _field_names(schema: type[Any], level: tuple[Any, ...]) -> list[str]:
    """The names a secret object may hold at ``level`` (``()``, or ``("auth",)``)."""
    for part in level:
        info = next(f for key, f in _fields(schema).items() if (f.alias or key) == part)
        kinds = (*get_args(info.annotation), info.annotation)
        schema = next(kind for kind in kinds if is_pydantic_dataclass(kind))
    return sorted(info.alias or key for key, info in _fields(schema).items())


def _fields(schema: type[Any]) -> dict[str, FieldInfo]:
    assert is_pydantic_dataclass(schema)
    return schema.__pydantic_fields__


# -- the function's environment ------------------------------------------------------------

_Count = Annotated[int, Field(ge=1)]


_ENVIRONMENT = ConfigDict(
    hide_input_in_errors=True,
    validate_by_name=True,
    # Each field is read from its name in capitals: pipeline_window <- PIPELINE_WINDOW.
    alias_generator=AliasGenerator(validation_alias=str.upper),
)


@dataclass(frozen=True, kw_only=True, config=_ENVIRONMENT)
class Settings:
    """What the function reads from its environment, validated once per invocation."""

    secret_id: str | None = None
    bucket: str = Field(validation_alias="BUCKET_NAME")
    queue_url: str
    key_prefix: Annotated[str, AfterValidator(_key_prefix)] = DEFAULT_KEY_PREFIX
    max_messages_per_run: Annotated[int, Field(ge=0)] = DEFAULT_MAX_MESSAGES_PER_RUN
    deadline_margin_seconds: Annotated[float, Field(ge=0.0)] = DEFAULT_DEADLINE_MARGIN_SECONDS
    pop3_timeout_seconds: Annotated[float, Field(ge=0.1)] = DEFAULT_POP3_TIMEOUT_SECONDS
    min_transfer_bytes_per_second: Annotated[float, Field(ge=1.0)] = (
        DEFAULT_MIN_TRANSFER_BYTES_PER_SECOND
    )
    pipeline_window: _Count = DEFAULT_PIPELINE_WINDOW
    upload_workers: _Count = DEFAULT_UPLOAD_WORKERS
    commit_every_messages: _Count = DEFAULT_COMMIT_EVERY_MESSAGES
    commit_every_bytes: _Count = DEFAULT_COMMIT_EVERY_BYTES
    commit_every_seconds: Annotated[float, Field(ge=1.0)] = DEFAULT_COMMIT_EVERY_SECONDS
    poison_threshold: _Count = DEFAULT_POISON_THRESHOLD
    auth_failure_limit: _Count = DEFAULT_AUTH_FAILURE_LIMIT
    allow_private_hosts: bool = DEFAULT_ALLOW_PRIVATE_HOSTS
    connect_timeout_seconds: Annotated[float, Field(ge=0.1)] = DEFAULT_CONNECT_TIMEOUT_SECONDS
    job_concurrency: _Count = DEFAULT_JOB_CONCURRENCY
    mode: Mode = DEFAULT_MODE
    refresh_token_writeback_seconds: Annotated[float, Field(ge=0.0)] = (
        DEFAULT_REFRESH_TOKEN_WRITEBACK_SECONDS
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        # An empty variable counts as not set; KEY_PREFIX alone is taken as
        # written (empty: keys at the bucket's root).
        given = {name: env[name].strip() for name in _ENV_NAMES if env.get(name, "").strip()}
        if "KEY_PREFIX" in env:
            given["KEY_PREFIX"] = env["KEY_PREFIX"]
        try:
            return TypeAdapter(cls).validate_python(given)
        except ValidationError as exc:
            raise _config_error(exc) from None


_ENV_NAMES = tuple(str(info.validation_alias) for info in _fields(Settings).values())


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem, naming its variable (every unset required one at once)."""
    problems = exc.errors(include_url=False)
    missing = [str(p["loc"][0]) for p in problems if p["type"] == "missing"]
    if missing:
        return ConfigError(f"environment variable(s) not set: {', '.join(missing)}")
    problem = problems[0]
    kind = problem["type"]
    if kind == "greater_than_equal":
        must = f"must be >= {problem['ctx']['ge']}"
    elif kind.startswith("int_"):
        must = "must be an integer"
    elif kind.startswith("float_"):
        must = "must be a number"
    elif kind.startswith("bool_"):
        must = "must be true or false"
    else:
        must = problem["msg"]
    return ConfigError(f"{problem['loc'][0]} {must}")


@dataclass(frozen=True, kw_only=True, config=_ENVIRONMENT)
class FleetSettings:
    """Mode fleet: where the mailboxes' schedules live and where their ticks go.

    The reconciler's environment; the CLI's ``mailbox`` commands read the same
    variables (or take them as options).
    """

    schedule_group: str
    jobs_queue_arn: str
    scheduler_role_arn: str
    mailbox_tag_key: str = DEFAULT_MAILBOX_TAG_KEY
    mailbox_tag_value: str = DEFAULT_MAILBOX_TAG_VALUE
    # The template's ScheduleEnabled: false keeps every schedule, disabled.
    schedules_enabled: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FleetSettings:
        env = os.environ if env is None else env
        names = (str(info.validation_alias) for info in _fields(cls).values())
        given = {name: env[name].strip() for name in names if env.get(name, "").strip()}
        try:
            return TypeAdapter(cls).validate_python(given)
        except ValidationError as exc:
            raise _config_error(exc) from None
