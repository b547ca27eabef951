"""The fetch function end to end: real handler, real Dovecot, moto over HTTP."""

from __future__ import annotations

import poplib
import ssl
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from tests.support import corpus
from tests.support.harness import CapturedOutput, Harness, sha256
from tests.support.tcp_proxy import TcpProxy

from pop3_ingest.errors import AuthError, ConfigError, SecretError, TlsError

pytestmark = pytest.mark.integration


def deliver(harness: Harness, messages: list[corpus.CorpusMessage]) -> None:
    for message in messages:
        harness.dovecot.deliver(harness.user, message.raw_for_maildir)


def test_mixed_mailbox_arrives_byte_exact_with_one_pointer_each(harness: Harness) -> None:
    messages = corpus.mixed_corpus()
    deliver(harness, messages)
    harness.configure(harness.dovecot.secret(harness.user, mailbox="support"))

    summary = harness.run()

    assert summary["stopped"] == "completed"
    assert summary["stored"] == summary["deleted"] == len(messages)
    assert summary["failed"] == 0
    assert summary["left_on_server"] == 0
    assert harness.dovecot.message_count(harness.user) == 0

    objects = harness.aws.objects("mail/support/")
    assert sorted(objects.values()) == sorted(m.expected for m in messages)
    pointers = harness.aws.receive_all()
    assert len(pointers) == len(messages)
    assert {p["key"] for p in pointers} == set(objects)
    by_subject = {m.subject: m for m in messages}
    for pointer in pointers:
        body = objects[pointer["key"]]
        assert pointer["bucket"] == harness.aws.bucket
        assert pointer["size"] == len(body)
        assert pointer["sha256"] == sha256(body)
        assert pointer["mailbox"] == "support"
        assert pointer["uidl"]
        expected = by_subject[pointer["subject"]]
        assert body == expected.expected
        assert pointer["message_id"] == expected.message_id
        assert pointer["from"] == expected.from_addr
    head = harness.aws.s3.head_object(Bucket=harness.aws.bucket, Key=pointers[0]["key"])
    assert head["ContentType"] == "message/rfc822"
    assert summary["bytes"] == sum(len(b) for b in objects.values())


def test_starttls_fetches_and_deletes(harness: Harness) -> None:
    deliver(harness, [corpus.simple(1), corpus.simple(2)])
    harness.configure(harness.dovecot.secret(harness.user, tls="starttls"))
    summary = harness.run()
    assert summary["stored"] == summary["deleted"] == 2
    assert harness.dovecot.message_count(harness.user) == 0


def test_plain_text_only_when_asked_for(harness: Harness) -> None:
    deliver(harness, [corpus.simple(1)])
    harness.configure(harness.dovecot.secret(harness.user, tls="none"))
    assert harness.run()["deleted"] == 1


def test_server_without_stls_is_refused_before_any_credentials(
    make_dovecot: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_dovecot(offer_starttls=False)
    server.add_user("alice", "pw-never-sent-123")
    server.deliver("alice", corpus.simple(1).raw_for_maildir)
    with TcpProxy(server.pop3_port) as proxy:
        harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch)
        harness.configure(
            server.secret("alice", tls="starttls", port=proxy.port, ca_cert=None) | {}
        )
        with pytest.raises(TlsError, match="does not offer STLS"):
            harness.run()
        sent = proxy.client_sent
    assert b"pw-never-sent-123" not in sent
    assert b"USER" not in sent.upper()
    assert b"CAPA" in sent.upper()
    assert server.message_count("alice") == 1


def test_untrusted_certificate_is_refused_and_nothing_deleted(harness: Harness) -> None:
    deliver(harness, [corpus.simple(1)])
    harness.configure(harness.dovecot.secret(harness.user, ca_cert=harness.dovecot.other_ca_pem))
    with pytest.raises(TlsError, match="not trusted"):
        harness.run()
    assert harness.dovecot.message_count(harness.user) == 1
    assert harness.mail_keys() == []


def test_untrusted_certificate_refused_with_starttls_too(harness: Harness) -> None:
    deliver(harness, [corpus.simple(1)])
    secret = harness.dovecot.secret(
        harness.user, tls="starttls", ca_cert=harness.dovecot.other_ca_pem
    )
    harness.configure(secret)
    with pytest.raises(TlsError, match="not trusted"):
        harness.run()
    assert harness.dovecot.message_count(harness.user) == 1


def test_s3_refusing_one_message_leaves_only_that_one(harness: Harness, aws_fault: Any) -> None:
    deliver(harness, [corpus.simple(i) for i in range(1, 6)])
    harness.configure(harness.dovecot.secret(harness.user, mailbox="box"))
    listing = harness.server_listing()
    refused_uidl = listing[2][0]
    refused_key = harness.key_for(refused_uidl, "box")
    aws_fault("s3", "PutObject", when=lambda request: refused_key in request.url)

    summary = harness.run()

    assert summary["failed"] == 1
    assert summary["deleted"] == 4
    assert summary["left_on_server"] == 1
    assert [uidl for uidl, _ in harness.server_listing()] == [refused_uidl]
    assert refused_key not in set(harness.mail_keys())
    assert len(harness.aws.receive_all()) == 4


def test_sqs_failing_deletes_nothing(harness: Harness, aws_fault: Any) -> None:
    deliver(harness, [corpus.simple(i) for i in range(1, 5)])
    harness.configure(harness.dovecot.secret(harness.user))
    aws_fault("sqs", "SendMessage")
    aws_fault("sqs", "SendMessageBatch")

    summary = harness.run()

    assert summary["deleted"] == 0
    assert summary["announced"] == 0
    assert harness.dovecot.message_count(harness.user) == 4


def test_sqs_recovers_next_run_without_duplicate_objects(harness: Harness) -> None:
    from pop3_ingest.handlers.fetch import aws_clients

    deliver(harness, [corpus.simple(i) for i in range(1, 5)])
    harness.configure(harness.dovecot.secret(harness.user))
    client = aws_clients().sqs

    def refuse(request: Any, **_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=request.url)

    for operation in ("SendMessage", "SendMessageBatch"):
        client.meta.events.register(f"before-send.sqs.{operation}", refuse)
    try:
        first = harness.run()
    finally:
        for operation in ("SendMessage", "SendMessageBatch"):
            client.meta.events.unregister(f"before-send.sqs.{operation}", refuse)
    assert first["deleted"] == 0
    stored_first = set(harness.mail_keys())
    assert stored_first  # stored before the queue failed

    second = harness.run()
    assert second["deleted"] == 4
    assert set(harness.mail_keys()) >= stored_first
    assert len(harness.mail_keys()) == 4
    assert {p["key"] for p in harness.aws.receive_all()} == set(harness.mail_keys())


def test_connection_cut_mid_retr_loses_nothing_and_rerun_has_no_duplicates(
    harness: Harness,
) -> None:
    messages = [corpus.attachment_message(200 + i, payload_bytes=200_000) for i in range(5)]
    deliver(harness, messages)
    listing = harness.server_listing()
    # Cut the line in the middle of the third message.
    cut_at = sum(size for _, size in listing[:2]) + listing[2][1] // 2 + 2_000
    with TcpProxy(harness.dovecot.pop3s_port, cut_after_bytes=cut_at) as proxy:
        harness.configure(harness.dovecot.secret(harness.user, port=proxy.port))
        first = harness.run()
        assert proxy.cuts == 1
        # The cut session committed nothing; the message being read is counted
        # against it, and a new session drained the others: the two stored
        # before the cut proven by their digest (downloaded again, not stored
        # or announced again), the last two stored.
        assert first["abandoned_sessions"] == 1
        assert first["failed"] == 1
        assert first["redeleted"] == 2
        assert first["deleted"] == 4
        assert harness.dovecot.message_count(harness.user) == 1

        second = harness.run()

    assert second["stopped"] == "completed"
    assert second["deleted"] == 1
    assert harness.dovecot.message_count(harness.user) == 0
    objects = harness.mail_objects()
    assert len(objects) == 5
    assert sorted(objects.values()) == sorted(m.expected for m in messages)
    pointers = harness.aws.receive_all()
    assert sorted(p["key"] for p in pointers) == sorted(objects)  # one pointer each


def test_short_deadline_returns_in_time_and_next_run_completes(
    harness: Harness, aws_fault: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(harness, [corpus.simple(i) for i in range(1, 31)])
    harness.configure(harness.dovecot.secret(harness.user), DEADLINE_MARGIN_SECONDS="2")
    from pop3_ingest.handlers.fetch import aws_clients

    def slow_put(**_: Any) -> None:
        time.sleep(1.0)  # an S3 that takes its time: 30 messages cannot fit

    client = aws_clients().s3
    client.meta.events.register("before-send.s3.PutObject", slow_put)
    try:
        started = time.monotonic()
        first = harness.run(remaining_ms=5_000)
        elapsed = time.monotonic() - started
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", slow_put)

    assert elapsed < 5.0, "handler overran the Lambda deadline"
    assert first["stopped"] == "deadline"
    # What could not be confirmed before the cut-off is not deleted (no QUIT
    # with anything unconfirmed); what was deleted was stored.
    assert first["deleted"] <= first["stored"] < 30
    assert harness.dovecot.message_count(harness.user) == 30 - first["deleted"]

    second = harness.run()
    assert second["stopped"] == "completed"
    # Announced before: proven and deleted, not announced again.
    assert second["redeleted"] == first["announced"] - first["deleted"]
    assert harness.dovecot.message_count(harness.user) == 0
    assert len(harness.mail_keys()) == 30
    assert len(harness.aws.receive_all()) == 30


def test_message_cap_per_run(harness: Harness) -> None:
    deliver(harness, [corpus.simple(i) for i in range(1, 6)])
    harness.configure(harness.dovecot.secret(harness.user), MAX_MESSAGES_PER_RUN="2")
    summary = harness.run()
    assert summary["stopped"] == "message_cap"
    assert summary["deleted"] == 2
    assert summary["left_on_server"] == 3


def test_keep_on_server_when_delete_is_false(harness: Harness) -> None:
    deliver(harness, [corpus.simple(1)])
    harness.configure(harness.dovecot.secret(harness.user, delete=False))
    summary = harness.run()
    assert summary["stored"] == 1
    assert summary["deleted"] == 0
    assert harness.dovecot.message_count(harness.user) == 1


def test_locked_mailbox_is_busy_and_nothing_deleted(
    make_dovecot: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_dovecot(lock_session=True)
    server.add_user("alice", "pw-locked")
    server.deliver("alice", corpus.simple(1).raw_for_maildir)
    harness = Harness(dovecot=server, aws=aws, monkeypatch=monkeypatch)
    harness.configure(server.secret("alice"))
    holder = poplib.POP3_SSL(
        "127.0.0.1", server.pop3s_port, context=ssl.create_default_context(cadata=server.ca_pem)
    )
    holder.user("alice")
    holder.pass_("pw-locked")
    try:
        summary = harness.run()
    finally:
        holder.quit()
    assert summary["stopped"] == "busy"
    assert summary["busy_code"] == "IN-USE"
    assert summary["deleted"] == 0
    assert server.message_count("alice") == 1
    assert [key for key in aws.keys() if "/_" not in key] == []


def test_wrong_password_is_a_clear_error_without_the_password(
    harness: Harness, output: CapturedOutput
) -> None:
    deliver(harness, [corpus.simple(1)])
    harness.configure(harness.dovecot.secret(harness.user, password="Wrong-Pa55word!"))
    with pytest.raises(AuthError) as info:
        harness.run()
    assert "login as 'alice'" in str(info.value)
    assert "Wrong-Pa55word!" not in str(info.value)
    text = output.text()
    assert "login failed" in text
    assert "Wrong-Pa55word!" not in text
    assert '"LoginFailed"' in text  # the metric went out
    assert harness.dovecot.message_count(harness.user) == 1


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"host": None}, "missing required field 'host'"),
        ({"username": None}, "missing required field 'username'"),
        ({"password": None}, "missing required field 'password'"),
        ({"port": "995"}, "field 'port' must be an integer"),
        ({"tls": "ssl"}, "field 'tls' must be one of implicit, starttls, none"),
        ({"delete": "no"}, "field 'delete' must be true or false"),
        ({"ca_cert": "hello"}, "field 'ca_cert' must be PEM"),
        ({"mailbox": "a/b"}, "field 'mailbox'"),
        ({"hostname": "x"}, "unknown field(s): hostname"),
    ],
)
def test_bad_secret_fields_get_clear_errors(
    harness: Harness,
    output: CapturedOutput,
    change: dict[str, Any],
    fragment: str,
) -> None:
    secret = harness.dovecot.secret(harness.user)
    for key, value in change.items():
        if value is None:
            secret.pop(key)
        else:
            secret[key] = value
    harness.configure(secret)
    with pytest.raises(SecretError) as info:
        harness.run()
    assert fragment in str(info.value)
    assert harness.dovecot.users[harness.user] not in str(info.value) + output.text()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("not json at all", "is not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_secret_that_is_not_a_json_object(harness: Harness, raw: str, fragment: str) -> None:
    harness.configure(raw)
    with pytest.raises(SecretError, match=fragment):
        harness.run()


def test_missing_secret_is_named(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.configure(harness.dovecot.secret(harness.user))
    monkeypatch.setenv("SECRET_ID", "no-such-secret")
    with pytest.raises(SecretError, match="cannot read secret 'no-such-secret'"):
        harness.run()


def test_event_secret_id_overrides_environment(harness: Harness) -> None:
    deliver(harness, [corpus.simple(1)])
    name = harness.configure(harness.dovecot.secret(harness.user, mailbox="override"))
    harness.monkeypatch.setenv("SECRET_ID", "some-other-secret")
    summary = harness.run(event={"secret_id": name})
    assert summary["mailbox"] == "override"
    assert summary["deleted"] == 1


def test_missing_environment_is_a_clear_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.configure(harness.dovecot.secret(harness.user))
    monkeypatch.delenv("BUCKET_NAME")
    with pytest.raises(ConfigError, match="BUCKET_NAME"):
        harness.run()


def test_logs_are_structured_with_correlation_id(harness: Harness, output: CapturedOutput) -> None:
    deliver(harness, [corpus.simple(1)])
    harness.configure(harness.dovecot.secret(harness.user, mailbox="logs"))
    harness.run()
    lines = output.records()
    finished = [line for line in lines if line.get("message") == "run finished"]
    assert finished, lines
    assert finished[0]["correlation_id"] == "5a1c2f2e-0000-4000-8000-000000000001"
    assert finished[0]["mailbox"] == "logs"
    (metrics,) = [line for line in lines if "_aws" in line]
    assert metrics["MessagesStored"] in (1, [1])
    assert metrics["mailbox"] == "logs"


def test_two_concurrent_runs_never_lose_or_duplicate_objects(harness: Harness) -> None:
    # Overlapping schedules (without the lock) must still store each message once.
    deliver(harness, [corpus.simple(i) for i in range(1, 11)])
    harness.configure(harness.dovecot.secret(harness.user))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(harness.run())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(harness.mail_keys()) == 10
    if harness.dovecot.message_count(harness.user):
        harness.run()
    assert harness.dovecot.message_count(harness.user) == 0
