"""The test fixtures themselves work: real Dovecot via plain poplib, and moto."""

from __future__ import annotations

import poplib
import ssl
import time
from collections.abc import Callable

import boto3
import pytest
from tests.support.corpus import mixed_corpus, simple, simple_message
from tests.support.dovecot import DEFAULT_PASSWORD, DEFAULT_USER, DovecotServer, pid_alive
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

pytestmark = pytest.mark.integration


def tls_context(ca_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem)
    # Python 3.13 sets this by default; the test certificates must pass it already.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def login_implicit(server: DovecotServer, host: str = "127.0.0.1") -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(
        host, server.pop3s_port, context=tls_context(server.ca_pem), timeout=10
    )
    client.user(DEFAULT_USER)
    client.pass_(DEFAULT_PASSWORD)
    return client


def retr_bytes(client: poplib.POP3, which: int) -> bytes:
    _, lines, _ = client.retr(which)
    return b"".join(line + b"\r\n" for line in lines)


def test_implicit_tls_lists_delivered_messages(dovecot: DovecotServer) -> None:
    for i in range(3):
        dovecot.deliver(DEFAULT_USER, simple_message(i))
    assert dovecot.message_count(DEFAULT_USER) == 3

    client = login_implicit(dovecot)
    try:
        count, _ = client.stat()
        _, uidl_lines, _ = client.uidl()
    finally:
        client.quit()

    assert count == 3
    # pop3_uidl_format = %08Xu%08Xv: 16 hex digits, UID first, in delivery order.
    uidls = [line.split()[1].decode() for line in uidl_lines]
    assert [int(u[:8], 16) for u in uidls] == [1, 2, 3]
    assert all(len(u) == 16 for u in uidls)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_certificate_verifies_for_ip_and_name(dovecot: DovecotServer, host: str) -> None:
    client = login_implicit(dovecot, host=host)
    client.quit()


def test_retr_returns_expected_crlf_bytes(dovecot: DovecotServer) -> None:
    message = simple(7)
    dovecot.deliver(DEFAULT_USER, message.expected)  # stored with LF, served with CRLF
    assert b"\r" not in dovecot.message_files(DEFAULT_USER)[0].read_bytes()

    client = login_implicit(dovecot)
    try:
        _, listing, _ = client.list()
        body = retr_bytes(client, 1)
    finally:
        client.quit()

    assert body == message.expected
    assert int(listing[0].split()[1]) == message.size


def test_mixed_corpus_expected_bytes_match_dovecot(
    dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the corpus' `expected` bytes to what a real server sends."""
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 20)  # stock poplib dies on the long line
    corpus = mixed_corpus()
    for message in corpus:
        dovecot.deliver(DEFAULT_USER, message.raw_for_maildir, crlf_to_lf=False)

    client = login_implicit(dovecot)
    try:
        for number, message in enumerate(corpus, start=1):
            assert retr_bytes(client, number) == message.expected, message.name
    finally:
        client.quit()
    assert any(len(m.expected) > 3_000_000 for m in corpus)


def test_stls_offered_on_plain_port(dovecot: DovecotServer) -> None:
    client = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=10)
    try:
        assert "STLS" in client.capa()
        client.stls(tls_context(dovecot.ca_pem))
        client.user(DEFAULT_USER)
        client.pass_(DEFAULT_PASSWORD)
        assert client.stat() == (0, 0)
    finally:
        client.quit()


def test_starttls_can_be_switched_off(make_dovecot: Callable[..., DovecotServer]) -> None:
    server = make_dovecot(offer_starttls=False)
    server.add_user("bob", "pw")
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    try:
        assert "STLS" not in client.capa()
        client.user("bob")
        client.pass_("pw")  # plain-text login allowed (tls "none")
    finally:
        client.quit()


@pytest.mark.parametrize("case", ["wrong-ca-cert", "server-cert-from-other-ca"])
def test_untrusted_certificate_fails_verification(
    make_dovecot: Callable[..., DovecotServer], case: str
) -> None:
    server = make_dovecot(untrusted_cert=case == "server-cert-from-other-ca")
    trusted = server.other_ca_pem if case == "wrong-ca-cert" else server.ca_pem
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=tls_context(trusted), timeout=10)


def test_wrong_password_is_refused_quickly(dovecot: DovecotServer) -> None:
    client = poplib.POP3_SSL(
        "127.0.0.1", dovecot.pop3s_port, context=tls_context(dovecot.ca_pem), timeout=10
    )
    client.user(DEFAULT_USER)
    started = time.monotonic()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_("wrong")
    assert time.monotonic() - started < 1.5  # auth_failure_delay_s=0 by default
    client.close()


def test_lock_session_gives_in_use(make_dovecot: Callable[..., DovecotServer]) -> None:
    """Slow (~10 s): Dovecot waits for the session lock with a hard-coded 10 s timeout."""
    server = make_dovecot(lock_session=True)
    server.add_user("bob", "pw")
    first = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    first.user("bob")
    first.pass_("pw")
    second = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    try:
        second.user("bob")
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_("pw")
    finally:
        second.close()
        first.quit()


def test_kick_and_restart_keep_unquit_mail(dovecot: DovecotServer) -> None:
    for i in range(2):
        dovecot.deliver(DEFAULT_USER, simple_message(i))
    client = login_implicit(dovecot)
    client.dele(1)
    dovecot.kill_connections()
    with pytest.raises((poplib.error_proto, OSError)):
        client.noop()
    client.close()
    assert dovecot.message_count(DEFAULT_USER) == 2  # no QUIT, no UPDATE

    ports = (dovecot.pop3_port, dovecot.pop3s_port)
    dovecot.restart()
    assert (dovecot.pop3_port, dovecot.pop3s_port) == ports
    client = login_implicit(dovecot)
    client.dele(1)
    client.quit()
    assert dovecot.message_count(DEFAULT_USER) == 1


def test_stop_leaves_no_processes(make_dovecot: Callable[..., DovecotServer]) -> None:
    server = make_dovecot()
    server.add_user("bob", "pw")
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    client.user("bob")
    client.pass_("pw")  # a live mail process too
    family = server.pids()
    assert len(family) > 3

    server.stop()  # graceful: doveadm stop

    assert not server.running
    assert [pid for pid in family if pid_alive(pid)] == []
    client.close()


def test_moto_endpoint_accepts_s3_sqs_and_secrets(aws: AwsResources) -> None:
    # Clients built from the environment alone (as the function builds them) hit moto.
    s3 = boto3.client("s3")
    s3.put_object(Bucket=aws.bucket, Key="mail/x.eml", Body=b"hello\r\n")
    assert aws.objects() == {"mail/x.eml": b"hello\r\n"}

    boto3.client("sqs").send_message(QueueUrl=aws.queue_url, MessageBody='{"n": 1}')
    assert aws.receive_all() == [{"n": 1}]

    name = aws.put_secret("mailbox/test", {"host": "127.0.0.1"})
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=name)
    assert secret["SecretString"] == '{"host": "127.0.0.1"}'


def test_aws_fixture_starts_empty(aws: AwsResources) -> None:
    assert aws.keys() == []
    assert aws.receive_all() == []


def test_fake_context_counts_down() -> None:
    context = FakeLambdaContext(remaining_ms=2_000)
    first = context.get_remaining_time_in_millis()
    assert 1_500 < first <= 2_000
    time.sleep(0.05)
    assert context.get_remaining_time_in_millis() < first
    assert FakeLambdaContext(remaining_ms=0).get_remaining_time_in_millis() == 0
