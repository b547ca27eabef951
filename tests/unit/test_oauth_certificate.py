"""Certificate credentials (Microsoft 365 app-only): the secret's client_assertion, the
signed JWT, and token requests to a loopback token server that verifies the JWT's
signature with the certificate's public key and checks its claims."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.local_hosts import LOCAL_SERVERS
from tests.support.oauth_certificate import AppCertificate, app_certificate, other_key_pem
from tests.support.oauth_server import ASSERTION_TYPE, OAuthTestServer

from pop3_ingest.config import MICROSOFT_365_SCOPE, MailboxConfig, OAuthSettings
from pop3_ingest.errors import AuthError, SecretError
from pop3_ingest.integrations.client_assertion import ASSERTION_LIFETIME_S, signed_assertion
from pop3_ingest.integrations.oauth_tokens import (
    TokenProvider,
    clear_token_cache,
    token_request_form,
)

CLIENT_ID = "00000000-1111-2222-3333-444444444444"
TOKEN_URL = "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture(scope="module")
def cert() -> AppCertificate:
    return app_certificate()


@pytest.fixture
def server(cert: AppCertificate) -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_certificate_client(
            CLIENT_ID, cert.public_key, {"x5t#S256": cert.x5t_s256}, "alice", MICROSOFT_365_SCOPE
        )
        yield srv


def settings(token_url: str, credential: dict[str, Any], **changes: Any) -> OAuthSettings:
    return OAuthSettings.from_secret(
        {
            "type": "oauth2",
            "token_url": token_url,
            "client_id": CLIENT_ID,
            "scope": MICROSOFT_365_SCOPE,
            "client_assertion": credential,
            **changes,
        }
    )


def decoded(part: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def key_body(pem: str) -> str:
    """A line from the middle of the key: what must never show."""
    lines = pem.splitlines()
    return lines[len(lines) // 2]


# -- the token request ----------------------------------------------------------------


def test_a_certificate_credential_gets_a_token_from_a_server_that_verifies_the_jwt(
    server: OAuthTestServer, cert: AppCertificate
) -> None:
    # GIVEN the secret's key and the certificate's SHA-256 thumbprint in hex
    credential = {
        "private_key_pem": cert.private_key_pem,
        "certificate_thumbprint": cert.sha256_hex,
    }
    provider = TokenProvider(settings(server.token_url, credential), address_policy=LOCAL_SERVERS)
    # WHEN a token is asked for
    token = provider.token()
    # THEN the server verified signature and claims, and issued a token for the app's user
    assert server.active(token) is not None
    (request,) = server.token_requests
    assert request["client_assertion_type"] == ASSERTION_TYPE
    assert "client_secret" not in request
    (assertion,) = server.assertions
    assert assertion["header"] == {"alg": "RS256", "typ": "JWT", "x5t#S256": cert.x5t_s256}
    claims = assertion["claims"]
    assert claims["aud"] == server.token_url
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["exp"] - claims["nbf"] == ASSERTION_LIFETIME_S


def test_the_sha1_thumbprint_of_the_admin_center_names_the_certificate_as_x5t(
    server: OAuthTestServer, cert: AppCertificate
) -> None:
    server.add_certificate_client(CLIENT_ID, cert.public_key, {"x5t": cert.x5t}, "alice")
    colons = ":".join(cert.sha1_hex[i : i + 2] for i in range(0, 40, 2))
    credential = {"private_key_pem": cert.private_key_pem, "certificate_thumbprint": colons}
    TokenProvider(settings(server.token_url, credential), address_policy=LOCAL_SERVERS).token()
    assert server.assertions[0]["header"]["x5t"] == cert.x5t


def test_x5t_s256_may_be_given_as_it_goes_in_the_header(
    server: OAuthTestServer, cert: AppCertificate
) -> None:
    credential = {"private_key_pem": cert.private_key_pem, "x5t#S256": cert.x5t_s256}
    TokenProvider(settings(server.token_url, credential), address_policy=LOCAL_SERVERS).token()
    assert server.assertions[0]["header"]["x5t#S256"] == cert.x5t_s256


def test_every_request_signs_a_new_assertion_and_a_replayed_one_is_refused(
    server: OAuthTestServer, cert: AppCertificate
) -> None:
    credential = {"private_key_pem": cert.private_key_pem, "x5t#S256": cert.x5t_s256}
    oauth = settings(server.token_url, credential)
    provider = TokenProvider(oauth, address_policy=LOCAL_SERVERS)
    provider.token()
    provider.invalidate()
    provider.token()
    first, second = (a["claims"]["jti"] for a in server.assertions)
    assert first != second
    # The same assertion twice: the server's jti check refuses the second.
    form = token_request_form(oauth)
    assert server.answer("/token", form)[0] == 200
    assert server.answer("/token", form)[0] == 401


def test_a_key_the_server_does_not_know_is_rejected_without_showing_it(
    server: OAuthTestServer, cert: AppCertificate
) -> None:
    stranger = app_certificate("someone-else")
    credential = {"private_key_pem": stranger.private_key_pem, "x5t#S256": cert.x5t_s256}
    provider = TokenProvider(settings(server.token_url, credential), address_policy=LOCAL_SERVERS)
    with pytest.raises(AuthError, match="signature does not verify") as caught:
        provider.token()
    assert key_body(stranger.private_key_pem) not in f"{caught.value} {caught.value!r}"


@pytest.mark.parametrize(
    ("kind", "fragment"), [("ec", "must be an RSA key"), ("rsa1024", "1024 bits")]
)
def test_a_key_that_cannot_sign_rs256_is_an_auth_error_naming_the_field(
    server: OAuthTestServer, cert: AppCertificate, kind: str, fragment: str
) -> None:
    pem = other_key_pem(kind)
    credential = {"private_key_pem": pem, "x5t#S256": cert.x5t_s256}
    provider = TokenProvider(settings(server.token_url, credential), address_policy=LOCAL_SERVERS)
    with pytest.raises(AuthError, match=fragment) as caught:
        provider.token()
    assert "auth.client_assertion.private_key_pem" in str(caught.value)
    assert key_body(pem) not in str(caught.value)
    assert server.token_requests == [], "nothing is sent without a signature"


def test_a_pem_shaped_key_that_does_not_parse_is_refused_without_echo(
    cert: AppCertificate,
) -> None:
    broken = cert.private_key_pem.replace(key_body(cert.private_key_pem), "A" * 64)
    credential = {"private_key_pem": broken, "x5t#S256": cert.x5t_s256}
    with pytest.raises(AuthError, match="not a readable") as caught:
        token_request_form(settings(TOKEN_URL, credential))
    assert "AAAAAAAA" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_the_jwt_verifies_with_the_public_key_and_is_valid_from_now_for_ten_minutes(
    cert: AppCertificate,
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    credential = settings(
        TOKEN_URL, {"private_key_pem": cert.private_key_pem, "x5t#S256": cert.x5t_s256}
    ).client_assertion
    assert credential is not None
    jwt = signed_assertion(credential, client_id=CLIENT_ID, audience=TOKEN_URL, now=1_800_000_000)
    head, body, signature = jwt.split(".")
    cert.public_key.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        f"{head}.{body}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    claims = decoded(body)
    assert (claims["nbf"], claims["iat"], claims["exp"]) == (1_800_000_000,) * 2 + (
        1_800_000_000 + 600,
    )
    assert len(claims["jti"]) >= 32


def test_the_form_carries_the_assertion_urlencoded_as_rfc_7523_says(cert: AppCertificate) -> None:
    credential = {"private_key_pem": cert.private_key_pem, "x5t#S256": cert.x5t_s256}
    form = token_request_form(settings(TOKEN_URL, credential))
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    body = urllib.parse.urlencode(form)
    assert dict(urllib.parse.parse_qsl(body))["client_assertion"] == form["client_assertion"]


# -- the secret's schema ---------------------------------------------------------------


def bad_credentials(cert: AppCertificate) -> list[tuple[dict[str, Any], str, str]]:
    pem, s256 = cert.private_key_pem, cert.x5t_s256
    return [
        ({"x5t#S256": s256}, "auth.client_assertion.private_key_pem", "missing required field"),
        ({"private_key_pem": pem}, "auth.client_assertion.certificate_thumbprint", "exactly one"),
        (
            {"private_key_pem": pem, "x5t#S256": s256, "certificate_thumbprint": cert.sha1_hex},
            "auth.client_assertion.certificate_thumbprint",
            "exactly one",
        ),
        (
            {"private_key_pem": pem, "certificate_thumbprint": "12ab"},
            "auth.client_assertion.certificate_thumbprint",
            "SHA-1 (40) or SHA-256 (64)",
        ),
        (
            {"private_key_pem": pem, "x5t#S256": s256[:-2]},
            "auth.client_assertion.x5t#S256",
            "43 characters",
        ),
        (
            {"private_key_pem": other_key_pem("encrypted"), "x5t#S256": s256},
            "auth.client_assertion.private_key_pem",
            "unencrypted PEM private key",
        ),
        (
            {"private_key_pem": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "x5t#S256": s256},
            "auth.client_assertion.private_key_pem",
            "unencrypted PEM private key",
        ),
        (
            {"private_key_pem": pem, "x5t#S256": s256, "password": "pw-SECRET-value"},
            "auth.client_assertion.password",
            "unknown field",
        ),
    ]


@pytest.mark.parametrize("case", range(8))
def test_a_bad_client_assertion_names_the_field_and_never_shows_the_key(
    cert: AppCertificate, case: int
) -> None:
    credential, field, fragment = bad_credentials(cert)[case]
    with pytest.raises(SecretError) as caught:
        settings(TOKEN_URL, credential)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    for value in credential.values():
        assert value not in str(caught.value)
        if "\n" in value:
            assert key_body(value) not in str(caught.value)


def test_a_client_secret_and_a_certificate_exclude_each_other(cert: AppCertificate) -> None:
    credential = {"private_key_pem": cert.private_key_pem, "x5t#S256": cert.x5t_s256}
    with pytest.raises(SecretError, match="exclude each other") as caught:
        settings(TOKEN_URL, credential, client_secret="cs-SECRET")
    assert caught.value.field == "auth.client_assertion"
    assert "cs-SECRET" not in str(caught.value)


def test_the_key_is_a_secret_of_the_mailbox_and_part_of_its_fingerprint(
    cert: AppCertificate,
) -> None:
    auth = {
        "token_url": TOKEN_URL,
        "client_id": CLIENT_ID,
        "scope": MICROSOFT_365_SCOPE,
        "client_assertion": {"private_key_pem": cert.private_key_pem, "x5t#S256": cert.x5t_s256},
    }
    secret = {"host": "outlook.office365.com", "username": "support@contoso.com", "auth": auth}
    config = MailboxConfig.from_secret(secret)
    assert cert.private_key_pem in config.secret_values()
    assert key_body(cert.private_key_pem) not in repr(config) + repr(config.oauth)
    other = app_certificate("rotated-certificate")
    auth["client_assertion"] = {
        "private_key_pem": other.private_key_pem,
        "x5t#S256": other.x5t_s256,
    }
    assert MailboxConfig.from_secret(secret).fingerprint() != config.fingerprint()
