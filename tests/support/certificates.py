"""A throw-away CA and a server certificate it signed, made with the openssl command.

For TLS servers in tests: the client trusts ``ca_pem`` (a secret's ``ca_cert``)
and the server presents its certificate through ``server_context``.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Certificates:
    ca_pem: str  # the secret's ca_cert
    server_context: ssl.SSLContext


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(where: Path, *, ca_name: str, common_name: str, san: str) -> Certificates:
    """A CA named ``ca_name`` in ``where``, and a server certificate it signed for
    ``common_name`` with the subjectAltName ``san`` (``IP:127.0.0.1``, ``DNS:x``)."""
    _openssl(
        "req", "-x509", *_NEW_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )  # fmt: skip
    _openssl(
        "req", "-x509", *_NEW_KEY, "-keyout", "server.key", "-out", "server.pem", "-days", "2",
        "-subj", f"/CN={common_name}", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", "extendedKeyUsage=serverAuth",
        "-addext", f"subjectAltName={san}",
        cwd=where,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(where / "server.pem", where / "server.key")
    return Certificates((where / "ca.pem").read_text(), context)
