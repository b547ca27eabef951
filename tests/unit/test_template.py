"""Static checks of the SAM template: what the function gets, and what it may do."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# The fields the mailbox secret may hold (docs/configuration.md); anything else is rejected.
SECRET_FIELDS = {"host", "port", "tls", "username", "password", "ca_cert", "mailbox", "delete"}
GUARDED_SERVICES = ("s3:", "sqs:", "secretsmanager:")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    # Round-trip through JSON to turn cfn-lint's node types into plain dicts/lists/strs.
    return json.loads(json.dumps(load(str(TEMPLATE))))


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


@pytest.fixture(scope="module")
def function(resources: dict[str, Any]) -> dict[str, Any]:
    fn = resources["FetchFunction"]
    assert fn["Type"] == "AWS::Serverless::Function"
    return fn["Properties"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _branches(value: Any) -> Iterator[Any]:
    """Every concrete value an Fn::If may resolve to (AWS::NoValue dropped)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, when_true, when_false = value["Fn::If"]
        yield from _branches(when_true)
        yield from _branches(when_false)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def _getatt(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        att = value["Fn::GetAtt"]
        name, attr = att.split(".", 1) if isinstance(att, str) else att
        return name, attr
    return None


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in _as_list(function.get("Policies", [])):
        for doc in _branches(policy):
            # Managed policies and SAM policy templates are strings or other dict shapes.
            assert isinstance(doc, dict), f"only explicit inline statements, got {doc!r}"
            assert "Statement" in doc, f"only explicit inline statements, got {doc!r}"
            for st in _as_list(doc["Statement"]):
                statements.extend(_branches(st))
    assert statements, "the function has no IAM statements"
    return statements


def test_function_runtime_architecture_and_handler(function: dict[str, Any]) -> None:
    assert function["Runtime"] in {"python3.12", "python3.13"}
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == "pop3_ingest.app.lambda_handler"
    assert function["CodeUri"].rstrip("/") == "functions"
    assert function["Tracing"] == "Active"


def test_powertools_layer_matches_runtime_and_architecture(function: dict[str, Any]) -> None:
    layers = [lay["Fn::Sub"] if isinstance(lay, dict) else lay for lay in function["Layers"]]
    runtime_tag = function["Runtime"].replace(".", "")  # python3.12 -> python312
    pattern = re.compile(
        r"^arn:aws:lambda:\$\{AWS::Region\}:017000801446:layer:"
        rf"AWSLambdaPowertoolsPythonV3-{runtime_tag}-arm64:(\d+|\$\{{\w+\}})$"
    )
    assert any(pattern.match(layer) for layer in layers), layers


def test_function_environment(function: dict[str, Any], resources: dict[str, Any]) -> None:
    env = function["Environment"]["Variables"]
    for name in (
        "SECRET_ID",
        "BUCKET_NAME",
        "QUEUE_URL",
        "KEY_PREFIX",
        "MAX_MESSAGES_PER_RUN",
        "DEADLINE_MARGIN_SECONDS",
        "POP3_TIMEOUT_SECONDS",
    ):
        assert name in env, name
    assert env["BUCKET_NAME"] == {"Ref": "MailBucket"}
    assert resources["MailBucket"]["Type"] == "AWS::S3::Bucket"
    assert env["QUEUE_URL"] == {"Ref": "PointerQueue"}
    assert resources["PointerQueue"]["Type"] == "AWS::SQS::Queue"
    assert env["POWERTOOLS_SERVICE_NAME"] == "pop3-ingest"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Pop3Ingest"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_secret_is_created_only_without_an_existing_one(
    template: dict[str, Any], function: dict[str, Any], resources: dict[str, Any]
) -> None:
    assert template["Parameters"]["ExistingSecretArn"]["Default"] == ""
    secret_id = function["Environment"]["Variables"]["SECRET_ID"]
    assert list(_branches(secret_id)) == [{"Ref": "MailboxSecret"}, {"Ref": "ExistingSecretArn"}]
    condition = secret_id["Fn::If"][0]
    assert template["Conditions"][condition] == {"Fn::Equals": [{"Ref": "ExistingSecretArn"}, ""]}

    secret = resources["MailboxSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Condition"] == condition
    generate = secret["Properties"]["GenerateSecretString"]
    placeholder = json.loads(generate["SecretStringTemplate"])
    assert {"host", "username"} <= set(placeholder)
    assert generate["GenerateStringKey"] == "password"
    # The function rejects unknown fields, so the placeholder must not carry any.
    assert set(placeholder) | {"password"} <= SECRET_FIELDS


def test_schedule_uses_the_expression_parameter(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    param = template["Parameters"]["ScheduleExpression"]
    assert param["Default"] == "rate(5 minutes)"
    schedules = [
        e["Properties"]
        for e in function["Events"].values()
        if e["Type"] in {"Schedule", "ScheduleV2"}
    ]
    assert len(schedules) == 1
    props = schedules[0]
    expression = props.get("Schedule", props.get("ScheduleExpression"))
    assert expression == {"Ref": "ScheduleExpression"}
    # It can be switched off by a parameter.
    state = props.get("State", props.get("Enabled"))
    assert isinstance(state, dict), state
    assert "Fn::If" in state, state


def test_failed_runs_are_not_retried(function: dict[str, Any]) -> None:
    # A retried failing login risks locking the POP3 account.
    assert function["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_queue_redrives_to_a_dead_letter_queue(resources: dict[str, Any]) -> None:
    queue = resources["PointerQueue"]["Properties"]
    redrive = queue["RedrivePolicy"]
    dlq_name, attr = _getatt(redrive["deadLetterTargetArn"]) or ("", "")
    assert attr == "Arn"
    assert dlq_name != "PointerQueue"
    dlq = resources[dlq_name]
    assert dlq["Type"] == "AWS::SQS::Queue"
    assert int(redrive["maxReceiveCount"]) == 5
    assert queue["SqsManagedSseEnabled"] is True
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert int(queue["MessageRetentionPeriod"]) == 4 * 86400
    assert int(dlq["Properties"]["MessageRetentionPeriod"]) == 14 * 86400


def test_iam_statements_are_scoped(function: dict[str, Any]) -> None:
    for st in _statements(function):
        actions = [a.lower() for a in _as_list(st.get("Action", []))]
        assert "NotAction" not in st, st
        assert "NotResource" not in st, st
        assert "*" not in actions, st
        guarded = [a for a in actions if a.startswith(GUARDED_SERVICES)]
        if st.get("Effect") != "Allow" or not guarded:
            continue
        assert not any("*" in a for a in guarded), f"wildcard action in {st}"
        for resource in _as_list(st["Resource"]):
            for value in _branches(resource):
                text = value.get("Fn::Sub", value) if isinstance(value, dict) else value
                assert text != "*", f"'*' resource in {st}"
                if isinstance(text, str):
                    assert not text.startswith("*"), st


def test_iam_grants_what_the_function_needs(function: dict[str, Any]) -> None:
    by_action: dict[str, list[Any]] = {}
    for st in _statements(function):
        if st.get("Effect") == "Allow":
            for action in _as_list(st["Action"]):
                by_action.setdefault(action, []).extend(_as_list(st["Resource"]))
    for action in ("s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"):
        assert by_action[action] == [{"Fn::Sub": "${MailBucket.Arn}/${KeyPrefix}*"}], action
    assert by_action["sqs:SendMessage"] == [{"Fn::GetAtt": ["PointerQueue", "Arn"]}]
    secret_resources = [v for r in by_action["secretsmanager:GetSecretValue"] for v in _branches(r)]
    assert {"Ref": "MailboxSecret"} in secret_resources
    assert {"Ref": "ExistingSecretArn"} in secret_resources
    assert "cloudwatch:PutMetricData" not in by_action


def test_key_prefix_cannot_widen_the_object_grant(template: dict[str, Any]) -> None:
    param = template["Parameters"]["KeyPrefix"]
    assert param["Default"] == "mail/"
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.match("mail/")
    assert pattern.match("inbox/alice/")
    for bad in ("", "/", "*/", "mail", "mail/*/", "../"):
        assert not pattern.fullmatch(bad), bad


def test_bucket_blocks_public_access_and_plain_http(resources: dict[str, Any]) -> None:
    bucket = resources["MailBucket"]["Properties"]
    block = bucket["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = [r for rule in bucket["LifecycleConfiguration"]["Rules"] for r in _branches(rule)]
    assert any(
        r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in rules
    )

    policies = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy"
        and r["Properties"]["Bucket"] == {"Ref": "MailBucket"}
    ]
    assert len(policies) == 1
    denies = [
        st
        for st in policies[0]["PolicyDocument"]["Statement"]
        if st["Effect"] == "Deny"
        and str(st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower()
        == "false"
    ]
    assert denies, "no statement denies aws:SecureTransport=false"
    resources_denied = _as_list(denies[0]["Resource"])
    assert {"Fn::GetAtt": ["MailBucket", "Arn"]} in resources_denied
    assert {"Fn::Sub": "${MailBucket.Arn}/*"} in resources_denied


def test_logs_have_a_retention(template: dict[str, Any], function: dict[str, Any]) -> None:
    log_group_ref = function["LoggingConfig"]["LogGroup"]
    log_group = template["Resources"][log_group_ref["Ref"]]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    retention = log_group["Properties"]["RetentionInDays"]
    assert template["Parameters"][retention["Ref"]]["Default"] == 30


def test_outputs(template: dict[str, Any]) -> None:
    assert {"BucketName", "QueueUrl", "DeadLetterQueueUrl", "FunctionName", "SecretArn"} <= set(
        template["Outputs"]
    )


@pytest.mark.parametrize(
    ("name", "has_override"),
    [("scheduled-event.json", False), ("scheduled-event-override.json", True)],
)
def test_sample_events(name: str, has_override: bool) -> None:
    event = json.loads((ROOT / "events" / name).read_text())
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"][0].startswith("arn:aws:events:")
    assert ("secret_id" in event) is has_override
