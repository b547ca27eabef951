"""Many mailbox secrets in few calls (integrations/secrets.py), with botocore's Stubber.

A batch's secrets are read with BatchGetSecretValue, 20 per call, into the same
cache single reads use; each secret's problem is its own SecretError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pop3_ingest.errors import SecretError
from pop3_ingest.integrations.secrets import BATCH_LIMIT, MailboxSecrets

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"


def secret(name: str) -> dict[str, Any]:
    return {"host": "pop.example.com", "username": name, "password": f"pw-{name}"}


def value(name: str, text: str | None = None) -> dict[str, Any]:
    return {
        "Name": name,
        "ARN": ARN.format(name=name),
        "SecretString": json.dumps(secret(name)) if text is None else text,
    }


@pytest.fixture
def provider() -> Iterator[tuple[MailboxSecrets, Stubber]]:
    client = boto3.session.Session().client(
        "secretsmanager",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield MailboxSecrets(boto3_client=client), stubber
        stubber.assert_no_pending_responses()


def test_secrets_are_read_twenty_per_call_then_come_from_the_cache(
    provider: tuple[MailboxSecrets, Stubber],
) -> None:
    secrets, stub = provider
    names = [f"pop3/user{n:02d}" for n in range(BATCH_LIMIT + 5)]
    for chunk in (names[:BATCH_LIMIT], names[BATCH_LIMIT:]):
        stub.add_response(
            "batch_get_secret_value",
            {"SecretValues": [value(name) for name in chunk], "Errors": []},
            {"SecretIdList": chunk},
        )
    assert secrets.get_each(names) == {name: secret(name) for name in names}
    # Cached for single reads and the next batch alike: no further call is stubbed.
    assert secrets.get_each(names[:3]) == {name: secret(name) for name in names[:3]}
    assert secrets.get("pop3/user07", transform="json", max_age=300) == secret("pop3/user07")


def test_each_secret_s_problem_is_its_own(provider: tuple[MailboxSecrets, Stubber]) -> None:
    secrets, stub = provider
    arn = ARN.format(name="pop3/by-arn")
    stub.add_response(
        "batch_get_secret_value",
        {
            "SecretValues": [value("pop3/good"), value("pop3/by-arn"), value("pop3/bad", "{")],
            "Errors": [
                {"SecretId": "pop3/gone", "ErrorCode": "ResourceNotFoundException", "Message": "x"}
            ],
        },
        {"SecretIdList": ["pop3/good", arn, "pop3/bad", "pop3/gone", "pop3/unanswered"]},
    )
    # Neither answered nor refused in the batch: read on its own.
    stub.add_response(
        "get_secret_value",
        {"Name": "pop3/unanswered", "SecretString": json.dumps(secret("unanswered"))},
        {"SecretId": "pop3/unanswered"},
    )
    got = secrets.get_each(["pop3/good", arn, "pop3/bad", "pop3/gone", "pop3/unanswered"])
    assert got["pop3/good"] == secret("pop3/good")
    assert got[arn] == secret("pop3/by-arn")  # asked for by ARN, found by ARN
    assert got["pop3/unanswered"] == secret("unanswered")
    assert isinstance(got["pop3/bad"], SecretError)
    assert "not valid JSON" in str(got["pop3/bad"])
    assert isinstance(got["pop3/gone"], SecretError)
    assert "ResourceNotFoundException" in str(got["pop3/gone"])


def test_a_failed_batch_call_is_every_secret_s_error(
    provider: tuple[MailboxSecrets, Stubber],
) -> None:
    secrets, stub = provider
    stub.add_client_error(
        "batch_get_secret_value", service_error_code="AccessDeniedException", http_status_code=400
    )
    got = secrets.get_each(["pop3/a", "pop3/b"])
    assert set(got) == {"pop3/a", "pop3/b"}
    for name, error in got.items():
        assert isinstance(error, SecretError)
        assert name in str(error)
        assert "AccessDeniedException" in str(error)
