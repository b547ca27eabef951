"""The one TLS client policy (pop3_ingest.tls): verified, TLS 1.2+, one context per CA set."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from tests.support.certificates import make_certificates

from pop3_ingest.config import MailboxConfig, TlsMode
from pop3_ingest.errors import TlsError
from pop3_ingest.pop3.login import tls_context
from pop3_ingest.tls import client_context


def _config(ca_cert: str | None) -> MailboxConfig:
    return MailboxConfig(
        host="mail.example.com",
        port=995,
        tls=TlsMode.IMPLICIT,
        username="u",
        password="p",
        mailbox="m",
        ca_cert=ca_cert,
    )


def test_the_context_verifies_names_and_certificates_and_refuses_old_tls() -> None:
    context = client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_one_context_per_ca_set_is_shared_by_every_session() -> None:
    # Loading the system CA bundle is the expensive part: not once per session.
    assert tls_context(_config(None)) is tls_context(_config(None))


def test_a_secret_ca_is_trusted_besides_the_system_ones(tmp_path: Path) -> None:
    ca = make_certificates(tmp_path, ca_name="tenant CA", common_name="x", san="DNS:x").ca_pem
    with_ca = tls_context(_config(ca))
    system = tls_context(_config(None))
    assert with_ca is not system
    assert with_ca.cert_store_stats()["x509_ca"] == system.cert_store_stats()["x509_ca"] + 1
    assert tls_context(_config(ca)) is with_ca


def test_an_unusable_ca_cert_is_a_clear_tls_error_and_is_not_cached() -> None:
    bad = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    for _ in range(2):
        with pytest.raises(TlsError, match="ca_cert from the secret is not a usable certificate"):
            tls_context(_config(bad))
