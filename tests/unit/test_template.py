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
GUARDED_SERVICES = ("s3:", "sqs:", "secretsmanager:", "kms:", "logs:")
SECURITY_DOC = ROOT / "docs" / "security.md"

# Everything the function may do. Adding an action is a security-review decision:
# change this set, template.yaml and docs/security.md together.
ALLOWED_ACTIONS = {
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:GetObject",
    "s3:ListBucket",
    "sqs:SendMessage",
    "secretsmanager:GetSecretValue",
    "kms:GenerateDataKey",
    "kms:Decrypt",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# Mode fleet: what the SQS event source polls the jobs queue with (it uses the
# function's own role), granted only on the jobs queue and only in Mode fleet.
JOB_CONSUMER_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}
ALLOWED_ACTIONS |= JOB_CONSUMER_ACTIONS
# Everything the dispatcher (Mode fleet) may do: find the tagged secrets (names and
# tags, never values), enqueue jobs, its logs and traces, the stack's key via SQS.
DISPATCH_ALLOWED_ACTIONS = {
    "secretsmanager:ListSecrets",
    "sqs:SendMessage",
    "kms:GenerateDataKey",
    "kms:Decrypt",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# X-Ray and ListSecrets have no resource-level permissions: the only actions allowed on "*".
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
STAR_RESOURCE_ACTIONS = {
    "FetchFunction": XRAY_ACTIONS,
    "DispatchFunction": XRAY_ACTIONS | {"secretsmanager:ListSecrets"},
}
# The tag that enables a mailbox secret in Mode fleet (docs/configuration.md).
MAILBOX_TAG = ("pop3-ingest", "enabled")
# The resources that exist only in Mode fleet.
FLEET_RESOURCES = {
    "DispatchFunction",
    "DispatchFunctionRole",
    "DispatchLogGroup",
    "JobsQueue",
    "JobsDeadLetterQueue",
    "JobsQueuesPolicy",
    "JobsEventSource",
    "FetchJobsPolicy",
    "DispatchErrorsAlarm",
    "JobsDeadLetterQueueAlarm",
}
NO_ACTIONS = {"Ref": "AWS::NoValue"}
TOPIC_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], NO_ACTIONS]}


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


@pytest.fixture(scope="module")
def dispatcher(resources: dict[str, Any]) -> dict[str, Any]:
    fn = resources["DispatchFunction"]
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


def _not_empty(name: str) -> dict[str, Any]:
    return {"Fn::Not": [{"Fn::Equals": [{"Ref": name}, ""]}]}


def _role_name(function: dict[str, Any]) -> str:
    role = _getatt(function["Role"])
    assert role is not None, "the function must use the stack's own role"
    assert role[1] == "Arn"
    return role[0]


def _policy_documents(
    function: dict[str, Any], resources: dict[str, Any]
) -> list[tuple[str | None, dict[str, Any]]]:
    """(condition, document) of every policy the function's role gets."""
    role_name = _role_name(function)
    role = resources[role_name]
    assert role["Type"] == "AWS::IAM::Role"
    docs: list[tuple[str | None, dict[str, Any]]] = [
        (None, policy["PolicyDocument"]) for policy in role["Properties"].get("Policies", [])
    ]
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_name} in _as_list(
            resource["Properties"].get("Roles", [])
        ):
            docs.append((resource.get("Condition"), resource["Properties"]["PolicyDocument"]))
    return docs


def _statements(
    function: dict[str, Any], resources: dict[str, Any]
) -> list[tuple[str | None, dict[str, Any]]]:
    """(condition, statement) of every statement the function's role may hold."""
    statements = []
    for condition, doc in _policy_documents(function, resources):
        assert isinstance(doc, dict), f"only explicit inline statements, got {doc!r}"
        for st in _as_list(doc["Statement"]):
            # Optional grants are separate policies with a Condition, never Fn::If
            # inside a statement list (checkov cannot evaluate those).
            assert "Fn::If" not in st, st
            statements.append((condition, st))
    assert statements, "the function has no IAM statements"
    return statements


def _allowed(
    function: dict[str, Any], resources: dict[str, Any]
) -> dict[str, list[tuple[str | None, Any]]]:
    """action -> [(condition, resource)] over every Allow statement."""
    by_action: dict[str, list[tuple[str | None, Any]]] = {}
    for condition, st in _statements(function, resources):
        if st["Effect"] == "Allow":
            for action in _as_list(st["Action"]):
                for resource in _as_list(st["Resource"]):
                    by_action.setdefault(action, []).append((condition, resource))
    return by_action


def _alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in resources.items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def _insights_query(alarm: dict[str, Any]) -> str:
    metrics = alarm["Properties"]["Metrics"]
    assert len(metrics) == 1, metrics
    assert metrics[0]["ReturnData"] is True
    query = metrics[0]["Expression"]
    assert query.startswith("SELECT "), query
    return str(query)


def _checkov_skips(resources: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(resource, check id, comment) of every checkov skip in the template."""
    return [
        (name, skip["id"], skip.get("comment", ""))
        for name, resource in resources.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]


def test_function_runtime_architecture_and_handler(function: dict[str, Any]) -> None:
    assert function["Runtime"] in {"python3.12", "python3.13"}
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == "pop3_ingest.handlers.fetch.lambda_handler"
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


def _schedule(function: dict[str, Any]) -> dict[str, Any]:
    schedules = [
        e["Properties"]
        for e in function["Events"].values()
        if e["Type"] in {"Schedule", "ScheduleV2"}
    ]
    assert len(schedules) == 1, function["Events"]
    props = schedules[0]
    expression = props.get("Schedule", props.get("ScheduleExpression"))
    assert expression == {"Ref": "ScheduleExpression"}
    return props


def _condition_of_state(template: dict[str, Any], schedule: dict[str, Any]) -> Any:
    """The condition definition that switches a schedule between ENABLED and DISABLED."""
    state = schedule.get("State")
    assert isinstance(state, dict), state
    assert set(state) == {"Fn::If"}, state
    condition, when_true, when_false = state["Fn::If"]
    assert (when_true, when_false) == ("ENABLED", "DISABLED")
    return template["Conditions"][condition]


def test_schedule_uses_the_expression_parameter(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    param = template["Parameters"]["ScheduleExpression"]
    assert param["Default"] == "rate(5 minutes)"
    # The fetch function's own schedule fires only in Mode single, and only while
    # ScheduleEnabled is true; in Mode fleet the jobs queue invokes the function.
    assert _condition_of_state(template, _schedule(function)) == {
        "Fn::And": [{"Condition": "ScheduleOn"}, {"Condition": "SingleMode"}]
    }
    assert template["Conditions"]["ScheduleOn"] == {
        "Fn::Equals": [{"Ref": "ScheduleEnabled"}, "true"]
    }
    assert template["Conditions"]["SingleMode"] == {"Fn::Equals": [{"Ref": "Mode"}, "single"]}


def test_dispatcher_schedule_replaces_the_fetch_schedule_in_fleet_mode(
    template: dict[str, Any], dispatcher: dict[str, Any], resources: dict[str, Any]
) -> None:
    # Same expression, switched off by the same parameter; the dispatcher (and so
    # its schedule, which SAM gives the function's Condition) exists only in Mode fleet.
    assert _condition_of_state(template, _schedule(dispatcher)) == {
        "Fn::Equals": [{"Ref": "ScheduleEnabled"}, "true"]
    }
    assert resources["DispatchFunction"]["Condition"] == "FleetMode"
    assert "Condition" not in resources["FetchFunction"]


def test_mode_parameter_and_conditions(template: dict[str, Any], resources: dict[str, Any]) -> None:
    param = template["Parameters"]["Mode"]
    assert param["Type"] == "String"
    assert param["AllowedValues"] == ["single", "fleet"]
    # Today's behaviour unless the operator opts in.
    assert param["Default"] == "single"
    conditions = template["Conditions"]
    assert conditions["FleetMode"] == {"Fn::Equals": [{"Ref": "Mode"}, "fleet"]}
    assert conditions["SingleMode"] == {"Fn::Equals": [{"Ref": "Mode"}, "single"]}
    fleet = {
        name
        for name, resource in resources.items()
        if resource.get("Condition") == "FleetMode"
        or {"Condition": "FleetMode"}
        in conditions.get(resource.get("Condition", ""), {}).get("Fn::And", [])
    }
    assert fleet == FLEET_RESOURCES | {"DispatchKmsKeyPolicy"}
    assert conditions["FleetWithKmsKey"] == {
        "Fn::And": [{"Condition": "FleetMode"}, {"Condition": "HasKmsKey"}]
    }
    # Nothing that always exists may point at a resource of Mode fleet (the stack
    # would not deploy in Mode single).
    always = {name: r for name, r in resources.items() if "Condition" not in r}

    def refs(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "Ref" and isinstance(inner, str):
                    yield inner
                elif key == "Fn::GetAtt":
                    yield (inner.split(".", 1) if isinstance(inner, str) else inner)[0]
                elif key == "Fn::Sub":
                    text = inner if isinstance(inner, str) else inner[0]
                    yield from (m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                    if not isinstance(inner, str):
                        yield from refs(inner[1])
                else:
                    yield from refs(inner)
        elif isinstance(value, list):
            for item in value:
                yield from refs(item)

    for name, resource in always.items():
        assert not set(refs(resource)) & FLEET_RESOURCES, name
    for name, output in template["Outputs"].items():
        if set(refs(output["Value"])) & FLEET_RESOURCES:
            assert output.get("Condition") == "FleetMode", name


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
    assert int(queue["MessageRetentionPeriod"]) == 4 * 86400
    assert int(dlq["Properties"]["MessageRetentionPeriod"]) == 14 * 86400


@pytest.mark.parametrize(
    "queue", ["PointerQueue", "PointerDeadLetterQueue", "JobsQueue", "JobsDeadLetterQueue"]
)
def test_queues_are_encrypted_at_rest(
    template: dict[str, Any], resources: dict[str, Any], queue: str
) -> None:
    props = resources[queue]["Properties"]
    # SSE-SQS unless a customer managed key is given, then that key (never neither).
    assert props["SqsManagedSseEnabled"] == {"Fn::If": ["HasKmsKey", False, True]}
    assert props["KmsMasterKeyId"] == {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, NO_ACTIONS]}
    assert template["Conditions"]["HasKmsKey"] == _not_empty("KmsKeyArn")
    assert template["Parameters"]["KmsKeyArn"]["Default"] == ""


def test_queues_deny_plain_http(resources: dict[str, Any]) -> None:
    policies = {name: r for name, r in resources.items() if r["Type"] == "AWS::SQS::QueuePolicy"}
    covered = set()
    for name, policy in policies.items():
        props = policy["Properties"]
        denies = [
            st
            for st in props["PolicyDocument"]["Statement"]
            if st["Effect"] == "Deny"
            and st["Principal"] == "*"
            and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert len(denies) == 1, name
        assert _as_list(denies[0]["Action"]) == ["sqs:*"]
        for queue in props["Queues"]:
            assert {"Fn::GetAtt": [queue["Ref"], "Arn"]} in denies[0]["Resource"], name
            # A policy exists exactly when its queues do.
            assert resources[queue["Ref"]].get("Condition") == policy.get("Condition"), name
            covered.add(queue["Ref"])
    queues = {name for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    assert queues == {"PointerQueue", "PointerDeadLetterQueue", "JobsQueue", "JobsDeadLetterQueue"}
    assert covered == queues


@pytest.mark.parametrize("name", ["FetchFunction", "DispatchFunction"])
def test_function_has_its_own_role_and_no_managed_policies(
    name: str, resources: dict[str, Any]
) -> None:
    function = resources[name]["Properties"]
    # SAM's generated role would add AWSLambdaBasicExecutionRole (logs on "*").
    assert "Policies" not in function
    role_name = _role_name(function)
    # Each function its own role: the dispatcher gets none of the fetch grants.
    assert role_name == {"FetchFunction": "FetchFunctionRole"}.get(name, "DispatchFunctionRole")
    assert resources[role_name].get("Condition") == resources[name].get("Condition")
    role = resources[role_name]["Properties"]
    assert "ManagedPolicyArns" not in role
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("FetchFunction", ALLOWED_ACTIONS), ("DispatchFunction", DISPATCH_ALLOWED_ACTIONS)],
)
def test_iam_allows_nothing_beyond_the_reviewed_actions(
    resources: dict[str, Any], name: str, allowed: set[str]
) -> None:
    assert set(_allowed(resources[name]["Properties"], resources)) == allowed


@pytest.mark.parametrize("name", ["FetchFunction", "DispatchFunction"])
def test_iam_statements_are_scoped(name: str, resources: dict[str, Any]) -> None:
    function = resources[name]["Properties"]
    star_actions = STAR_RESOURCE_ACTIONS[name]
    for _, st in _statements(function, resources):
        assert st["Effect"] == "Allow", st
        assert "NotAction" not in st, st
        assert "NotResource" not in st, st
        actions = _as_list(st["Action"])
        assert not any("*" in a for a in actions), f"wildcard action in {st}"
        for resource in _as_list(st["Resource"]):
            for value in _branches(resource):
                text = value.get("Fn::Sub", value) if isinstance(value, dict) else value
                if text == "*":
                    # Only where the service has no resource-level permissions.
                    assert set(actions) <= star_actions, f"'*' resource in {st}"
                elif isinstance(text, str):
                    assert "*" not in text.rstrip("*"), st
                    assert not text.startswith("*"), st
                if any(a.startswith(GUARDED_SERVICES) for a in set(actions) - star_actions):
                    assert text != "*", st


def test_iam_grants_what_the_function_needs(
    function: dict[str, Any], resources: dict[str, Any]
) -> None:
    by_action = _allowed(function, resources)
    # Writes and reads of objects: only under the key prefix of the stack's bucket.
    for action in ("s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"):
        assert by_action[action] == [(None, {"Fn::Sub": "${MailBucket.Arn}/${KeyPrefix}*"})]
    assert by_action["s3:ListBucket"] == [(None, {"Fn::GetAtt": ["MailBucket", "Arn"]})]
    # Only its own queue (SendMessageBatch is authorised by sqs:SendMessage).
    assert by_action["sqs:SendMessage"] == [(None, {"Fn::GetAtt": ["PointerQueue", "Arn"]})]
    # Consuming jobs: only the jobs queue, only in Mode fleet.
    for action in JOB_CONSUMER_ACTIONS:
        assert by_action[action] == [("FleetMode", {"Fn::GetAtt": ["JobsQueue", "Arn"]})], action
    assert "cloudwatch:PutMetricData" not in by_action
    # Only its own log group (its ARN ends in ":*", covering its streams).
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert by_action[action] == [(None, {"Fn::GetAtt": ["FetchLogGroup", "Arn"]})]


def test_iam_reads_only_the_mailbox_secrets(
    template: dict[str, Any], function: dict[str, Any], resources: dict[str, Any]
) -> None:
    grants = _allowed(function, resources)["secretsmanager:GetSecretValue"]
    unconditional = [r for cond, r in grants if cond is None]
    assert unconditional == [
        {"Fn::If": ["CreateSecret", {"Ref": "MailboxSecret"}, {"Ref": "ExistingSecretArn"}]}
    ]
    # Further secrets only when the operator names them, and in Mode fleet the
    # account's secrets that carry the mailbox tag (next test).
    assert [(c, r) for c, r in grants if c is not None] == [
        ("HasExtraSecrets", {"Ref": "ExtraSecretArnPattern"}),
        (
            "FleetMode",
            {
                "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}"
                ":${AWS::AccountId}:secret:*"
            },
        ),
    ]
    assert template["Conditions"]["HasExtraSecrets"] == _not_empty("ExtraSecretArnPattern")
    pattern = re.compile(template["Parameters"]["ExtraSecretArnPattern"]["AllowedPattern"])
    assert pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:pop3/*")
    for bad in ("*", "arn:aws:secretsmanager:*", "arn:aws:s3:::bucket/*"):
        assert not pattern.fullmatch(bad), bad


def test_iam_uses_the_kms_key_only_when_given_and_only_through_the_services(
    template: dict[str, Any], function: dict[str, Any], resources: dict[str, Any]
) -> None:
    by_action = _allowed(function, resources)
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert by_action[action] == [("HasKmsKey", {"Ref": "KmsKeyArn"})], action
    (kms_statement,) = [st for cond, st in _statements(function, resources) if cond == "HasKmsKey"]
    services = kms_statement["Condition"]["StringEquals"]["kms:ViaService"]
    assert [s["Fn::Sub"] for s in services] == [
        "s3.${AWS::Region}.amazonaws.com",
        "sqs.${AWS::Region}.amazonaws.com",
        "secretsmanager.${AWS::Region}.amazonaws.com",
    ]
    # A key ARN (IAM cannot scope to an alias), or nothing.
    pattern = re.compile(template["Parameters"]["KmsKeyArn"]["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch(
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    for bad in ("*", "alias/aws/s3", "arn:aws:kms:eu-west-1:123456789012:alias/mail"):
        assert not pattern.fullmatch(bad), bad


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


def test_bucket_is_encrypted_at_rest(template: dict[str, Any], resources: dict[str, Any]) -> None:
    (config,) = resources["MailBucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    condition, with_key, without_key = config["Fn::If"]
    assert condition == "HasKmsKey"
    assert with_key == {
        "ServerSideEncryptionByDefault": {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": {"Ref": "KmsKeyArn"},
        },
        "BucketKeyEnabled": True,
    }
    assert without_key == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    assert template["Conditions"]["HasKmsKey"] == _not_empty("KmsKeyArn")


def test_bucket_is_versioned_and_old_versions_expire(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    bucket = resources["MailBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = [r for rule in props["LifecycleConfiguration"]["Rules"] for r in _branches(rule)]
    (old_versions,) = [r for r in rules if "NoncurrentVersionExpiration" in r]
    assert old_versions["Status"] == "Enabled"
    assert old_versions["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": {"Ref": "NoncurrentVersionRetentionDays"}
    }
    assert old_versions["ExpiredObjectDeleteMarker"] is True
    param = template["Parameters"]["NoncurrentVersionRetentionDays"]
    assert param["Default"] == 30
    assert param["MinValue"] >= 1


def test_bucket_retention_is_a_parameter_that_keeps_mail_by_default(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    param = template["Parameters"]["RetentionDays"]
    assert param["Default"] == 0
    assert param["MinValue"] == 0
    rules = resources["MailBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    conditional = [r["Fn::If"] for r in rules if isinstance(r, dict) and "Fn::If" in r]
    expiring = [
        (cond, when_true, when_false)
        for cond, when_true, when_false in conditional
        if "ExpirationInDays" in when_true
    ]
    assert len(expiring) == 1
    condition, rule, otherwise = expiring[0]
    # 0 means "keep": no expiry rule at all.
    assert otherwise == NO_ACTIONS
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "RetentionDays"}, "0"]}]
    }
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "RetentionDays"}
    # Only the mail the function writes, under the same prefix as its grant.
    assert rule["Prefix"] == {"Ref": "KeyPrefix"}
    # No unconditional rule expires current objects.
    for r in rules:
        if not (isinstance(r, dict) and "Fn::If" in r):
            assert "ExpirationInDays" not in r, r
            assert "ExpirationDate" not in r, r


def test_incomplete_multipart_uploads_are_aborted(resources: dict[str, Any]) -> None:
    rules = resources["MailBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    aborting = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert len(aborting) == 1
    assert aborting[0]["Status"] == "Enabled"
    assert aborting[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in aborting[0]


def test_bucket_policy_denies_old_tls(resources: dict[str, Any]) -> None:
    (policy,) = [r for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"]
    tls = [
        st
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if st["Effect"] == "Deny" and "NumericLessThan" in st.get("Condition", {})
    ]
    assert len(tls) == 1
    assert tls[0]["Condition"]["NumericLessThan"] == {"s3:TlsVersion": "1.2"}
    assert tls[0]["Principal"] == "*"
    assert tls[0]["Action"] == "s3:*"


# Lambda keeps this much of an account's concurrency unreserved, and this is the
# quota accounts start with (often less: new accounts may get 10).
LAMBDA_UNRESERVED_MINIMUM = 100
LAMBDA_DEFAULT_QUOTA = 1000


def _parameters(template: dict[str, Any], **values: Any) -> dict[str, str]:
    """Parameter values as CloudFormation compares them: defaults, then ``values``."""
    params = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    params.update({name: str(value) for name, value in values.items()})
    return params


def _condition(template: dict[str, Any], expr: Any, params: dict[str, str]) -> Any:
    """Evaluate a condition expression (Fn::Equals/Not/And/Or, Condition, Ref)."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return expr
    ((fn, arg),) = expr.items()
    if fn == "Ref":
        return params[arg]
    if fn == "Condition":
        return _condition(template, template["Conditions"][arg], params)
    values = [_condition(template, a, params) for a in _as_list(arg)]
    if fn == "Fn::Equals":
        return str(values[0]) == str(values[1])
    if fn == "Fn::Not":
        return not values[0]
    if fn == "Fn::And":
        return all(values)
    if fn == "Fn::Or":
        return any(values)
    raise AssertionError(f"cannot evaluate {fn}")


def _resolved(template: dict[str, Any], value: Any, params: dict[str, str]) -> Any:
    """A property's value once Fn::If and Ref are decided; None for AWS::NoValue."""
    if value is None or value == NO_ACTIONS:
        return None
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        name, when_true, when_false = value["Fn::If"]
        chosen = when_true if _condition(template, {"Condition": name}, params) else when_false
        return _resolved(template, chosen, params)
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in params:
        return int(params[value["Ref"]])
    return value


def _reservations(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Reserved concurrency per function that exists with these parameter values."""
    params = _parameters(template, **values)
    reserved = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        if "Condition" in resource and not _condition(
            template, {"Condition": resource["Condition"]}, params
        ):
            continue
        props = resource["Properties"]
        reserved[name] = _resolved(template, props.get("ReservedConcurrentExecutions"), params)
    return reserved


@pytest.mark.parametrize("mode", ["single", "fleet"])
def test_no_concurrency_is_reserved_unless_the_operator_asks(
    template: dict[str, Any], mode: str
) -> None:
    # The defaults must deploy on an account whose quota (10) leaves nothing to reserve.
    reserved = _reservations(template, Mode=mode)
    assert "FetchFunction" in reserved
    assert set(reserved.values()) == {None}, reserved
    assert set(_reservations(template, Mode=mode, ReservedConcurrency=0).values()) == {None}
    # Asked for, the fetch function gets exactly that, and nothing reserves 0 (a stop).
    asked = _reservations(template, Mode=mode, ReservedConcurrency=5)
    assert asked["FetchFunction"] == 5
    assert 0 not in asked.values()
    assert sum(asked.values()) <= 5 + 1  # the dispatcher takes at most one more


def test_the_function_cannot_be_reserved_above_what_an_account_allows(
    template: dict[str, Any],
) -> None:
    param = template["Parameters"]["ReservedConcurrency"]
    assert int(param["MinValue"]) == 0
    reservable = LAMBDA_DEFAULT_QUOTA - LAMBDA_UNRESERVED_MINIMUM
    highest = int(param["MaxValue"])
    assert highest <= reservable
    # Even at its highest, fetch function and dispatcher together stay within it.
    assert sum(_reservations(template, Mode="fleet", ReservedConcurrency=highest).values()) <= (
        reservable + 1
    )
    # Mode fleet caps the job pollers at the reservation, never above it.
    mapping = template["Resources"]["JobsEventSource"]["Properties"]["ScalingConfig"]
    for value in (0, 1, 2, highest):
        params = _parameters(template, Mode="fleet", ReservedConcurrency=value)
        cap = _resolved(template, mapping, params)
        if cap is not None:
            assert 2 <= _resolved(template, cap["MaximumConcurrency"], params) <= value


def test_runs_that_overlap_are_kept_apart_by_a_lease_that_outlasts_any_run(
    template: dict[str, Any],
) -> None:
    from pop3_ingest.domain.state import LEASE_MARGIN_SECONDS, MAX_LEASE_SECONDS

    # The Timeout may exceed the schedule's period: runs overlap, and one stands aside
    # while the other holds the mailbox's lease. The lease is honoured for as long as
    # the longest run the template allows (plus the clock margin the run adds).
    timeout = template["Parameters"]["Timeout"]
    assert int(timeout["MaxValue"]) <= 900  # Lambda's own limit
    assert int(timeout["MaxValue"]) + LEASE_MARGIN_SECONDS <= MAX_LEASE_SECONDS
    assert "lease" in timeout["Description"]


@pytest.mark.parametrize(
    ("name", "log_group_name"),
    [("FetchFunction", "FetchLogGroup"), ("DispatchFunction", "DispatchLogGroup")],
)
def test_logs_have_a_retention(template: dict[str, Any], name: str, log_group_name: str) -> None:
    function = template["Resources"][name]["Properties"]
    log_group_ref = function["LoggingConfig"]["LogGroup"]
    assert log_group_ref == {"Ref": log_group_name}
    log_group = template["Resources"][log_group_name]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group.get("Condition") == template["Resources"][name].get("Condition")
    # Its role may write only there.
    by_action = _allowed(function, template["Resources"])
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert by_action[action] == [(None, {"Fn::GetAtt": [log_group_name, "Arn"]})]
    retention = log_group["Properties"]["RetentionInDays"]
    assert template["Parameters"][retention["Ref"]]["Default"] == 30
    assert log_group["Properties"]["KmsKeyId"] == {
        "Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, NO_ACTIONS]
    }


def test_created_secret_uses_the_kms_key_when_given(resources: dict[str, Any]) -> None:
    assert resources["MailboxSecret"]["Properties"]["KmsKeyId"] == {
        "Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, NO_ACTIONS]
    }


EXPECTED_ALARMS = {
    "FunctionErrorsAlarm",
    "DeadLetterQueueAlarm",
    "NoCompletedRunsAlarm",
    "MailboxStaleAlarm",
    "LoginFailuresAlarm",
    "OversizedMessagesAlarm",
    "QuarantinedMessagesAlarm",
    "DispatchErrorsAlarm",
    "JobsDeadLetterQueueAlarm",
}


def test_every_alarm_notifies_the_optional_topic(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    alarms = _alarms(resources)
    assert set(alarms) == EXPECTED_ALARMS
    param = template["Parameters"]["AlarmTopicArn"]
    assert param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.fullmatch("arn:aws:sns:eu-west-1:123456789012:pop3-alarms")
    assert not pattern.fullmatch("arn:aws:sqs:eu-west-1:123456789012:pop3-alarms")
    assert template["Conditions"]["HasAlarmTopic"] == _not_empty("AlarmTopicArn")
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == TOPIC_ACTIONS, name
        assert props["OKActions"] == TOPIC_ACTIONS, name
        assert props.get("ActionsEnabled", True) is True, name
        assert props["AlarmDescription"], name
        assert "TreatMissingData" in props, name


def test_no_alarm_uses_search(resources: dict[str, Any]) -> None:
    # SEARCH expressions cannot back an alarm; Metrics Insights queries can.
    for name, alarm in _alarms(resources).items():
        for metric in alarm["Properties"].get("Metrics", []):
            assert "SEARCH(" not in metric.get("Expression", "").upper(), name


def test_function_errors_alarm(resources: dict[str, Any]) -> None:
    props = resources["FunctionErrorsAlarm"]["Properties"]
    assert props["Namespace"] == "AWS/Lambda"
    assert props["MetricName"] == "Errors"
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "FetchFunction"}}]
    assert props["Statistic"] == "Sum"
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["Threshold"] == 1
    assert props["TreatMissingData"] == "notBreaching"


def test_dead_letter_queue_alarm(resources: dict[str, Any]) -> None:
    props = resources["DeadLetterQueueAlarm"]["Properties"]
    dlq = _getatt(resources["PointerQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
    assert dlq is not None
    assert props["Namespace"] == "AWS/SQS"
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert props["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq[0], "QueueName"]}}
    ]
    assert props["Statistic"] == "Maximum"
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["Threshold"] == 1
    assert props["TreatMissingData"] == "notBreaching"


def _schema(function: dict[str, Any]) -> str:
    namespace = function["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    # The function's EMF metrics carry {mailbox, service} (Powertools adds service).
    return f'FROM SCHEMA("{namespace}", mailbox, service)'


def test_no_completed_runs_alarm_watches_all_mailboxes(
    template: dict[str, Any], function: dict[str, Any], resources: dict[str, Any]
) -> None:
    alarm = resources["NoCompletedRunsAlarm"]
    props = alarm["Properties"]
    query = _insights_query(alarm)
    # One aggregate series: grouped by mailbox, a mailbox that never completes would
    # have no series at all and could never breach.
    assert query == f"SELECT SUM(RunsCompleted) {_schema(function)}"
    assert props["Metrics"][0]["Period"] == 3600
    assert props["EvaluationPeriods"] == {"Ref": "StaleAfterHours"}
    assert props["DatapointsToAlarm"] == {"Ref": "StaleAfterHours"}
    assert props["ComparisonOperator"] == "LessThanThreshold"
    assert props["Threshold"] == 1
    assert props["TreatMissingData"] == "breaching"
    # Metrics Insights alarms evaluate at most 3 hours: the alarm exists only for 1-3,
    # and only while the schedule runs.
    conditions = template["Conditions"]
    assert conditions[alarm["Condition"]] == {
        "Fn::And": [{"Condition": "ScheduleOn"}, {"Condition": "StaleWindowFitsMetricsInsights"}]
    }
    values = [
        eq["Fn::Equals"][1]
        for eq in conditions["StaleWindowFitsMetricsInsights"]["Fn::Or"]
        if eq["Fn::Equals"][0] == {"Ref": "StaleAfterHours"}
    ]
    # Ref yields a Number parameter as a string: compare with strings.
    assert all(isinstance(v, str) for v in values), values
    allowed = {int(v) for v in values}
    assert allowed == {1, 2, 3}
    assert max(allowed) * props["Metrics"][0]["Period"] <= 3 * 3600


def test_mailbox_stale_alarm_needs_the_mailbox_name(
    template: dict[str, Any], function: dict[str, Any], resources: dict[str, Any]
) -> None:
    alarm = resources["MailboxStaleAlarm"]
    assert template["Conditions"][alarm["Condition"]] == _not_empty("MonitoredMailbox")
    props = alarm["Properties"]
    env = function["Environment"]["Variables"]
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["MetricName"] == "RunsCompleted"
    # A plain metric alarm must name every dimension the metric carries.
    assert sorted(props["Dimensions"], key=lambda d: d["Name"]) == [
        {"Name": "mailbox", "Value": {"Ref": "MonitoredMailbox"}},
        {"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]},
    ]
    assert props["Statistic"] == "Sum"
    assert props["Period"] == 3600
    assert props["EvaluationPeriods"] == {"Ref": "StaleAfterHours"}
    assert props["DatapointsToAlarm"] == {"Ref": "StaleAfterHours"}
    assert props["ComparisonOperator"] == "LessThanThreshold"
    assert props["Threshold"] == 1
    assert props["TreatMissingData"] == "breaching"
    hours = template["Parameters"]["StaleAfterHours"]
    assert hours["MinValue"] == 1
    # CloudWatch caps an alarm's evaluation range at 7 days.
    assert hours["MaxValue"] * props["Period"] <= 7 * 86400
    mailbox = re.compile(template["Parameters"]["MonitoredMailbox"]["AllowedPattern"])
    assert mailbox.fullmatch("")
    assert mailbox.fullmatch("support@example.com")
    assert not mailbox.fullmatch("a b")


@pytest.mark.parametrize(
    ("alarm", "metric", "operator", "threshold"),
    [
        ("LoginFailuresAlarm", "LoginFailed", "GreaterThanOrEqualToThreshold", 3),
        ("OversizedMessagesAlarm", "MessagesOversized", "GreaterThanThreshold", 0),
        ("QuarantinedMessagesAlarm", "MessagesQuarantined", "GreaterThanThreshold", 0),
    ],
)
def test_per_mailbox_event_alarms(
    function: dict[str, Any],
    resources: dict[str, Any],
    alarm: str,
    metric: str,
    operator: str,
    threshold: int,
) -> None:
    props = resources[alarm]["Properties"]
    assert "Condition" not in resources[alarm]
    query = _insights_query(resources[alarm])
    # One contributor per mailbox: the alarm says which mailbox.
    assert query == f"SELECT SUM({metric}) {_schema(function)} GROUP BY mailbox"
    assert props["Metrics"][0]["Period"] == 3600
    assert props["EvaluationPeriods"] == 1
    assert props["ComparisonOperator"] == operator
    assert props["Threshold"] == threshold
    assert props["TreatMissingData"] == "notBreaching"


# ---- Mode fleet: dispatcher, jobs queue, event source ----


def test_jobs_queue_is_fifo_with_a_fifo_dead_letter_queue(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    queue = resources["JobsQueue"]
    props = queue["Properties"]
    assert queue["Condition"] == "FleetMode"
    # FIFO: one message group per mailbox, so never two invocations on one mailbox.
    assert props["FifoQueue"] is True
    # The dispatcher sets explicit deduplication ids.
    assert props["ContentBasedDeduplication"] is False
    # No QueueName: CloudFormation generates a .fifo name (and a fixed name would
    # block replacements and collide between stacks).
    assert "QueueName" not in props
    # AWS: at least 6 x the function timeout for a Lambda event source. The template
    # cannot multiply the Timeout parameter, so it must cover the largest one.
    timeout = template["Parameters"]["Timeout"]
    assert int(props["VisibilityTimeout"]) >= 6 * int(timeout["MaxValue"])
    assert int(props["VisibilityTimeout"]) <= 12 * 3600  # SQS maximum

    redrive = props["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    assert int(redrive["maxReceiveCount"]) == 3
    dlq = resources["JobsDeadLetterQueue"]
    assert dlq["Type"] == "AWS::SQS::Queue"
    assert dlq["Condition"] == "FleetMode"
    # A FIFO queue's dead-letter queue must be FIFO too.
    assert dlq["Properties"]["FifoQueue"] is True
    assert "RedrivePolicy" not in dlq["Properties"]
    # The DLQ keeps a failed job longer than the queue keeps a waiting one.
    assert int(dlq["Properties"]["MessageRetentionPeriod"]) == 14 * 86400
    assert int(props["MessageRetentionPeriod"]) < int(dlq["Properties"]["MessageRetentionPeriod"])


def test_fetch_function_consumes_jobs_one_at_a_time(
    template: dict[str, Any], function: dict[str, Any], resources: dict[str, Any]
) -> None:
    mappings = {
        name: r for name, r in resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert set(mappings) == {"JobsEventSource"}
    # SAM event sources cannot carry a Condition: the mapping is a resource of its own.
    assert not [e for e in function["Events"].values() if e["Type"] == "SQS"]
    mapping = mappings["JobsEventSource"]
    props = mapping["Properties"]
    assert mapping["Condition"] == "FleetMode"
    assert props["FunctionName"] == {"Ref": "FetchFunction"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert props["BatchSize"] == 1
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props.get("Enabled", True) is True
    # Lambda checks the role's SQS permissions when it creates the mapping.
    depends = _as_list(mapping["DependsOn"])
    assert "FetchJobsPolicy" in depends
    assert resources["FetchJobsPolicy"]["Properties"]["Roles"] == [{"Ref": "FetchFunctionRole"}]
    # Pollers capped at the reserved concurrency (2..1000 is all SQS accepts), so that
    # throttled jobs do not count receives on their way to the dead-letter queue.
    cap = props["ScalingConfig"]
    assert cap == {
        "Fn::If": [
            "CapJobPollers",
            {"MaximumConcurrency": {"Ref": "ReservedConcurrency"}},
            NO_ACTIONS,
        ]
    }
    assert template["Conditions"]["CapJobPollers"] == {
        "Fn::And": [
            {"Condition": "FleetMode"},
            {"Condition": "HasReservedConcurrency"},
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, "1"]}]},
        ]
    }
    # In Mode fleet the mailbox comes from the job; SECRET_ID stays for direct events.
    assert "SECRET_ID" in function["Environment"]["Variables"]


def test_fetch_function_reads_only_tagged_secrets_in_fleet_mode(
    function: dict[str, Any], dispatcher: dict[str, Any], resources: dict[str, Any]
) -> None:
    (statement,) = [
        st
        for cond, st in _statements(function, resources)
        if cond == "FleetMode" and "secretsmanager:GetSecretValue" in _as_list(st["Action"])
    ]
    assert _as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"]
    # Every secret of the account, region and partition, but only with the tag.
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"
    }
    key, value = MAILBOX_TAG
    assert statement["Condition"] == {"StringEquals": {f"secretsmanager:ResourceTag/{key}": value}}
    # The dispatcher looks for the very tag the grant is conditioned on.
    env = dispatcher["Environment"]["Variables"]
    assert (env["MAILBOX_TAG_KEY"], env["MAILBOX_TAG_VALUE"]) == MAILBOX_TAG
    # No other statement grants GetSecretValue on a wildcard.
    for cond, st in _statements(function, resources):
        if st is statement or "secretsmanager:GetSecretValue" not in _as_list(st["Action"]):
            continue
        for resource in _as_list(st["Resource"]):
            for value_ in _branches(resource):
                assert "*" not in json.dumps(value_) or cond == "HasExtraSecrets", st


def test_dispatcher_function(function: dict[str, Any], dispatcher: dict[str, Any]) -> None:
    assert dispatcher["Handler"] == "pop3_ingest.handlers.dispatch.lambda_handler"
    assert dispatcher["CodeUri"].rstrip("/") == "functions"
    # Same runtime, architecture and Powertools layer as the fetch function.
    for key in ("Runtime", "Architectures", "Layers", "Tracing"):
        assert dispatcher[key] == function[key], key
    # Retries are pointless (the next schedule enqueues again; jobs are deduplicated).
    assert dispatcher["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    # Same "0 reserves nothing" rule as the fetch function; one run at a time.
    assert dispatcher["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", 1, NO_ACTIONS]
    }
    assert int(dispatcher["Timeout"]) <= 900


def test_dispatcher_environment(
    function: dict[str, Any], dispatcher: dict[str, Any], resources: dict[str, Any]
) -> None:
    env = dispatcher["Environment"]["Variables"]
    assert env["JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}
    assert (env["MAILBOX_TAG_KEY"], env["MAILBOX_TAG_VALUE"]) == MAILBOX_TAG
    # Same service and namespace as the fetch function: one metrics namespace.
    fetch_env = function["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"):
        assert env[name] == fetch_env[name], name
    # It never touches mail, pointers or secret values.
    for name in ("SECRET_ID", "BUCKET_NAME", "QUEUE_URL"):
        assert name not in env, name


def test_dispatcher_iam(dispatcher: dict[str, Any], resources: dict[str, Any]) -> None:
    by_action = _allowed(dispatcher, resources)
    # ListSecrets has no resource-level permissions: "*", alone in its statement.
    assert by_action["secretsmanager:ListSecrets"] == [(None, "*")]
    (list_statement,) = [
        st
        for _, st in _statements(dispatcher, resources)
        if "secretsmanager:ListSecrets" in _as_list(st["Action"])
    ]
    assert _as_list(list_statement["Action"]) == ["secretsmanager:ListSecrets"]
    # Names and tags only: no secret value, no describe of a single secret either.
    assert not [
        a
        for a in by_action
        if a.startswith("secretsmanager:") and a != "secretsmanager:ListSecrets"
    ]
    # Jobs only to the jobs queue (SendMessageBatch is authorised by sqs:SendMessage).
    assert by_action["sqs:SendMessage"] == [(None, {"Fn::GetAtt": ["JobsQueue", "Arn"]})]
    assert not [a for a in by_action if a.startswith(("s3:", "sqs:")) and a != "sqs:SendMessage"]
    # The stack's key only when given, only through SQS.
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert by_action[action] == [("FleetWithKmsKey", {"Ref": "KmsKeyArn"})], action
    (kms,) = [st for cond, st in _statements(dispatcher, resources) if cond == "FleetWithKmsKey"]
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}}
    }


def test_dispatch_errors_alarm(resources: dict[str, Any]) -> None:
    alarm = resources["DispatchErrorsAlarm"]
    assert alarm["Condition"] == "FleetMode"
    props = alarm["Properties"]
    assert props["Namespace"] == "AWS/Lambda"
    assert props["MetricName"] == "Errors"
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "DispatchFunction"}}]
    assert props["Statistic"] == "Sum"
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["Threshold"] == 1
    assert props["TreatMissingData"] == "notBreaching"


def test_jobs_dead_letter_queue_alarm(resources: dict[str, Any]) -> None:
    alarm = resources["JobsDeadLetterQueueAlarm"]
    assert alarm["Condition"] == "FleetMode"
    props = alarm["Properties"]
    dlq = _getatt(resources["JobsQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
    assert dlq == ("JobsDeadLetterQueue", "Arn")
    assert props["Namespace"] == "AWS/SQS"
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert props["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}}
    ]
    assert props["Statistic"] == "Maximum"
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["Threshold"] == 1
    assert props["TreatMissingData"] == "notBreaching"


def test_checkov_skips_carry_their_reason_and_are_documented(resources: dict[str, Any]) -> None:
    skips = _checkov_skips(resources)
    assert skips, "expected the documented checkov skips"
    doc = SECURITY_DOC.read_text()
    for resource, check, comment in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), (resource, check)
        assert len(comment) >= 40, f"{resource}: skip {check} needs its reason"
        assert check in doc, f"{check} (skipped on {resource}) is not explained in {SECURITY_DOC}"
    # Never skipped: the checks this template exists to pass.
    never = {"CKV_AWS_19", "CKV_AWS_21", "CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56"}
    never |= {"CKV_AWS_66", "CKV_AWS_115", "CKV_AWS_111", "CKV_AWS_63", "CKV_AWS_62"}
    assert not never & {check for _, check, _ in skips}


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert {"BucketName", "QueueUrl", "DeadLetterQueueUrl", "FunctionName", "SecretArn"} <= set(
        outputs
    )
    assert outputs["Mode"]["Value"] == {"Ref": "Mode"}
    for name, value in [
        ("JobsQueueUrl", "JobsQueue"),
        ("JobsDeadLetterQueueUrl", "JobsDeadLetterQueue"),
        ("DispatchFunctionName", "DispatchFunction"),
    ]:
        assert outputs[name]["Value"] == {"Ref": value}
        assert outputs[name]["Condition"] == "FleetMode"


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
