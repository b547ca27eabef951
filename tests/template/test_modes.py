"""Mode single and Mode fleet: what exists in each, and nothing points at what does not."""

from __future__ import annotations

from typing import Any

from tests.support.cfn_template import Template, as_list, refs

# Names CloudFormation itself provides.
PSEUDO = {
    "AWS::Region",
    "AWS::AccountId",
    "AWS::Partition",
    "AWS::StackName",
    "AWS::StackId",
    "AWS::NoValue",
}
# What makes a stack Mode fleet: the schedules and their keeper, the jobs queues,
# the event source.
FLEET_MACHINERY = {
    "MailboxSchedules",
    "SchedulerRole",
    "ReconcileFunction",
    "JobsQueue",
    "JobsDeadLetterQueue",
    "JobsEventSource",
}
# The Secrets Manager calls that can make a secret a mailbox, change its
# interval, or end it (the reconciler's SecretChanged rule).
SECRET_CHANGES = {
    "TagResource",
    "UntagResource",
    "CreateSecret",
    "DeleteSecret",
    "UpdateSecret",
    "PutSecretValue",
    "RestoreSecret",
}
# The most records an SQS event source hands over at once from a FIFO queue.
FIFO_MAX_BATCH = 10


def _fleet_only(template: Template) -> set[str]:
    single: set[str] = set()
    fleet: set[str] = set()
    for params in template.cases():
        (single if params["Mode"] == "single" else fleet).update(template.existing(params))
    return fleet - single


def test_single_mode_is_the_default(template: Template) -> None:
    mode = template.parameters["Mode"]
    assert set(mode["AllowedValues"]) == {"single", "fleet"}
    assert mode["Default"] == "single", "today's behaviour unless the operator opts in"


def test_single_mode_has_no_mailbox_schedules_and_no_jobs(template: Template) -> None:
    for params in template.cases():
        existing = template.existing(params)
        if params["Mode"] == "single":
            assert not FLEET_MACHINERY & existing
            functions = set(template.of_type("AWS::Serverless::Function")) & existing
            assert functions == {"FetchFunction"}
        else:
            assert existing >= FLEET_MACHINERY


def test_fleet_resources_exist_only_under_the_fleet_condition(template: Template) -> None:
    fleet_only = _fleet_only(template)
    assert fleet_only >= FLEET_MACHINERY
    for name in fleet_only:
        condition = template.resources[name]["Condition"]
        for params in template.cases():
            if template.holds(condition, params):
                assert params["Mode"] == "fleet", (name, condition)


def test_nothing_refers_to_what_does_not_exist(template: Template) -> None:
    """With any parameter values, every Ref, GetAtt and Sub of an existing resource
    or output names a parameter or an existing resource (or the stack would not deploy)."""
    for params in template.cases():
        existing = template.existing(params)
        known = existing | set(template.parameters) | PSEUDO
        items = {n: template.resources[n] for n in existing}
        items |= {n: o for n, o in template.outputs.items() if template.exists(n, params)}
        for name, item in items.items():
            resolved = template.resolve({k: v for k, v in item.items() if k != "Condition"}, params)
            dangling = set(refs(resolved)) - known
            assert not dangling, (name, dangling, params["Mode"])
            for depends in as_list(item.get("DependsOn", [])):
                assert depends in existing, (name, depends)


def _events(template: Template, function: str, kind: str) -> list[dict[str, Any]]:
    return [
        e["Properties"] for e in template.props(function)["Events"].values() if e["Type"] == kind
    ]


def test_the_fetch_schedule_fires_only_in_single_mode_and_when_enabled(
    template: Template,
) -> None:
    (schedule,) = _events(template, "FetchFunction", "Schedule")
    assert schedule["Schedule"] == {"Ref": "ScheduleExpression"}, "one schedule parameter"
    for params in template.cases():
        fires = params["Mode"] == "single" and params["ScheduleEnabled"] == "true"
        assert template.resolve(schedule["State"], params) == (
            "ENABLED" if fires else "DISABLED"
        ), (params["Mode"], params["ScheduleEnabled"])


def test_in_fleet_mode_the_mailbox_schedules_follow_schedule_enabled(template: Template) -> None:
    # The reconciler writes every mailbox's schedule in the state the parameter asks
    # for, and runs after each deploy (StackDeployed), so a change applies at once.
    env = template.props("ReconcileFunction")["Environment"]["Variables"]
    assert env["SCHEDULES_ENABLED"] == {"Ref": "ScheduleEnabled"}
    assert env["SCHEDULE_GROUP"] == {"Ref": "MailboxSchedules"}
    (deployed,) = [
        e["Pattern"]
        for e in _events(template, "ReconcileFunction", "EventBridgeRule")
        if e["Pattern"]["source"] == ["aws.cloudformation"]
    ]
    assert deployed["detail"]["stack-id"] == [{"Ref": "AWS::StackId"}], "this stack only"
    assert set(deployed["detail"]["status-details"]["status"]) == {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
    }


def test_the_reconciler_hears_of_every_change_that_makes_or_ends_a_mailbox(
    template: Template,
) -> None:
    (changed,) = [
        e["Pattern"]
        for e in _events(template, "ReconcileFunction", "EventBridgeRule")
        if e["Pattern"]["source"] == ["aws.secretsmanager"]
    ]
    assert changed["detail-type"] == ["AWS API Call via CloudTrail"]
    assert changed["detail"]["eventSource"] == ["secretsmanager.amazonaws.com"]
    assert set(changed["detail"]["eventName"]) == SECRET_CHANGES
    # A call that failed changed nothing.
    assert changed["detail"]["errorCode"] == [{"exists": False}]
    # And whatever it missed (no CloudTrail trail, a lost event), daily.
    (daily,) = _events(template, "ReconcileFunction", "Schedule")
    assert daily["Schedule"] == "rate(1 day)"
    assert daily.get("State", "ENABLED") == "ENABLED"


def test_jobs_arrive_in_batches_through_a_mapping_that_waits_for_its_grant(
    template: Template,
) -> None:
    # SAM event sources cannot carry a Condition: the mapping is a resource of its own.
    assert not [e for e in template.props("FetchFunction")["Events"].values() if e["Type"] == "SQS"]
    (name,) = template.of_type("AWS::Lambda::EventSourceMapping")
    mapping = template.resources[name]
    props = mapping["Properties"]
    assert props["FunctionName"] == {"Ref": "FetchFunction"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    # Several mailboxes per invocation (FIFO allows at most 10), with no batching
    # window (FIFO refuses one); a failed job is reported alone and retried
    # without touching the others.
    assert 1 < props["BatchSize"] <= FIFO_MAX_BATCH
    assert "MaximumBatchingWindowInSeconds" not in props
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props.get("Enabled", True) is True
    # Lambda checks the role's SQS permissions when it creates the mapping.
    granting = [
        policy
        for policy in as_list(mapping["DependsOn"])
        if "sqs:ReceiveMessage" in str(template.props(policy)["PolicyDocument"])
    ]
    assert granting, "the mapping must wait for the policy that lets it poll"
    assert template.props(granting[0])["Roles"] == [{"Ref": template.role_of("FetchFunction")}]


def test_the_jobs_queue_keeps_one_mailbox_to_one_invocation(template: Template) -> None:
    props = template.props("JobsQueue")
    # FIFO, the mailbox as message group: one job per mailbox in flight.
    assert props["FifoQueue"] is True
    # Each tick's body is its own (its scheduled time): only repeats are dropped.
    assert props["ContentBasedDeduplication"] is True
    # High-throughput mode: limits per message group, not per queue.
    assert props["DeduplicationScope"] == "messageGroup"
    assert props["FifoThroughputLimit"] == "perMessageGroupId"
    # A fixed name would block replacements and collide between stacks.
    assert "QueueName" not in props
    assert template.props("JobsDeadLetterQueue").get("RedrivePolicy") is None


def test_fleet_outputs_exist_only_in_fleet_mode(template: Template) -> None:
    fleet_only = _fleet_only(template)
    for name, output in template.outputs.items():
        if set(refs(output["Value"])) & fleet_only:
            assert output.get("Condition") == "FleetMode", name
    assert {"BucketName", "QueueUrl", "DeadLetterQueueUrl", "FunctionName", "SecretArn"} <= set(
        template.outputs
    )
    assert template.outputs["Mode"]["Value"] == {"Ref": "Mode"}


def test_the_stack_outputs_what_the_cli_needs_to_add_a_mailbox(template: Template) -> None:
    # `pop3-ingest mailbox` takes the reconciler's settings from these outputs.
    from pop3_ingest_cli.mailbox import DEPLOYMENT_OPTIONS

    env = template.props("ReconcileFunction")["Environment"]["Variables"]
    outputs = {"SCHEDULE_GROUP": "ScheduleGroupName", "JOBS_QUEUE_ARN": "JobsQueueArn"}
    outputs["SCHEDULER_ROLE_ARN"] = "SchedulerRoleArn"
    assert set(outputs) == set(DEPLOYMENT_OPTIONS.values())
    for variable, output in outputs.items():
        assert template.outputs[output]["Value"] == env[variable], output
        assert template.outputs[output]["Condition"] == "FleetMode", output
