"""The first deploy's placeholder secret, through the real handler, Dovecot and moto.

Until an operator writes the mailbox's settings, the schedule's runs end
"not_configured": one INFO line that says how, no login, no state, no error,
no error metric. Once the settings are written, the very next run takes them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from tests.support import corpus
from tests.support.cfn_template import load_template
from tests.support.harness import CapturedOutput, Harness
from tests.support.lambda_context import FakeLambdaContext

from pop3_ingest.errors import SecretError

pytestmark = pytest.mark.integration

ERROR_METRICS = ("ConfigInvalid", "LoginFailed", "LoginSuspended", "ConnectFailed", "RunsError")


def placeholder_secret() -> dict[str, Any]:
    """MailboxSecret as Secrets Manager fills it in from template.yaml."""
    generated = load_template().props("MailboxSecret")["GenerateSecretString"]
    secret: dict[str, Any] = json.loads(generated["SecretStringTemplate"])
    return secret | {generated["GenerateStringKey"]: "Generated-Password-0123456789abcd"}


def metric_total(output: CapturedOutput, name: str) -> float:
    total = 0.0
    for record in output.records():
        if "_aws" in record and name in record:
            value = record[name]
            total += sum(value) if isinstance(value, list) else value
    return total


def test_the_placeholder_is_not_polled_until_the_operator_writes_the_secret(
    harness: Harness, output: CapturedOutput
) -> None:
    harness.dovecot.deliver(harness.user, corpus.simple(1).raw_for_maildir)
    secret_id = harness.configure(placeholder_secret())

    summary = harness.run()

    assert summary["stopped"] == "not_configured"
    assert harness.aws.keys() == []  # no state, no lease, no mail
    assert harness.aws.receive_all() == []
    assert harness.dovecot.message_count(harness.user) == 1
    records = output.records()
    assert [r for r in records if r.get("level") == "ERROR"] == []
    (hint,) = [r for r in records if "not configured yet" in str(r.get("message"))]
    assert hint["level"] == "INFO"
    assert "put-secret-value" in hint["message"]
    (finished,) = [r for r in records if r.get("message") == "run finished"]
    assert (finished["outcome"], finished["health"]) == ("not_configured", "attention")
    assert finished["secret_id"] == secret_id
    assert metric_total(output, "RunsNotConfigured") == 1
    for metric in ERROR_METRICS:
        assert metric_total(output, metric) == 0, metric

    # The operator writes the mailbox's settings; the secret cache still holds the
    # placeholder, and the next run reads past it.
    harness.aws.moto.create_secret(secret_id, harness.dovecot.secret(harness.user))
    summary = harness.run()
    assert summary["stopped"] == "completed"
    assert summary["stored"] == summary["deleted"] == 1
    assert harness.dovecot.message_count(harness.user) == 0


def test_a_half_written_placeholder_with_a_bad_field_still_fails(harness: Harness) -> None:
    harness.configure(placeholder_secret() | {"pasword": "typo"})
    with pytest.raises(SecretError, match="pasword"):
        harness.run()


def _job(secret_id: str) -> dict[str, Any]:
    body = json.dumps({"secret_id": secret_id})
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {"MessageGroupId": secret_id, "ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs.fifo",
        "awsRegion": "us-east-1",
    }


def test_in_fleet_mode_a_placeholder_job_is_skipped_not_failed(
    harness: Harness, output: CapturedOutput, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pop3_ingest.handlers.fetch import lambda_handler

    harness.dovecot.deliver(harness.user, corpus.simple(1).raw_for_maildir)
    secret_id = harness.configure(placeholder_secret())
    monkeypatch.delenv("SECRET_ID")
    monkeypatch.setenv("MODE", "fleet")

    response = lambda_handler({"Records": [_job(secret_id)]}, FakeLambdaContext(120_000))

    assert response == {"batchItemFailures": []}  # not delivered again, not DLQ-bound
    (finished,) = [r for r in output.records() if r.get("message") == "run finished"]
    assert finished["outcome"] == "not_configured"
    assert [key for key in harness.aws.keys() if "/_state/" in key] == []
    assert harness.dovecot.message_count(harness.user) == 1
