"""Where mail and pointers are kept: private, encrypted, TLS only, never silently lost."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.cfn_template import Template, as_list

# Every secret field the function accepts (docs/configuration.md); it refuses others.
SECRET_FIELDS = {"host", "port", "tls", "username", "password", "ca_cert", "mailbox", "delete"}
# SQS keeps a message for at most 14 days.
SQS_MAX_RETENTION_S = 14 * 86400
DENY_PLAIN_HTTP = {"Bool": {"aws:SecureTransport": "false"}}


def _bucket(template: Template) -> dict[str, Any]:
    return template.props("MailBucket")


def _lifecycle(template: Template, params: dict[str, str]) -> list[dict[str, Any]]:
    rules = _bucket(template)["LifecycleConfiguration"]["Rules"]
    resolved: list[dict[str, Any]] = template.resolve(rules, params)
    return resolved


def _denies(statements: list[dict[str, Any]], condition: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        st
        for st in statements
        if st["Effect"] == "Deny" and st["Principal"] == "*" and st.get("Condition") == condition
    ]


def test_the_bucket_is_private(template: Template) -> None:
    bucket = _bucket(template)
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_the_bucket_takes_only_tls_1_2_or_later(template: Template) -> None:
    (policy,) = [
        r["Properties"]
        for r in template.of_type("AWS::S3::BucketPolicy").values()
        if r["Properties"]["Bucket"] == {"Ref": "MailBucket"}
    ]
    statements = policy["PolicyDocument"]["Statement"]
    everything = [{"Fn::GetAtt": ["MailBucket", "Arn"]}, {"Fn::Sub": "${MailBucket.Arn}/*"}]
    for condition in (DENY_PLAIN_HTTP, {"NumericLessThan": {"s3:TlsVersion": "1.2"}}):
        (deny,) = _denies(statements, condition)
        assert deny["Action"] == "s3:*"
        assert as_list(deny["Resource"]) == everything


def test_the_bucket_is_encrypted_with_the_key_when_given(template: Template) -> None:
    config = _bucket(template)["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    for params in template.cases():
        (rule,) = template.resolve(config, params)
        default = rule["ServerSideEncryptionByDefault"]
        if params["KmsKeyArn"]:
            assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": params["KmsKeyArn"]}
            assert rule["BucketKeyEnabled"] is True
        else:
            assert default == {"SSEAlgorithm": "AES256"}


def test_stored_mail_outlives_the_stack_and_overwrites(template: Template) -> None:
    bucket = template.resources["MailBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    assert _bucket(template)["VersioningConfiguration"] == {"Status": "Enabled"}
    assert template.parameters["NoncurrentVersionRetentionDays"]["MinValue"] >= 1
    for params in template.cases():
        (versions,) = [  # the bucket-wide rule (the run states have their own)
            r
            for r in _lifecycle(template, params)
            if "NoncurrentVersionExpiration" in r and "Prefix" not in r
        ]
        assert versions["Status"] == "Enabled"
        assert versions["ExpiredObjectDeleteMarker"] is True
        days = versions["NoncurrentVersionExpiration"]["NoncurrentDays"]
        assert days == int(params["NoncurrentVersionRetentionDays"])


def test_mail_expires_only_when_the_operator_sets_a_retention(template: Template) -> None:
    assert template.params()["RetentionDays"] == "0", "the default keeps mail"
    assert template.parameters["RetentionDays"]["MinValue"] == 0
    for params in template.cases():
        expiring = [r for r in _lifecycle(template, params) if "ExpirationInDays" in r]
        assert not [r for r in _lifecycle(template, params) if "ExpirationDate" in r]
        if params["RetentionDays"] == "0":
            assert expiring == []
            continue
        (rule,) = expiring
        assert rule["Status"] == "Enabled"
        assert rule["ExpirationInDays"] == int(params["RetentionDays"])
        # Only the mail the function writes: the prefix of its grant.
        assert rule["Prefix"] == params["KeyPrefix"]


def test_incomplete_multipart_uploads_are_aborted_everywhere(template: Template) -> None:
    rules = _lifecycle(template, template.params())
    (aborting,) = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert aborting["Status"] == "Enabled"
    assert aborting["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert "Prefix" not in aborting


def test_every_queue_is_encrypted_with_the_key_when_given_and_by_sqs_otherwise(
    template: Template,
) -> None:
    for name, queue in template.of_type("AWS::SQS::Queue").items():
        for params in template.cases():
            props = template.resolve(queue["Properties"], params)
            if params["KmsKeyArn"]:
                assert props.get("KmsMasterKeyId") == params["KmsKeyArn"], name
                assert props.get("SqsManagedSseEnabled") is False, name
            else:
                assert props.get("SqsManagedSseEnabled") is True, name
                assert props.get("KmsMasterKeyId") is None, name


def test_every_queue_refuses_plain_http(template: Template) -> None:
    covered = set()
    for name, policy in template.of_type("AWS::SQS::QueuePolicy").items():
        props = policy["Properties"]
        (deny,) = _denies(props["PolicyDocument"]["Statement"], DENY_PLAIN_HTTP)
        assert as_list(deny["Action"]) == ["sqs:*"], name
        for queue in props["Queues"]:
            assert {"Fn::GetAtt": [queue["Ref"], "Arn"]} in deny["Resource"], name
            # A policy exists exactly when its queues do.
            assert template.resources[queue["Ref"]].get("Condition") == policy.get("Condition")
            covered.add(queue["Ref"])
    assert covered == set(template.of_type("AWS::SQS::Queue"))


def test_every_queue_has_a_dead_letter_queue_that_keeps_messages_longer(
    template: Template,
) -> None:
    dead_letter = template.dead_letter_queues()
    queues = set(template.of_type("AWS::SQS::Queue"))
    assert set(dead_letter) | set(dead_letter.values()) == queues
    for queue, dlq in dead_letter.items():
        props, dlq_props = template.props(queue), template.props(dlq)
        assert dlq != queue
        assert "RedrivePolicy" not in dlq_props, "a dead-letter queue is the end of the line"
        assert int(props["RedrivePolicy"]["maxReceiveCount"]) >= 2, "one failure is no verdict"
        # A FIFO queue's dead-letter queue must be FIFO too.
        assert dlq_props.get("FifoQueue", False) == props.get("FifoQueue", False)
        assert template.resources[dlq].get("Condition") == template.resources[queue].get(
            "Condition"
        )
        assert int(dlq_props["MessageRetentionPeriod"]) == SQS_MAX_RETENTION_S
        assert int(props["MessageRetentionPeriod"]) < SQS_MAX_RETENTION_S


@pytest.mark.parametrize("function", ["FetchFunction", "ReconcileFunction"])
def test_each_function_logs_to_its_own_log_group_kept_as_long_as_asked(
    template: Template, function: str
) -> None:
    log_group = template.props(function)["LoggingConfig"]["LogGroup"]["Ref"]
    others = [
        template.props(f)["LoggingConfig"]["LogGroup"]["Ref"]
        for f in template.functions()
        if f != function
    ]
    assert log_group not in others
    resource = template.resources[log_group]
    assert resource["Type"] == "AWS::Logs::LogGroup"
    assert resource.get("Condition") == template.resources[function].get("Condition")
    props = resource["Properties"]
    assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    for params in template.cases():
        assert template.resolve(props.get("KmsKeyId"), params) == (params["KmsKeyArn"] or None)


def test_the_created_secret_is_a_placeholder_the_function_accepts(template: Template) -> None:
    secret = template.props("MailboxSecret")
    generate = secret["GenerateSecretString"]
    placeholder = set(json.loads(generate["SecretStringTemplate"]))
    assert {"host", "username"} <= placeholder
    assert generate["GenerateStringKey"] == "password"
    # The function refuses unknown fields: the placeholder carries none.
    assert placeholder | {"password"} <= SECRET_FIELDS
    for params in template.cases():
        assert template.resolve(secret.get("KmsKeyId"), params) == (params["KmsKeyArn"] or None)


def test_a_secret_is_created_only_when_none_is_given(template: Template) -> None:
    secret_id = template.props("FetchFunction")["Environment"]["Variables"]["SECRET_ID"]
    for params in template.cases():
        created = template.exists("MailboxSecret", params)
        assert created == (params["ExistingSecretArn"] == "")
        chosen = template.resolve(secret_id, params)
        assert chosen == ({"Ref": "MailboxSecret"} if created else params["ExistingSecretArn"])
