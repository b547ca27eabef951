"""An application's certificate credential for tests: an RSA key and its self-signed certificate.

What an administrator uploads to an app registration (the certificate) and
what the mailbox secret holds (the private key, and the certificate's
thumbprint). Made with ``cryptography``, once per name in a test session.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AppCertificate:
    private_key_pem: str = field(repr=False)
    public_key: Any  # cryptography's RSAPublicKey
    der: bytes = field(repr=False)

    @property
    def sha1_hex(self) -> str:
        """The thumbprint as the Entra admin center shows it."""
        return hashlib.sha1(self.der).hexdigest().upper()

    @property
    def sha256_hex(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def x5t_s256(self) -> str:
        return _b64url(hashlib.sha256(self.der).digest())

    @property
    def x5t(self) -> str:
        return _b64url(hashlib.sha1(self.der).digest())


@functools.cache
def app_certificate(name: str = "pop3-ingest-app", bits: int = 2048) -> AppCertificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    der = certificate.public_bytes(serialization.Encoding.DER)
    return AppCertificate(pem, key.public_key(), der)


def other_key_pem(kind: str) -> str:
    """A private key the function must refuse: ``"ec"``, ``"rsa1024"`` or an encrypted one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if kind == "ec":
        key: Any = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa1024":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        encryption = serialization.BestAvailableEncryption(b"passphrase")
    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode("ascii")
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
