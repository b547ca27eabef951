"""The consumer example (examples/consumer) on pointers the real ingester sent: the real
handler against Dovecot and moto, then the example's handler on the queue's messages.
And its SAM snippet: least privilege, the ingester's exports, the locked Powertools."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

import pytest
from scripts.check_powertools_layer import layer_references, load_template, locked_release
from tests.support import corpus
from tests.support.cfn_template import REPO_ROOT, as_list
from tests.support.harness import Harness
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "consumer"
AUTO_REPLY = (
    b"Return-Path: <>\r\n"
    b"From: Out of office <robot@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: =?utf-8?q?Abwesenheitsnotiz=3A_Bestellung?=\r\n"
    b"Message-ID: <auto-1@example.org>\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"Precedence: bulk\r\n"
    b"List-Id: Support <support.lists.example.org>\r\n"
    b"In-Reply-To: <question-1@example.com>\r\n"
    b"References: <root@example.com>\r\n <question-1@example.com>\r\n"
    b"\r\n"
    b"I am away until Monday.\r\n"
)


@pytest.fixture(scope="module")
def app() -> ModuleType:
    """examples/consumer/app.py, imported as the Lambda runtime would (a top-level module)."""
    spec = importlib.util.spec_from_file_location("consumer_app", EXAMPLE / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["consumer_app"] = module
    spec.loader.exec_module(module)
    return module


def ingest(harness: Harness, *raw: bytes) -> list[dict[str, Any]]:
    """Deliver ``raw`` to Dovecot, run the real ingester once; the SQS messages it sent."""
    for message in raw:
        harness.dovecot.deliver(harness.user, message)
    harness.configure(harness.dovecot.secret(harness.user, mailbox="support"))
    assert harness.run()["announced"] == len(raw)
    received: list[dict[str, Any]] = []
    while True:
        batch = harness.aws.sqs.receive_message(
            QueueUrl=harness.aws.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not batch:
            return received
        received += batch


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS event source hands the consumer."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:mail-queue",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def test_the_consumer_verifies_parses_and_tells_auto_replies_apart(
    harness: Harness, app: ModuleType
) -> None:
    person = corpus.simple(1)
    messages = ingest(harness, person.raw_for_maildir, AUTO_REPLY)
    pointers = [json.loads(m["Body"]) for m in messages]

    received = {r.message_id: r for r in (app.receive(p, harness.aws.s3) for p in pointers)}

    assert received[person.message_id].subject == person.subject
    assert received[person.message_id].sender == person.from_addr
    assert not received[person.message_id].automatic
    reply = received["<auto-1@example.org>"]
    assert reply.subject == "Abwesenheitsnotiz: Bestellung"
    assert reply.sender == "Out of office <robot@example.org>"
    assert reply.automatic


def test_the_pointer_carries_the_loop_and_thread_headers(harness: Harness) -> None:
    (message,) = ingest(harness, AUTO_REPLY)
    pointer = json.loads(message["Body"])
    assert pointer["auto_submitted"] == "auto-replied"
    assert pointer["precedence"] == "bulk"
    assert pointer["return_path"] == "<>"
    assert pointer["list_id"] == "Support <support.lists.example.org>"
    assert pointer["in_reply_to"] == "<question-1@example.com>"
    assert pointer["references"] == "<root@example.com> <question-1@example.com>"


def test_a_batch_with_bytes_that_are_not_the_announced_ones_fails_only_that_record(
    harness: Harness, app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = ingest(harness, corpus.simple(1).raw_for_maildir, corpus.simple(2).raw_for_maildir)
    tampered = json.loads(messages[1]["Body"])
    harness.aws.s3.put_object(Bucket=tampered["bucket"], Key=tampered["key"], Body=b"other")
    monkeypatch.setattr(app, "s3_client", lambda: harness.aws.s3)

    response = app.lambda_handler(sqs_event(messages), FakeLambdaContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": messages[1]["MessageId"]}]}
    with pytest.raises(app.NotTheAnnouncedBytes):
        app.receive(tampered, harness.aws.s3)


def test_a_pointer_of_an_unknown_version_is_refused(app: ModuleType) -> None:
    with pytest.raises(ValueError, match="version 2 is not understood"):
        app.receive({"version": 2, "bucket": "b", "key": "k", "sha256": "0" * 64})


# -- the SAM snippet ----------------------------------------------------------------


def snippet() -> dict[str, Any]:
    return load_template(EXAMPLE / "template-snippet.yaml")


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    role = document["Resources"]["ConsumerRole"]["Properties"]
    found = []
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                _, statement, _ = statement["Fn::If"]
            found.append(statement)
    return found


def imports(value: Any) -> list[str]:
    """The exports a value imports (``<stack>-Name`` as ``-Name``)."""
    text = json.dumps(value)
    return sorted({part.split('"')[0] for part in text.split("${IngestStackName}")[1:]})


def test_the_snippet_subscribes_to_the_exported_pointer_queue(app: ModuleType) -> None:
    document = snippet()
    function = document["Resources"]["ConsumerFunction"]["Properties"]
    (event,) = function["Events"].values()
    assert event["Type"] == "SQS"
    assert imports(event["Properties"]["Queue"]) == ["-QueueArn"]
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    module, handler = function["Handler"].split(".")
    assert (EXAMPLE / f"{module}.py").exists()
    assert callable(getattr(app, handler))
    # SAM's own role for an SQS event would allow every queue: the snippet brings its own.
    assert "Role" in function
    assert "Policies" not in function


def test_the_snippet_may_read_mail_objects_and_nothing_else_of_the_bucket() -> None:
    allowed = [s for s in statements(snippet()) if s["Effect"] == "Allow"]
    s3 = [s for s in allowed if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    assert [s["Action"] for s in s3] == ["s3:GetObject"]
    assert imports(s3[0]["Resource"]) == ["-BucketArn", "-KeyPrefix"]
    assert json.dumps(s3[0]["Resource"]).count("${BucketArn}/${KeyPrefix}*") == 1
    denied = [s for s in statements(snippet()) if s["Effect"] == "Deny"]
    assert "_state/*" in json.dumps(denied)
    assert "_quarantine/*" in json.dumps(denied)
    for statement in allowed:
        assert "*" not in as_list(statement["Resource"]), statement
        assert not any(a.endswith("*") for a in as_list(statement["Action"])), statement
    (sqs,) = [s for s in allowed if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
    assert imports(sqs["Resource"]) == ["-QueueArn"]


def test_the_snippet_runs_the_powertools_the_tests_ran_with() -> None:
    locked = locked_release((REPO_ROOT / "requirements.lock").read_text(encoding="utf-8"))
    (reference,) = layer_references(snippet())
    assert reference.release == locked
