"""Certificate credentials: a client assertion signed with the application's private key.

Microsoft 365 app-only access may authenticate the application with a
certificate instead of a client secret (Microsoft identity platform
"certificate credentials", RFC 7523 section 2.2): the token request carries
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
and ``client_assertion``, a JWT signed RS256 whose header names the certificate
(``x5t#S256``, or ``x5t`` for a SHA-1 thumbprint) and whose claims are
``aud`` (the token URL), ``iss`` = ``sub`` (the client id), ``jti``, ``nbf``,
``iat`` and ``exp`` (:data:`ASSERTION_LIFETIME_S` later).

The signature is the ``cryptography`` package's (RSA PKCS#1 v1.5 with SHA-256),
imported on first use: a function that serves no certificate credential never
loads it, so its cold starts do not pay for it. The private key never appears
in an error message.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pop3_ingest.config import ClientAssertion
from pop3_ingest.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# How long an assertion is valid: one token request's worth (Microsoft takes up to 10 minutes).
ASSERTION_LIFETIME_S = 600
# Microsoft accepts no shorter RSA key for a certificate credential.
MIN_KEY_BITS = 2048
_FIELD = "auth.client_assertion.private_key_pem"


def signed_assertion(
    credential: ClientAssertion, *, client_id: str, audience: str, now: float | None = None
) -> str:
    """A fresh client assertion (compact JWS) for one token request to ``audience``."""
    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", **thumbprint_header(credential)}
    claims = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": issued,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_S,
    }
    signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
    signature = _sign(credential.private_key_pem, signing_input)
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def thumbprint_header(credential: ClientAssertion) -> dict[str, str]:
    """``{"x5t#S256": ...}`` or, for a SHA-1 thumbprint, ``{"x5t": ...}``."""
    if credential.x5t_s256 is not None:
        return {"x5t#S256": credential.x5t_s256.rstrip("=")}
    digest = bytes.fromhex(re.sub(r"[\s:]", "", credential.certificate_thumbprint or ""))
    return {"x5t": b64url(digest)} if len(digest) == 20 else {"x5t#S256": b64url(digest)}


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: Mapping[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _sign(private_key_pem: str, data: bytes) -> bytes:
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError as exc:  # a function built without its requirements
        raise ConfigError(
            "certificate credentials need the 'cryptography' package, which the "
            "function's requirements.txt declares: build it with 'sam build'"
        ) from exc
    return signing_key(private_key_pem).sign(data, padding.PKCS1v15(), hashes.SHA256())


@functools.lru_cache(maxsize=16)
def signing_key(private_key_pem: str) -> RSAPrivateKey:
    """The RSA private key of a PEM text, loaded once per process; AuthError if unusable."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        # "from None": nothing of the key, or of why it did not parse, is shown.
        raise AuthError(f"{_FIELD} is not a readable, unencrypted PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise AuthError(f"{_FIELD} must be an RSA key (RS256); this one is not")
    if key.key_size < MIN_KEY_BITS:
        raise AuthError(f"{_FIELD} is an RSA key of {key.key_size} bits; at least 2048 are needed")
    return key
