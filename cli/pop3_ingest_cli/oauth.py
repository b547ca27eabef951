"""``pop3-ingest oauth bootstrap``: a mailbox's first refresh token, by the device flow.

The OAuth 2.0 device authorization grant (RFC 8628): POST the client id and
scope to the provider's device endpoint, show the person at the terminal a
verification URI and a user code, and poll the token endpoint, every
``interval`` seconds (5 more after each ``slow_down``), until they signed in
(a refresh token), declined (``access_denied``) or let the code expire
(``expired_token``). :data:`PROVIDERS` is the one table of endpoints and
scopes; ``--device-url`` and ``--token-url`` override it (tests, sovereign
clouds).

The refresh token goes into the mailbox secret (``--secret-id``: its ``auth``
object merged, every other field kept, then PutSecretValue) or, with
``--show``, to the terminal; it is never shown otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.config import LOOPBACK_HOSTS, MailboxConfig
from pop3_ingest.errors import AuthError, ConfigError, ConnectError, Pop3IngestError, SecretError
from pop3_ingest.integrations.oauth_tokens import DEFAULT_TIMEOUT_S, Reach, oauth_error, post_form
from pop3_ingest.netguard import AddressPolicy
from pop3_ingest.redaction import MASK, SECRET_FIELDS, Redactor
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory


@dataclass(frozen=True)
class Provider:
    """Where a provider's device flow starts and ends, and the scope POP3 needs.
    ``{tenant}`` in a URL is the ``--tenant`` option."""

    device_url: str
    token_url: str
    scope: str


_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
PROVIDERS = {
    "google": Provider(
        "https://oauth2.googleapis.com/device/code",
        "https://oauth2.googleapis.com/token",
        "https://mail.google.com/",
    ),
    "microsoft": Provider(
        f"{_MICROSOFT}/devicecode",
        f"{_MICROSOFT}/token",
        "https://outlook.office.com/POP.AccessAsUser.All offline_access",
    ),
}
# Microsoft: any work or school account, when no --tenant is given.
DEFAULT_TENANT = "organizations"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# RFC 8628 section 3.2 (no interval given) and 3.5 (each slow_down adds this).
DEFAULT_INTERVAL_S = 5.0
SLOW_DOWN_S = 5.0
# When the device endpoint does not say how long its code lives.
DEFAULT_CODE_LIFETIME_S = 900.0
# The name of the variable that may hold the client secret (a name, not a secret).
CLIENT_SECRET_VARIABLE = "OAUTH_CLIENT_SECRET"  # noqa: S105  # nosec B105

SUMMARY = "get a mailbox's first OAuth2 refresh token (device code flow: Google, Microsoft)"
DESCRIPTION = f"""\
Get the first refresh token of a mailbox with the OAuth 2.0 device code flow
(RFC 8628): the command shows a web address and a code; the mailbox's owner
opens the address on any device, enters the code and signs in; the command
then receives the refresh token and writes it into the mailbox secret
(--secret-id: the secret's "auth" object is merged, every other field kept),
or prints it (--show). It is never printed without --show.

Microsoft 365 (delegated access): the app registration needs the delegated
permission POP.AccessAsUser.All and "Allow public client flows". Google: the
client must be of type "TVs and Limited Input devices", and Google's device
flow may refuse the https://mail.google.com/ scope (docs/providers.md).

The client secret, if the provider wants one, comes from --client-secret or
the variable {CLIENT_SECRET_VARIABLE}.
"""
EPILOG = f"""\
examples:
  {render.PROG} oauth bootstrap --provider microsoft --tenant contoso.onmicrosoft.com \\
      --client-id 00000000-1111-2222-3333-444444444444 --secret-id pop3/support
  {render.PROG} oauth bootstrap --provider google --client-id 1234.apps.googleusercontent.com \\
      --show          # prints the auth object, refresh token included

exit codes:
  0  the refresh token was written (or shown)
  1  an AWS call failed
  2  usage error, or a secret the function would refuse (checked before the sign-in)
  3  an endpoint could not be reached, or is unavailable
  4  the sign-in was declined, the code expired, or an endpoint refused the request
"""


def add_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=("bootstrap",), help="what to do")
    command.add_argument("--provider", required=True, choices=sorted(PROVIDERS))
    command.add_argument("--client-id", required=True, metavar="ID", help="the app's client id")
    command.add_argument(
        "--client-secret",
        metavar="SECRET",
        help=f"the app's client secret, if it has one (default: ${CLIENT_SECRET_VARIABLE})",
    )
    command.add_argument(
        "--tenant",
        help=f"Microsoft: the tenant (id or domain; default: {DEFAULT_TENANT})",
    )
    command.add_argument("--scope", help="the scopes to ask for (default: the provider's)")
    command.add_argument(
        "--secret-id", metavar="ID", help="write the refresh token into this mailbox secret"
    )
    command.add_argument("--show", action="store_true", help="print the refresh token")
    command.add_argument("--device-url", metavar="URL", help="override the device endpoint")
    command.add_argument("--token-url", metavar="URL", help="override the token endpoint")
    command.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="each HTTP request's timeout (default: %(default)s)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Bootstrap:
    """What the options ask for, checked."""

    provider: str
    client_id: str
    client_secret: str | None = field(repr=False)
    device_url: str
    token_url: str
    scope: str

    def auth(self, refresh_token: str) -> dict[str, str]:
        """The secret's ``auth`` fields this flow decides."""
        auth = {"type": "oauth2", "token_url": self.token_url, "client_id": self.client_id}
        if self.client_secret:
            auth["client_secret"] = self.client_secret
        if self.provider == "microsoft":  # Google takes no scope when refreshing
            auth["scope"] = self.scope
        return {**auth, "refresh_token": refresh_token}


def bootstrap_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Bootstrap:
    """The options, checked before anyone is asked to sign in (ConfigError otherwise)."""
    if not args.secret_id and not args.show:
        raise ConfigError(
            "say where the refresh token goes: --secret-id NAME (written into the secret), "
            "or --show (printed)"
        )
    if args.tenant and args.provider != "microsoft":
        raise ConfigError("--tenant is for --provider microsoft only")
    provider = PROVIDERS[args.provider]
    tenant = urllib.parse.quote(args.tenant or DEFAULT_TENANT, safe="")
    secret = args.client_secret or (os.environ if env is None else env).get(CLIENT_SECRET_VARIABLE)
    return Bootstrap(
        provider=args.provider,
        client_id=_filled(args.client_id, "--client-id"),
        client_secret=secret or None,
        device_url=_url(
            args.device_url or provider.device_url.format(tenant=tenant), "--device-url"
        ),
        token_url=_url(args.token_url or provider.token_url.format(tenant=tenant), "--token-url"),
        scope=_filled(args.scope or provider.scope, "--scope"),
    )


def _filled(text: str, option: str) -> str:
    if not text.strip() or not text.isprintable():
        raise ConfigError(f"{option} must be a non-empty single line")
    return text.strip()


def _url(url: str, option: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return url
    raise ConfigError(f"{option} must be an https:// URL (plain http only to a loopback host)")


# -- the device flow (RFC 8628) ---------------------------------------------------------


@dataclass(frozen=True)
class DeviceCode:
    """The device endpoint's answer: what the person needs, and what the poll needs."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: float
    interval: float
    complete_uri: str | None = None

    def prompt(self) -> str:
        minutes = max(1, round(self.expires_in / 60))
        text = (
            f"To sign in, open {self.verification_uri} and enter the code {self.user_code} "
            f"(valid for {minutes} minute{'s' if minutes != 1 else ''})."
        )
        if self.complete_uri:
            text += f" Or open {self.complete_uri}"
        return text + "\nWaiting for the sign-in..."


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False)  # the JSON object, or {}


class DeviceFlow:
    """One device authorization: start it, then poll until it ends one way or another."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        reach: Reach,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.reach = reach
        self.sleep = sleep
        self.clock = clock
        self.polls = 0
        # What no error message may show: the client secret, and the device code.
        self.secrets = [bootstrap.client_secret or ""]

    def start(self) -> DeviceCode:
        form = {"client_id": self.bootstrap.client_id, "scope": self.bootstrap.scope}
        answer = self._post(self.bootstrap.device_url, form, "--device-url")
        if answer.status != 200:
            raise self._refusal("the device endpoint", answer)
        data = answer.data
        code, user_code = data.get("device_code"), data.get("user_code")
        # Google calls it verification_url.
        uri = data.get("verification_uri") or data.get("verification_url")
        if not all(isinstance(v, str) and v and v.isprintable() for v in (code, user_code, uri)):
            raise AuthError("the device endpoint answered without device_code, user_code and URI")
        self.secrets.append(str(code))
        complete = data.get("verification_uri_complete")
        return DeviceCode(
            str(code),
            str(user_code),
            str(uri),
            _number(data.get("expires_in"), DEFAULT_CODE_LIFETIME_S),
            _number(data.get("interval"), DEFAULT_INTERVAL_S),
            complete if isinstance(complete, str) and complete.isprintable() else None,
        )

    def wait(self, code: DeviceCode) -> str:
        """Poll the token endpoint until the person signed in; the refresh token."""
        form = {
            "grant_type": DEVICE_GRANT,
            "device_code": code.device_code,
            "client_id": self.bootstrap.client_id,
        }
        if self.bootstrap.client_secret:
            form["client_secret"] = self.bootstrap.client_secret
        interval, ends = code.interval, self.clock() + code.expires_in
        while True:
            self.sleep(interval)
            self.polls += 1
            answer = self._post(self.bootstrap.token_url, form, "--token-url")
            if answer.status == 200:
                return self._refresh_token(answer.data)
            error = answer.data.get("error")
            if error == "slow_down":
                interval += SLOW_DOWN_S
            elif error != "authorization_pending":
                raise self._refusal("the token endpoint", answer)
            if self.clock() >= ends:
                raise AuthError("the code expired before the sign-in was done; run again")

    def _refresh_token(self, data: dict[str, Any]) -> str:
        token = data.get("refresh_token")
        if not isinstance(token, str) or not token or not token.isprintable():
            raise AuthError(
                "signed in, but the token endpoint issued no refresh token: the scope needs "
                "offline access (Microsoft: offline_access)"
            )
        return token

    def _post(self, url: str, form: dict[str, str], option: str) -> _Answer:
        try:
            status, body = post_form(url, form, self.reach, field=option)
        except (OSError, http.client.HTTPException) as exc:
            shown = urllib.parse.urlsplit(url).netloc
            raise ConnectError(f"cannot reach {shown}: {type(exc).__name__}: {exc}") from None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        return _Answer(status, body, data if isinstance(data, dict) else {})

    def _refusal(self, where: str, answer: _Answer) -> Exception:
        status = answer.status
        error, description = oauth_error(answer.body)
        said = f"{error or f'HTTP {status}'}: {description or 'no description'}"
        detail = Redactor(filter(None, self.secrets)).mask(said, 300)
        if error in ("access_denied", "authorization_declined"):
            return AuthError(f"the sign-in was declined ({detail})")
        if error == "expired_token":
            return AuthError(f"the code expired before the sign-in was done; run again ({detail})")
        if error == "invalid_scope" and self.bootstrap.provider == "google":
            return AuthError(
                f"{where} refused the scope ({detail}); Google's device flow grants only a "
                "few scopes, see docs/providers.md for getting a Gmail refresh token"
            )
        if status in (408, 429) or status >= 500:
            return ConnectError(f"{where} is unavailable (HTTP {status}, {detail}); try later")
        return AuthError(f"{where} refused the request (HTTP {status}, {detail})")


def _number(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    return number if math.isfinite(number) and number >= 0 else default


# -- where the refresh token goes --------------------------------------------------------


def merged_secret(text: str | None, auth: Mapping[str, str]) -> str:
    """The secret's JSON with ``auth`` merged into its ``auth`` object (every other field,
    and the order of all, kept), refused as the function would refuse it."""
    try:
        data = json.loads(text or "")
    except ValueError:
        raise SecretError("the mailbox secret is not JSON") from None
    if not isinstance(data, dict):
        raise SecretError("the mailbox secret is not a JSON object")
    block = data.get("auth")
    data["auth"] = {**(block if isinstance(block, dict) else {}), **auth}
    MailboxConfig.from_secret(data)  # names the field to fix, never a value
    indent = 2 if text and "\n" in text.strip() else None
    return json.dumps(data, ensure_ascii=False, indent=indent)


def _secret_text(aws: Aws, secret_id: str) -> str | None:
    return aws.secretsmanager.get_secret_value(SecretId=secret_id).get("SecretString")


def _write(aws: Aws, secret_id: str, auth: Mapping[str, str]) -> str:
    """Merge into the secret as it is now (it may have changed during the sign-in)."""
    updated = merged_secret(_secret_text(aws, secret_id), auth)
    return aws.secretsmanager.put_secret_value(SecretId=secret_id, SecretString=updated)[
        "VersionId"
    ]


# -- the command -------------------------------------------------------------------------


def cmd_oauth(
    args: argparse.Namespace,
    aws_factory: AwsFactory = Aws.from_args,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``oauth bootstrap``; its exit code (:mod:`pop3_ingest_cli.errors`)."""
    return render.emit(bootstrap(args, aws_factory, sleep), as_json=args.json)


def bootstrap(
    args: argparse.Namespace,
    aws_factory: AwsFactory = Aws.from_args,
    sleep: Callable[[float], None] = time.sleep,
) -> render.Outcome:
    """The device flow, then the refresh token into the secret or onto the terminal.
    The prompt goes to stderr at once, so stdout stays one JSON document with --json."""
    document: dict[str, Any] = {"action": args.action, "provider": args.provider}
    secrets: set[str] = set()
    lines: list[str] = []
    try:
        settings = bootstrap_of(args)
        secrets.update(filter(None, (settings.client_secret,)))
        aws = aws_factory(args) if args.secret_id else None
        if aws is not None:  # a secret the function would refuse is refused before the sign-in
            merged_secret(_secret_text(aws, args.secret_id), settings.auth("to-be-issued"))
        reach = Reach(args.timeout, None, AddressPolicy(allow_private=True))
        flow = DeviceFlow(settings, reach, sleep=sleep)
        code = flow.start()
        print(code.prompt(), file=sys.stderr, flush=True)
        auth = settings.auth(flow.wait(code))
        secrets.add(auth["refresh_token"])
        if aws is not None:
            version = _write(aws, args.secret_id, auth)
            document.update(secret_id=args.secret_id, version_id=version)
            lines.append(f"refresh token written into secret {args.secret_id} (version {version})")
        shown = auth if args.show else masked(auth)
        document["auth"] = shown
        if args.show:
            lines.append(json.dumps({"auth": shown}, indent=2))
    except (Pop3IngestError, ClientError, BotoCoreError) as exc:
        return render.Outcome("oauth", document, _printer(lines), exc, secrets=frozenset(secrets))
    return render.Outcome("oauth", document, _printer(lines), secrets=frozenset(secrets))


def masked(auth: Mapping[str, str]) -> dict[str, str]:
    """An ``auth`` object as shown without --show: its secrets masked."""
    return {name: MASK if name in SECRET_FIELDS else value for name, value in auth.items()}


def _printer(lines: list[str]) -> Callable[[], None]:
    def show() -> None:
        for line in lines:
            print(line)

    return show
