"""The reconciler function against moto over HTTP: schedules follow the tagged secrets.

Events are the ones EventBridge delivers (events/secret-tagged.json,
events/stack-deployed.json); moto keeps the schedules but never fires them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

from pop3_ingest.config import DEFAULT_INTERVAL_MINUTES
from pop3_ingest.domain.schedules import SCHEDULED_TIME, message_group_id, schedule_name
from pop3_ingest.errors import ScheduleError

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
GROUP = "pop3-ingest-mailboxes"
ROLE_ARN = "arn:aws:iam::123456789012:role/pop3-ingest-scheduler"
TAG = {"Key": "pop3-ingest", "Value": "enabled"}


@pytest.fixture
def fleet(aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    jobs_url = aws.moto.create_queue(
        "jobs.fifo", FifoQueue="true", ContentBasedDeduplication="true"
    )
    jobs_arn = aws.sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    scheduler = aws.moto.client("scheduler")
    scheduler.create_schedule_group(Name=GROUP)
    monkeypatch.setenv("SCHEDULE_GROUP", GROUP)
    monkeypatch.setenv("JOBS_QUEUE_ARN", jobs_arn)
    monkeypatch.setenv("SCHEDULER_ROLE_ARN", ROLE_ARN)
    return {"scheduler": scheduler, "jobs_arn": jobs_arn}


def secret(interval: int | None = None) -> str:
    value: dict[str, Any] = {"host": "pop.example.com", "username": "u", "password": "pw"}
    if interval is not None:
        value["interval_minutes"] = interval
    return json.dumps(value)


def api_call(name: str, secret_id: str) -> dict[str, Any]:
    """What EventBridge hands the reconciler for a Secrets Manager call (via CloudTrail)."""
    event: dict[str, Any] = json.loads((EVENTS / "secret-tagged.json").read_text())
    event = copy.deepcopy(event)
    event["detail"]["eventName"] = name
    event["detail"]["requestParameters"] = (
        {"name": secret_id} if name == "CreateSecret" else {"secretId": secret_id}
    )
    return event


def deployed() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "stack-deployed.json").read_text())
    return event


def reconcile(event: dict[str, Any]) -> dict[str, Any]:
    from pop3_ingest.handlers.reconcile import lambda_handler

    result: dict[str, Any] = lambda_handler(event, FakeLambdaContext(remaining_ms=900_000))
    return result


def schedules(fleet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every schedule of the group, as GetSchedule shows it."""
    scheduler = fleet["scheduler"]
    names = [
        item["Name"]
        for page in scheduler.get_paginator("list_schedules").paginate(GroupName=GROUP)
        for item in page["Schedules"]
    ]
    return {n: scheduler.get_schedule(Name=n, GroupName=GROUP) for n in names}


def test_a_tag_added_gives_the_mailbox_a_schedule_that_sends_its_jobs(
    aws: AwsResources, fleet: dict[str, Any]
) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(10))
    reconcile(api_call("CreateSecret", "pop3/alice"))
    assert schedules(fleet) == {}, "not tagged yet: not a mailbox"

    aws.secretsmanager.tag_resource(SecretId="pop3/alice", Tags=[TAG])
    result = reconcile(api_call("TagResource", "pop3/alice"))
    assert result["created"] == 1

    (only,) = schedules(fleet).values()
    assert only["Name"] == schedule_name("pop3/alice")
    assert only["ScheduleExpression"] == "rate(10 minutes)"
    assert only["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5}
    assert only["State"] == "ENABLED"
    target = only["Target"]
    assert target["Arn"] == fleet["jobs_arn"]
    assert target["RoleArn"] == ROLE_ARN
    assert target["SqsParameters"] == {"MessageGroupId": message_group_id("pop3/alice")}
    assert json.loads(target["Input"]) == {
        "secret_id": "pop3/alice",
        "scheduled_at": SCHEDULED_TIME,
    }


def test_a_tag_removed_deletes_the_schedule(aws: AwsResources, fleet: dict[str, Any]) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(), Tags=[TAG])
    reconcile(api_call("CreateSecret", "pop3/alice"))
    assert len(schedules(fleet)) == 1

    aws.secretsmanager.untag_resource(SecretId="pop3/alice", TagKeys=[TAG["Key"]])
    result = reconcile(api_call("UntagResource", "pop3/alice"))
    assert result["deleted"] == 1
    assert schedules(fleet) == {}


def test_a_tag_with_another_value_is_not_a_mailbox(
    aws: AwsResources, fleet: dict[str, Any]
) -> None:
    aws.secretsmanager.create_secret(
        Name="pop3/paused",
        SecretString=secret(),
        Tags=[{"Key": "pop3-ingest", "Value": "disabled"}, {"Key": "team", "Value": "enabled"}],
    )
    reconcile(api_call("TagResource", "pop3/paused"))
    reconcile(deployed())
    assert schedules(fleet) == {}


@pytest.mark.parametrize("force", [False, True], ids=["recoverable", "forced"])
def test_a_secret_deleted_loses_its_schedule_and_a_restored_one_gets_it_back(
    aws: AwsResources, fleet: dict[str, Any], force: bool
) -> None:
    arn = aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(), Tags=[TAG])[
        "ARN"
    ]
    reconcile(api_call("CreateSecret", "pop3/alice"))
    if force:
        aws.secretsmanager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    else:
        aws.secretsmanager.delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    # CloudTrail names the secret as the caller did: here by its ARN.
    assert reconcile(api_call("DeleteSecret", arn))["deleted"] == 1
    assert schedules(fleet) == {}
    if not force:
        aws.secretsmanager.restore_secret(SecretId=arn)
        assert reconcile(api_call("RestoreSecret", arn))["created"] == 1


def test_a_changed_interval_changes_the_rate(aws: AwsResources, fleet: dict[str, Any]) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(), Tags=[TAG])
    reconcile(api_call("CreateSecret", "pop3/alice"))
    (before,) = schedules(fleet).values()
    assert before["ScheduleExpression"] == f"rate({DEFAULT_INTERVAL_MINUTES} minutes)"

    aws.secretsmanager.put_secret_value(SecretId="pop3/alice", SecretString=secret(30))
    assert reconcile(api_call("PutSecretValue", "pop3/alice"))["updated"] == 1
    (after,) = schedules(fleet).values()
    assert after["ScheduleExpression"] == "rate(30 minutes)"
    assert after["FlexibleTimeWindow"]["MaximumWindowInMinutes"] == 15
    # Told again about the same value: nothing to write.
    assert reconcile(api_call("UpdateSecret", "pop3/alice"))["unchanged"] == 1


def test_a_deploy_or_the_daily_run_brings_every_schedule_in_step(
    aws: AwsResources, fleet: dict[str, Any]
) -> None:
    for n in range(25):
        aws.secretsmanager.create_secret(
            Name=f"pop3/user{n:02d}", SecretString=secret(1 + n), Tags=[TAG]
        )
    aws.secretsmanager.create_secret(Name="pop3/untagged", SecretString=secret())
    # A schedule left behind by a mailbox removed while nothing listened.
    orphan = schedule_name("pop3/removed-long-ago")
    fleet["scheduler"].create_schedule(
        Name=orphan,
        GroupName=GROUP,
        ScheduleExpression="rate(5 minutes)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": fleet["jobs_arn"], "RoleArn": ROLE_ARN},
    )

    result = reconcile(deployed())
    assert (result["mailboxes"], result["created"], result["deleted"]) == (25, 25, 1)
    found = schedules(fleet)
    assert set(found) == {schedule_name(f"pop3/user{n:02d}") for n in range(25)}
    assert found[schedule_name("pop3/user06")]["ScheduleExpression"] == "rate(7 minutes)"

    daily = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    again = reconcile(daily)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 25)


def test_schedule_enabled_false_keeps_every_schedule_disabled(
    aws: AwsResources, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(), Tags=[TAG])
    reconcile(deployed())
    monkeypatch.setenv("SCHEDULES_ENABLED", "false")
    assert reconcile(deployed())["updated"] == 1
    assert [s["State"] for s in schedules(fleet).values()] == ["DISABLED"]


def test_a_reconcile_that_cannot_write_fails_so_it_is_retried(
    aws: AwsResources, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(), Tags=[TAG])
    monkeypatch.setenv("SCHEDULE_GROUP", "no-such-group")
    with pytest.raises(ScheduleError):
        reconcile(deployed())


def test_an_event_without_a_secret_does_nothing(fleet: dict[str, Any]) -> None:
    event = api_call("TagResource", "x")
    event["detail"]["requestParameters"] = {}
    result = reconcile(event)
    assert result["scope"] == "none"
    assert (result["mailboxes"], result["failed"]) == (0, 0)


@pytest.mark.filterwarnings("ignore:No application metrics")  # it stops before any
def test_the_reconciler_needs_its_settings(
    fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pop3_ingest.errors import ConfigError

    monkeypatch.delenv("SCHEDULER_ROLE_ARN")
    with pytest.raises(ConfigError, match="SCHEDULER_ROLE_ARN"):
        reconcile(deployed())


# -- the CLI: the same code, run by the operator ----------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    from pop3_ingest_cli.main import main

    capsys.readouterr()  # what the reconciler function logged before
    code = main(["mailbox", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_mailbox_add_tags_writes_the_interval_and_schedules_at_once(
    aws: AwsResources, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret())
    code, document = cli(capsys, "add", "pop3/alice", "--interval", "15")
    assert code == 0
    assert document["change"] == "created"
    assert document["schedule"] == schedule_name("pop3/alice")

    described = aws.secretsmanager.describe_secret(SecretId="pop3/alice")
    assert TAG in described["Tags"]
    value = json.loads(aws.secretsmanager.get_secret_value(SecretId="pop3/alice")["SecretString"])
    assert value["interval_minutes"] == 15
    (only,) = schedules(fleet).values()
    assert only["ScheduleExpression"] == "rate(15 minutes)"

    # What the reconciler then hears about changes nothing more.
    assert reconcile(api_call("TagResource", "pop3/alice"))["unchanged"] == 1
    code, listed = cli(capsys, "list")
    assert code == 0
    assert listed["mailboxes"] == [
        {"secret": "pop3/alice", "schedule": schedule_name("pop3/alice"), "status": "scheduled"}
    ]


def test_mailbox_remove_untags_and_deletes_the_schedule(
    aws: AwsResources, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret(), Tags=[TAG])
    reconcile(deployed())
    code, document = cli(capsys, "remove", "pop3/alice")
    assert (code, document["change"]) == (0, "deleted")
    assert schedules(fleet) == {}
    assert TAG not in aws.secretsmanager.describe_secret(SecretId="pop3/alice").get("Tags", [])
    assert reconcile(deployed())["mailboxes"] == 0


def test_mailbox_add_refuses_a_secret_the_function_would_refuse(
    aws: AwsResources, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    aws.secretsmanager.create_secret(
        Name="pop3/broken", SecretString=json.dumps({"host": "pop.example.com"})
    )
    code, document = cli(capsys, "add", "pop3/broken")
    assert code == 2
    assert "username" in document["error"]
    assert "Tags" not in aws.secretsmanager.describe_secret(SecretId="pop3/broken")
    assert schedules(fleet) == {}

    code, document = cli(capsys, "add", "pop3/nobody")
    assert code == 2
    assert document["error_kind"] == "config"
