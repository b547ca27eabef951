"""IAM: what each function may do, on what, and who may be it (docs/security.md, "IAM")."""

from __future__ import annotations

import re

import pytest
from tests.support.cfn_template import REPO_ROOT, Grant, Template, as_list, refs

SECURITY_DOC = REPO_ROOT / "docs" / "security.md"

# Everything each function may do. Adding an action is a security-review decision:
# change these lists, template.yaml and docs/security.md together.
#
# What every function may do: its own logs and traces, the stack's KMS key.
EVERY_FUNCTION = {
    "kms:GenerateDataKey",
    "kms:Decrypt",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# Mode fleet: what the SQS event source polls the jobs queue with (the function's
# own role).
JOB_CONSUMER_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}
# Mode fleet: what the reconciler does to the mailboxes' schedules.
SCHEDULE_KEEPER_ACTIONS = {
    "scheduler:CreateSchedule",
    "scheduler:UpdateSchedule",
    "scheduler:DeleteSchedule",
    "scheduler:GetSchedule",
    "scheduler:ListSchedules",
    "iam:PassRole",
}
REVIEWED_ACTIONS = {
    "FetchFunction": EVERY_FUNCTION
    | {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:GetObject",
        "s3:ListBucket",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
        "secretsmanager:BatchGetSecretValue",
        "secretsmanager:PutSecretValue",
    }
    | JOB_CONSUMER_ACTIONS,
    # Reads the key only (secrets encrypted with it), writes no data with it.
    "ReconcileFunction": (EVERY_FUNCTION - {"kms:GenerateDataKey"})
    | {
        "secretsmanager:ListSecrets",
        "secretsmanager:BatchGetSecretValue",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    | SCHEDULE_KEEPER_ACTIONS,
}
# Actions without resource-level permissions: the only ones allowed on "*".
NO_RESOURCE_LEVEL = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
    "scheduler:ListSchedules",
}
# The tag that enables a mailbox secret in Mode fleet (docs/configuration.md).
MAILBOX_TAG = ("pop3-ingest", "enabled")
ACCOUNT_SECRETS = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"
FUNCTIONS = sorted(REVIEWED_ACTIONS)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_has_its_own_role_that_only_lambda_assumes(
    template: Template, function: str
) -> None:
    # SAM's generated role would add AWSLambdaBasicExecutionRole (logs on "*").
    assert "Policies" not in template.props(function)
    role = template.role_of(function)
    others = {template.role_of(f) for f in template.functions() if f != function}
    assert role not in others, "a role shared between functions shares their grants"
    assert template.resources[role].get("Condition") == template.resources[function].get(
        "Condition"
    )
    props = template.props(role)
    assert "ManagedPolicyArns" not in props
    assert props["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_may_do_only_the_reviewed_and_documented_actions(
    template: Template, function: str
) -> None:
    granted = set(template.allowed(function))
    assert granted == REVIEWED_ACTIONS[function]
    undocumented = [action for action in granted if f"`{action}`" not in _security_doc()]
    assert undocumented == [], f"not in the IAM tables of {SECURITY_DOC.name}"


def _security_doc() -> str:
    return SECURITY_DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_wildcards_and_no_inverted_statements(template: Template, function: str) -> None:
    for grant in template.grants(function):
        statement = grant.statement
        assert statement["Effect"] == "Allow", statement
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        assert not [a for a in grant.actions if "*" in a], f"wildcard action in {statement}"
        # Optional grants are policies of their own with a Condition, never Fn::If
        # inside a statement list (checkov cannot evaluate those).
        assert "Fn::If" not in statement, statement


def _text(resource: object) -> str | None:
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        return str(resource["Fn::Sub"])
    return None


def _scoped(template: Template, grant: Grant, resource: object) -> str | None:
    """Why ``resource`` is scoped to the stack, or None when it is not."""
    text = _text(resource)
    if text == "*":
        return "no resource-level permissions" if set(grant.actions) <= NO_RESOURCE_LEVEL else None
    named = set(refs(resource))
    own = named & set(template.resources)
    if own and (text is None or not text.startswith("*")):
        return f"the stack's own {sorted(own)}"
    arn_parameters = {p for p in named if template.parameters.get(p, {}).get("AllowedPattern")}
    if arn_parameters and text is None:
        return f"an ARN the operator gives ({sorted(arn_parameters)})"
    if text == ACCOUNT_SECRETS and "secretsmanager:ResourceTag" in str(grant.statement):
        return "the account's secrets that carry the mailbox tag"
    if text == ACCOUNT_SECRETS and grant.actions == ["secretsmanager:DescribeSecret"]:
        return "the account's secrets' tags and dates, which ListSecrets shows anyway"
    return None


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_resource_is_scoped_to_the_stack(template: Template, function: str) -> None:
    for grant in template.grants(function):
        for resource in grant.resources:
            assert _scoped(template, grant, resource), f"{function}: {resource} in {grant}"


def test_objects_only_under_the_key_prefix_of_the_stacks_bucket(template: Template) -> None:
    by_action = template.allowed("FetchFunction")
    for action in ("s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"):
        assert by_action[action] == [(None, {"Fn::Sub": "${MailBucket.Arn}/${KeyPrefix}*"})]
    # HeadObject needs ListBucket to tell "missing" (404) from "forbidden" (403).
    assert by_action["s3:ListBucket"] == [(None, {"Fn::GetAtt": ["MailBucket", "Arn"]})]
    # Nothing deletes stored mail.
    assert not [a for a in by_action if a.startswith("s3:Delete")]


def test_key_prefix_cannot_widen_the_object_grant(template: Template) -> None:
    pattern = re.compile(template.parameters["KeyPrefix"]["AllowedPattern"])
    assert pattern.fullmatch(template.params()["KeyPrefix"])
    assert pattern.fullmatch("inbox/alice/")
    for bad in ("", "/", "*/", "mail", "mail/*/", "../"):
        assert not pattern.fullmatch(bad), bad


def test_the_fetch_function_sends_only_to_its_own_queue(template: Template) -> None:
    # SendMessageBatch is authorised by sqs:SendMessage.
    pointers = {"Fn::GetAtt": ["PointerQueue", "Arn"]}
    assert template.allowed("FetchFunction")["sqs:SendMessage"] == [(None, pointers)]
    env = template.props("FetchFunction")["Environment"]["Variables"]
    assert {"Ref": "PointerQueue"} in env.values(), "it is told the queue it may send to"
    assert "sqs:SendMessage" not in template.allowed("ReconcileFunction"), "it sends no job"


def test_jobs_are_consumed_only_from_the_jobs_queue_and_only_in_fleet_mode(
    template: Template,
) -> None:
    by_action = template.allowed("FetchFunction")
    for action in JOB_CONSUMER_ACTIONS:
        assert by_action[action] == [("FleetMode", {"Fn::GetAtt": ["JobsQueue", "Arn"]})], action


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_writes_only_its_own_logs(template: Template, function: str) -> None:
    log_group = template.props(function)["LoggingConfig"]["LogGroup"]["Ref"]
    by_action = template.allowed(function)
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        # The log group's ARN ends in ":*", which covers its streams.
        assert by_action[action] == [(None, {"Fn::GetAtt": [log_group, "Arn"]})]
    # Metrics go out as EMF log lines.
    assert "cloudwatch:PutMetricData" not in by_action


def test_the_fetch_function_reads_the_secret_it_is_told_and_optional_ones_only_when_set(
    template: Template,
) -> None:
    grants = template.allowed("FetchFunction")["secretsmanager:GetSecretValue"]
    secret_id = template.props("FetchFunction")["Environment"]["Variables"]["SECRET_ID"]
    assert [r for condition, r in grants if condition is None] == [secret_id]
    assert [(c, r) for c, r in grants if c is not None] == [
        ("HasExtraSecrets", {"Ref": "ExtraSecretArnPattern"}),
        ("FleetMode", {"Fn::Sub": ACCOUNT_SECRETS}),
    ]
    for params in template.cases():
        if params["ExtraSecretArnPattern"] == "":
            assert not template.holds("HasExtraSecrets", params)


def test_extra_secrets_are_secrets_manager_arns(template: Template) -> None:
    pattern = re.compile(template.parameters["ExtraSecretArnPattern"]["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:pop3/*")
    for bad in ("*", "arn:aws:secretsmanager:*", "arn:aws:s3:::bucket/*"):
        assert not pattern.fullmatch(bad), bad


def test_fleet_reads_only_secrets_carrying_the_tag_the_reconciler_looks_for(
    template: Template,
) -> None:
    (tagged,) = [
        grant
        for grant in template.grants("FetchFunction")
        if grant.condition == "FleetMode" and "secretsmanager:GetSecretValue" in grant.actions
    ]
    assert tagged.actions == ["secretsmanager:GetSecretValue"]
    key, value = MAILBOX_TAG
    assert tagged.statement["Condition"] == {
        "StringEquals": {f"secretsmanager:ResourceTag/{key}": value}
    }
    env = template.props("ReconcileFunction")["Environment"]["Variables"]
    assert (env["MAILBOX_TAG_KEY"], env["MAILBOX_TAG_VALUE"]) == MAILBOX_TAG
    # The reconciler reads values (the interval) under the same condition.
    (reading,) = [
        grant
        for grant in template.grants("ReconcileFunction")
        if "secretsmanager:GetSecretValue" in grant.actions
    ]
    assert reading.statement["Condition"] == tagged.statement["Condition"]
    # Every other wildcard on secrets is the operator's own ExtraSecretArnPattern.
    for grant in template.grants("FetchFunction"):
        if grant == tagged or "secretsmanager:GetSecretValue" not in grant.actions:
            continue
        assert "*" not in str(grant.resources) or grant.condition == "HasExtraSecrets", grant


@pytest.mark.parametrize(
    ("function", "condition", "services", "actions"),
    [
        (
            "FetchFunction",
            "HasKmsKey",
            ["s3", "sqs", "secretsmanager"],
            ["kms:GenerateDataKey", "kms:Decrypt"],
        ),
        ("ReconcileFunction", "FleetWithKmsKey", ["secretsmanager"], ["kms:Decrypt"]),
    ],
)
def test_the_kms_key_only_when_given_and_only_through_the_services_used(
    template: Template, function: str, condition: str, services: list[str], actions: list[str]
) -> None:
    by_action = template.allowed(function)
    for action in actions:
        assert by_action[action] == [(condition, {"Ref": "KmsKeyArn"})], action
    (grant,) = [g for g in template.grants(function) if g.condition == condition]
    via = as_list(grant.statement["Condition"]["StringEquals"]["kms:ViaService"])
    assert via == [{"Fn::Sub": f"{s}.${{AWS::Region}}.amazonaws.com"} for s in services]
    for params in template.cases():
        if params["KmsKeyArn"] == "":
            assert not template.holds(condition, params)


def test_the_kms_key_is_a_key_arn(template: Template) -> None:
    # IAM cannot scope a grant to an alias.
    pattern = re.compile(template.parameters["KmsKeyArn"]["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch(
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    for bad in ("*", "alias/aws/s3", "arn:aws:kms:eu-west-1:123456789012:alias/mail"):
        assert not pattern.fullmatch(bad), bad


def test_the_reconciler_reads_tagged_secrets_and_changes_none(template: Template) -> None:
    by_action = template.allowed("ReconcileFunction")
    # Names, tags and dates of any secret; values only of tagged ones (above).
    assert {a for a in by_action if a.startswith("secretsmanager:")} == {
        "secretsmanager:ListSecrets",
        "secretsmanager:BatchGetSecretValue",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    assert not [a for a in by_action if a.startswith(("s3:", "sqs:"))], "it never touches mail"


SCHEDULES_OF_THE_GROUP = (
    "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}"
    ":schedule/${MailboxSchedules}/*"
)


def test_the_reconciler_keeps_only_its_groups_schedules_and_hands_them_only_their_role(
    template: Template,
) -> None:
    by_action = template.allowed("ReconcileFunction")
    for action in SCHEDULE_KEEPER_ACTIONS - {"scheduler:ListSchedules", "iam:PassRole"}:
        assert by_action[action] == [(None, {"Fn::Sub": SCHEDULES_OF_THE_GROUP})], action
    (passing,) = [g for g in template.grants("ReconcileFunction") if "iam:PassRole" in g.actions]
    assert passing.resources == [{"Fn::GetAtt": ["SchedulerRole", "Arn"]}]
    assert passing.statement["Condition"] == {
        "StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}
    }
    # Never a role of its own choosing, never a schedule group.
    assert not [a for a in by_action if "ScheduleGroup" in a]


def test_the_schedules_may_only_send_jobs_and_only_the_stacks_group_may_ask(
    template: Template,
) -> None:
    role = template.props("SchedulerRole")
    assert template.resources["SchedulerRole"]["Condition"] == "FleetMode"
    assert "ManagedPolicyArns" not in role
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    # The confused-deputy guard: this account's schedule group only.
    assert trust["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"},
            "aws:SourceArn": {"Fn::GetAtt": ["MailboxSchedules", "Arn"]},
        }
    }
    grants = template.role_grants("SchedulerRole")
    sends = [g for g in grants if g.condition is None]
    assert [(g.actions, g.resources) for g in sends] == [
        (["sqs:SendMessage"], [{"Fn::GetAtt": ["JobsQueue", "Arn"]}])
    ]
    (kms,) = [g for g in grants if g.condition is not None]
    assert kms.condition == "FleetWithKmsKey"
    assert kms.statement["Condition"]["StringEquals"]["kms:ViaService"] == {
        "Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"
    }
    assert not [g for g in grants if g.statement["Effect"] != "Allow" or "*" in str(g.actions)]
