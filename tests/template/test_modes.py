"""Mode single and Mode fleet: what exists in each, and nothing points at what does not."""

from __future__ import annotations

from tests.support.cfn_template import Template, as_list, refs

# Names CloudFormation itself provides.
PSEUDO = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::StackName", "AWS::NoValue"}
# What makes a stack Mode fleet: a dispatcher, the jobs queues, the event source.
FLEET_MACHINERY = {"DispatchFunction", "JobsQueue", "JobsDeadLetterQueue", "JobsEventSource"}


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


def test_single_mode_has_no_dispatcher_and_no_jobs(template: Template) -> None:
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


def test_the_fetch_schedule_fires_in_single_mode_and_the_dispatchers_in_fleet_mode(
    template: Template,
) -> None:
    for function, mode in (("FetchFunction", "single"), ("DispatchFunction", "fleet")):
        (schedule,) = [
            e["Properties"]
            for e in template.props(function)["Events"].values()
            if e["Type"] in {"Schedule", "ScheduleV2"}
        ]
        assert schedule["Schedule"] == {"Ref": "ScheduleExpression"}, "one schedule parameter"
        for params in template.cases():
            if not template.exists(function, params):
                continue
            fires = params["Mode"] == mode and params["ScheduleEnabled"] == "true"
            assert template.resolve(schedule["State"], params) == (
                "ENABLED" if fires else "DISABLED"
            ), (function, params["Mode"], params["ScheduleEnabled"])


def test_jobs_arrive_one_at_a_time_through_a_mapping_that_waits_for_its_grant(
    template: Template,
) -> None:
    # SAM event sources cannot carry a Condition: the mapping is a resource of its own.
    assert not [e for e in template.props("FetchFunction")["Events"].values() if e["Type"] == "SQS"]
    (name,) = template.of_type("AWS::Lambda::EventSourceMapping")
    mapping = template.resources[name]
    props = mapping["Properties"]
    assert props["FunctionName"] == {"Ref": "FetchFunction"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    # A failed mailbox is reported alone and retried without touching the others.
    assert props["BatchSize"] == 1
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
    # FIFO, the secret as message group: one job per mailbox in flight.
    assert props["FifoQueue"] is True
    # The dispatcher sets explicit deduplication ids.
    assert props["ContentBasedDeduplication"] is False
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
