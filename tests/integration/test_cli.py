"""The operator CLI against a real Dovecot and moto: ``check`` and ``replay``."""

from __future__ import annotations

import json
import poplib
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support import corpus
from tests.support.dovecot import DEFAULT_PASSWORD, DEFAULT_USER, DovecotServer
from tests.support.harness import Harness, sha256
from tests.support.moto_server import AwsResources
from tests.support.tcp_proxy import TcpProxy

from pop3_ingest_cli.main import main

pytestmark = pytest.mark.integration

HEADER_FIELDS = ("message_id", "from", "to", "cc", "subject", "date")


def secret_file(tmp_path: Path, secret: dict[str, Any]) -> str:
    path = tmp_path / "secret.json"
    path.write_text(json.dumps(secret))
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out)


def listing(server: DovecotServer, user: str = DEFAULT_USER) -> list[tuple[bytes, bytes]]:
    """(UIDL line, LIST line) pairs read with plain poplib; nothing is changed."""
    context = ssl.create_default_context(cadata=server.ca_pem)
    client = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=context)
    try:
        client.user(user)
        client.pass_(server.users[user])
        return list(zip(client.uidl()[1], client.list()[1], strict=True))
    finally:
        client.quit()


# -- check -------------------------------------------------------------------------


def test_check_implicit_tls_shows_count_and_changes_nothing(
    dovecot: DovecotServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = [corpus.simple(1), corpus.simple(2), corpus.long_line_message()]
    for message in messages:
        dovecot.deliver(DEFAULT_USER, message.raw_for_maildir)
    before = listing(dovecot)
    path = secret_file(tmp_path, dovecot.secret(DEFAULT_USER, mailbox="support"))

    assert main(["check", "--allow-private-hosts", "--secret-file", path]) == 0
    out = capsys.readouterr().out
    assert "mailbox support" in out
    assert "TLS implicit, certificate verified" in out
    assert f"login       ok as '{DEFAULT_USER}'" in out
    assert "PIPELINING" in out
    assert "messages    3, " in out
    assert "nothing: no RETR, no DELE; ended with QUIT" in out

    code, doc = run_json(capsys, ["check", "--allow-private-hosts", "--secret-file", path])
    assert code == 0
    assert doc["ok"] is True
    assert doc["messages"] == 3
    assert doc["total_bytes"] == sum(m.size for m in messages)
    assert doc["largest_bytes"] == max(m.size for m in messages)
    assert doc["uidl"] is True
    assert doc["pipelining"] is True
    assert doc["quit"] is True
    assert doc["capabilities"] == sorted(doc["capabilities"])
    assert "UIDL" in doc["capabilities"]

    assert dovecot.message_count(DEFAULT_USER) == 3
    assert listing(dovecot) == before


def test_check_starttls_with_a_secret_from_secrets_manager(
    dovecot: DovecotServer, aws: AwsResources, capsys: pytest.CaptureFixture[str]
) -> None:
    dovecot.deliver(DEFAULT_USER, corpus.simple(1).raw_for_maildir)
    dovecot.deliver(DEFAULT_USER, corpus.simple(2).raw_for_maildir)
    name = aws.put_secret("mailbox-alice", dovecot.secret(DEFAULT_USER, tls="starttls"))

    code, doc = run_json(capsys, ["check", "--allow-private-hosts", "--secret-id", name])

    assert code == 0, doc
    assert doc["tls"] == "starttls"
    assert doc["port"] == dovecot.pop3_port
    assert doc["certificate_verified"] is True
    assert doc["messages"] == 2
    assert dovecot.message_count(DEFAULT_USER) == 2


def test_check_wrong_password_exits_4_without_any_password(
    dovecot: DovecotServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dovecot.deliver(DEFAULT_USER, corpus.simple(1).raw_for_maildir)
    wrong = "wrong horse battery staple"
    path = secret_file(tmp_path, dovecot.secret(DEFAULT_USER, password=wrong))

    assert main(["check", "--allow-private-hosts", "--secret-file", path]) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pop3-ingest check: auth error: login as 'alice'")
    assert len(captured.err.splitlines()) == 1

    code, doc = run_json(capsys, ["check", "--allow-private-hosts", "--secret-file", path])
    assert code == 4
    assert doc["error_kind"] == "auth"
    assert doc["login"] is False

    printed = captured.out + captured.err + json.dumps(doc)
    assert wrong not in printed
    assert DEFAULT_PASSWORD not in printed
    assert dovecot.message_count(DEFAULT_USER) == 1


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_check_untrusted_certificate_exits_3(
    dovecot: DovecotServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], tls: Any
) -> None:
    secret = dovecot.secret(DEFAULT_USER, tls=tls, ca_cert=dovecot.other_ca_pem)

    assert (
        main(["check", "--allow-private-hosts", "--secret-file", secret_file(tmp_path, secret)])
        == 3
    )
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest check: connect error: TLS certificate")
    assert "not trusted" in err
    assert DEFAULT_PASSWORD not in err


def test_check_nothing_listening_exits_3(
    dovecot: DovecotServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = dovecot.secret(DEFAULT_USER)
    dovecot.stop(graceful=False)

    assert (
        main(
            [
                "check",
                "--allow-private-hosts",
                "--secret-file",
                secret_file(tmp_path, secret),
                "--timeout",
                "5",
            ]
        )
        == 3
    )
    assert "pop3-ingest check: connect error: cannot connect" in capsys.readouterr().err


def test_check_refuses_a_loopback_host_unless_allowed(
    dovecot: DovecotServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The secret may be a tenant's: check holds it to the function's rule by default.
    with TcpProxy(dovecot.pop3s_port) as proxy:
        path = secret_file(tmp_path, dovecot.secret(DEFAULT_USER, port=proxy.port))
        assert main(["check", "--secret-file", path]) == 3
        refused = capsys.readouterr().err
        assert proxy.connections == 0
        assert main(["check", "--allow-private-hosts", "--secret-file", path]) == 0
        assert proxy.connections == 1
    assert refused.startswith("pop3-ingest check: connect error: mailbox secret field 'host'")
    assert "loopback" in refused
    assert "--allow-private-hosts" in refused  # the way to allow it, for this command
    assert DEFAULT_PASSWORD not in refused


def test_check_locked_mailbox_exits_5(
    make_dovecot: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_dovecot(lock_session=True)
    server.add_user("alice", "pw-locked")
    holder = poplib.POP3_SSL(
        "127.0.0.1", server.pop3s_port, context=ssl.create_default_context(cadata=server.ca_pem)
    )
    holder.user("alice")
    holder.pass_("pw-locked")
    try:
        code = main(
            [
                "check",
                "--allow-private-hosts",
                "--secret-file",
                secret_file(tmp_path, server.secret("alice")),
            ]
        )
    finally:
        holder.quit()
    assert code == 5
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest check: busy error:")
    assert "IN-USE" in err


# -- replay ------------------------------------------------------------------------


def replay_args(aws: AwsResources, *extra: str, mailbox: str = "support") -> list[str]:
    return [
        "replay",
        "--bucket",
        aws.bucket,
        "--queue-url",
        aws.queue_url,
        "--mailbox",
        mailbox,
        *extra,
    ]


def fetch(harness: Harness, messages: list[corpus.CorpusMessage]) -> list[dict[str, Any]]:
    """Deliver, run the real handler once, and return (and drain) its pointers."""
    for message in messages:
        harness.dovecot.deliver(harness.user, message.raw_for_maildir)
    harness.configure(harness.dovecot.secret(harness.user, mailbox="support"))
    summary = harness.run()
    assert summary["stored"] == len(messages), summary
    return harness.aws.receive_all()


def test_replay_resends_one_pointer_per_stored_message(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = corpus.mixed_corpus()
    originals = {p["key"]: p for p in fetch(harness, messages)}
    objects = harness.aws.objects("mail/support/")
    capsys.readouterr()

    assert main(replay_args(harness.aws)) == 0

    replayed = harness.aws.receive_all()
    assert len(replayed) == len(objects) == len(messages)
    assert {p["key"] for p in replayed} == set(objects) == set(originals)
    for pointer in replayed:
        body = objects[pointer["key"]]
        original = originals[pointer["key"]]
        assert pointer["version"] == 1
        assert pointer["bucket"] == harness.aws.bucket
        assert pointer["size"] == len(body) == original["size"]
        assert pointer["sha256"] == sha256(body) == original["sha256"]
        assert pointer["mailbox"] == "support"
        assert pointer["uidl"] is None
        assert pointer["replayed"] is True
        for name in HEADER_FIELDS:
            assert pointer[name] == original[name], name
        replayed_at = datetime.fromisoformat(pointer["stored_at"])
        stored_at = datetime.fromisoformat(original["stored_at"])
        assert abs((replayed_at - stored_at).total_seconds()) < 30
    out = capsys.readouterr().out
    assert f"{len(messages)} pointer(s) sent, 0 failed" in out
    assert harness.dovecot.message_count(harness.user) == 0  # untouched by replay, of course


def test_replay_computes_a_missing_sha256_and_skips_foreign_objects(
    aws: AwsResources, capsys: pytest.CaptureFixture[str]
) -> None:
    big = corpus.attachment_message()  # ~3 MB, well past the 64 KiB header read
    small = corpus.simple(7)
    # As a streamed (multipart) upload leaves it: metadata without sha256.
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="mail/support/" + "a" * 40 + ".eml",
        Body=big.expected,
        Metadata={"mailbox": "support"},
    )
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="mail/support/" + "b" * 40 + ".eml",
        Body=small.expected,
        Metadata={"mailbox": "support", "sha256": sha256(small.expected)},
    )
    for key in (
        "mail/support/notes.txt",
        "mail/support/sub/x.eml",
        "mail/supportx/" + "c" * 40 + ".eml",
        "mail/_state/support.json",
    ):
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"not mail")

    code, doc = run_json(capsys, replay_args(aws))

    assert code == 0, doc
    assert doc["listed"] == doc["in_range"] == doc["sent"] == 2
    assert doc["sha256_computed"] == 1
    pointers = {p["key"]: p for p in aws.receive_all()}
    assert len(pointers) == 2
    by_body = {
        "mail/support/" + "a" * 40 + ".eml": big,
        "mail/support/" + "b" * 40 + ".eml": small,
    }
    for key, message in by_body.items():
        assert pointers[key]["sha256"] == sha256(message.expected)
        assert pointers[key]["size"] == message.size
        assert pointers[key]["subject"] == message.subject
        assert pointers[key]["message_id"] == message.message_id
    computed = [o for o in doc["objects"] if o.get("sha256_computed")]
    assert [o["key"] for o in computed] == ["mail/support/" + "a" * 40 + ".eml"]


def test_replay_time_range(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    first = {p["key"] for p in fetch(harness, [corpus.simple(1), corpus.simple(2)])}
    time.sleep(1.2)  # S3 times have one-second resolution
    boundary = datetime.now(UTC).isoformat()
    time.sleep(1.2)
    second = {p["key"] for p in fetch(harness, [corpus.simple(3), corpus.simple(4)])}
    assert first.isdisjoint(second)
    capsys.readouterr()

    code, doc = run_json(capsys, replay_args(harness.aws, "--since", boundary))
    assert code == 0
    assert (doc["listed"], doc["in_range"], doc["sent"]) == (4, 2, 2)
    assert {p["key"] for p in harness.aws.receive_all()} == second

    code, doc = run_json(capsys, replay_args(harness.aws, "--until", boundary))
    assert code == 0
    assert {p["key"] for p in harness.aws.receive_all()} == first

    code, doc = run_json(
        capsys, replay_args(harness.aws, "--since", "2000-01-01", "--until", "2000-01-02")
    )
    assert code == 0
    assert doc["in_range"] == 0
    assert harness.aws.receive_all() == []


def test_replay_dry_run_sends_nothing(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    keys = {
        p["key"] for p in fetch(harness, [corpus.simple(1), corpus.simple(2), corpus.simple(3)])
    }
    capsys.readouterr()

    assert main(replay_args(harness.aws, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert harness.aws.receive_all() == []
    for key in keys:
        assert f"would send {key}" in out
    assert "3 pointer(s) would be sent (dry run, nothing sent)" in out

    code, doc = run_json(capsys, replay_args(harness.aws, "--dry-run"))
    assert code == 0
    assert doc["dry_run"] is True
    assert doc["sent"] == 0
    assert {o["key"] for o in doc["objects"]} == keys
    assert all(o["status"] == "would send" for o in doc["objects"])
    assert all(o["pointer"]["replayed"] is True for o in doc["objects"])
    assert harness.aws.receive_all() == []


def test_replay_unknown_bucket_exits_2(
    aws: AwsResources, capsys: pytest.CaptureFixture[str]
) -> None:
    args = replay_args(aws)
    args[args.index("--bucket") + 1] = "no-such-bucket"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest replay: config error:")
    assert "NoSuchBucket" in err


def test_replay_unknown_queue_exits_2_and_says_what_was_not_sent(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    fetch(harness, [corpus.simple(1), corpus.simple(2)])
    capsys.readouterr()
    args = replay_args(harness.aws)
    args[args.index("--queue-url") + 1] = harness.aws.queue_url + "-gone"

    code, doc = run_json(capsys, args)

    assert code == 2
    assert doc["error_kind"] == "config"
    assert "NonExistentQueue" in doc["error"]
    assert (doc["sent"], doc["not_sent"]) == (0, 2)
    assert harness.aws.receive_all() == []


def test_quarantine_list_and_release_round_trip(
    dovecot: Any, aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import corpus
    from tests.support.harness import Harness

    from pop3_ingest.domain.message import uidl_digest
    from pop3_ingest.handlers.fetch import aws_clients
    from pop3_ingest_cli.main import main

    harness = Harness(dovecot=dovecot, aws=aws, monkeypatch=monkeypatch)
    dovecot.deliver(harness.user, corpus.simple(1).raw_for_maildir)
    dovecot.deliver(harness.user, corpus.simple(2).raw_for_maildir)
    harness.configure(dovecot.secret(harness.user, mailbox="q"), POISON_THRESHOLD="2")
    poison_uidl = harness.server_listing()[1][0]
    poison_key = harness.key_for(poison_uidl, "q")

    def refuse(request: Any, **_: Any) -> None:
        if poison_key in request.url:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url=request.url)

    client = aws_clients().s3
    client.meta.events.register("before-send.s3.PutObject", refuse)
    try:
        first = harness.run()
        second = harness.run()
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", refuse)
    assert first["quarantined"] == 0
    assert second["quarantined"] == 1
    third = harness.run()
    assert third["in_quarantine"] == 1
    assert dovecot.message_count(harness.user) == 1  # left on the server

    capsys.readouterr()
    assert main(["quarantine", "list", "--bucket", aws.bucket, "--mailbox", "q", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["quarantined"]
    assert [r["digest"] for r in listed] == [uidl_digest(poison_uidl)]
    assert listed[0]["failures"] == 2

    assert main(["quarantine", "release", "--bucket", aws.bucket, "--mailbox", "q"]) == 0
    fourth = harness.run()
    assert fourth["deleted"] == 1
    assert dovecot.message_count(harness.user) == 0
    assert main(["quarantine", "list", "--bucket", aws.bucket, "--mailbox", "q", "--json"]) == 0
