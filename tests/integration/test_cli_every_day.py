"""The operator's every day, against moto over HTTP and a real Dovecot: ``status``, ``resume``,
``run``, ``quarantine drop``, ``--stack-name`` and the conventions every command keeps.

The deployed function is the real handler: ``run`` in Mode single invokes it through the
Lambda API, and a hook at botocore's send step hands the request's payload to
``lambda_handler`` in this process, as Lambda would, and its answer back. In Mode fleet
``run`` queues a job on a FIFO queue in moto, and the test hands the received message to
the handler, as the SQS event source would.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from tests.support import corpus
from tests.support.harness import Harness
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.schedules import message_group_id
from pop3_ingest.domain.state import Failure, MailboxState
from pop3_ingest.integrations.s3_state import S3StateStore
from pop3_ingest_cli.aws import Aws
from pop3_ingest_cli.main import main
from pop3_ingest_cli.resume import resume
from pop3_ingest_cli.run import cmd_run
from pop3_ingest_cli.states import StateReader, StoredState

pytestmark = pytest.mark.integration

TAG = [{"Key": "pop3-ingest", "Value": "enabled"}]
DIGEST = "d" * 40


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()  # what the handler logged before
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert captured.err == "", "no progress or error lines with --json and a pipe"
    return code, json.loads(captured.out)


def make_stack(aws: AwsResources, **outputs: str) -> str:
    """A CloudFormation stack in moto with the template's outputs and parameters."""
    name = f"pop3-ingest-{uuid.uuid4().hex[:8]}"
    template = {
        "Parameters": {
            "KeyPrefix": {"Type": "String", "Default": "mail/"},
            "StaleAfterHours": {"Type": "Number", "Default": "3"},
        },
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.moto.client("cloudformation").create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )
    return name


def store(aws: AwsResources) -> S3StateStore:
    return S3StateStore(aws.s3, aws.bucket, "mail/")


def put_state(aws: AwsResources, mailbox: str, state: MailboxState) -> None:
    states = store(aws)
    states.write(mailbox, state, states.read(mailbox))


def stored_state(aws: AwsResources, mailbox: str) -> MailboxState:
    return store(aws).read(mailbox).state


# -- the deployed function, in this process ------------------------------------------------


class _Body(io.BytesIO):
    """An HTTP response body as botocore reads it (streamed, for Invoke's payload)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _invoke_in_process(request: Any, **_: Any) -> AWSResponse:
    """Lambda's Invoke, answered by the real handler with the request's payload."""
    from pop3_ingest.handlers.fetch import lambda_handler

    headers = HTTPHeaders()
    try:
        answer = lambda_handler(json.loads(request.body), FakeLambdaContext(remaining_ms=120_000))
    except Exception as exc:  # as Lambda reports an unhandled error
        headers["X-Amz-Function-Error"] = "Unhandled"
        answer = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
    return AWSResponse(request.url, 200, headers, _Body(json.dumps(answer).encode()))


def with_function(args: argparse.Namespace) -> Aws:
    aws = Aws.from_args(args)
    aws.session.events.register("before-send.lambda.Invoke", _invoke_in_process)
    return aws


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cmd_run(main_args("run", *argv, "--json"), aws=with_function)
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{\n") :])  # after the handler's own log lines


def main_args(*argv: str) -> argparse.Namespace:
    from pop3_ingest_cli.main import build_parser

    return build_parser().parse_args(list(argv))


# -- Mode single: status, the suspension, resume and run ------------------------------------


@dataclass
class Single:
    harness: Harness
    secret_id: str
    stack: str

    @property
    def aws(self) -> AwsResources:
        return self.harness.aws


@pytest.fixture
def single(harness: Harness) -> Single:
    for number in (1, 2):
        harness.dovecot.deliver(harness.user, corpus.simple(number).raw_for_maildir)
    secret_id = harness.configure(harness.dovecot.secret(harness.user, mailbox="support"))
    stack = make_stack(
        harness.aws,
        BucketName=harness.aws.bucket,
        QueueUrl=harness.aws.queue_url,
        FunctionName="pop3-ingest-fetch",
        SecretArn=secret_id,
        Mode="single",
    )
    return Single(harness, secret_id, stack)


def test_status_after_a_run_is_healthy(single: Single, capsys: pytest.CaptureFixture[str]) -> None:
    single.harness.run()

    code, document = cli(capsys, "status", "--stack-name", single.stack)

    assert code == 0, document
    (row,) = document["mailboxes"]
    assert (row["mailbox"], row["health"], row["problems"]) == ("support", "ok", [])
    assert row["last_completed"] is not None
    assert (row["suspended"], row["backing_off"], row["quarantined"]) == (False, False, 0)
    assert document["bucket"] == single.aws.bucket
    assert main(["status", "--stack-name", single.stack]) == 0
    assert "1 mailbox(es): 1 ok, 0 unhealthy" in capsys.readouterr().out


def test_a_suspended_mailbox_resumes_by_command_and_runs_now(
    single: Single, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN logins failed three times with this very secret (the provider's side was at fault)
    secret = single.harness.dovecot.secret(single.harness.user, mailbox="support")
    fingerprint = MailboxConfig.from_secret(secret).fingerprint()
    put_state(single.aws, "support", MailboxState(auth_failures=3, auth_fingerprint=fingerprint))

    code, document = cli(capsys, "status", "--stack-name", single.stack, "--mailbox", "support")
    assert code == 6
    assert document["mailboxes"][0]["suspended"] is True
    assert "resume --mailbox support" in document["mailboxes"][0]["problems"][0]

    # WHEN it runs now, it stays suspended: the secret did not change
    code, document = run(capsys, "--stack-name", single.stack, "--mailbox", "support")
    assert code == 4, document
    assert document["result"]["stopped"] == "auth_suspended"
    assert "pop3-ingest resume --mailbox support" in document["hint"]
    assert single.harness.dovecot.message_count(single.harness.user) == 2

    # WHEN the operator resumes it
    code, document = cli(capsys, "resume", "--stack-name", single.stack, "--mailbox", "support")
    assert code == 0, document
    assert document["changes"] == ["login failures 3 -> 0 (logins no longer suspended)"]
    assert document["before"]["auth_failures"] == 3
    assert stored_state(single.aws, "support").auth_failures == 0

    # THEN the next run logs in and takes the mail
    code, document = run(capsys, "--stack-name", single.stack, "--mailbox", "support")
    assert code == 0, document
    assert (document["result"]["stored"], document["result"]["deleted"]) == (2, 2)
    assert single.harness.dovecot.message_count(single.harness.user) == 0
    assert cli(capsys, "status", "--stack-name", single.stack)[0] == 0

    # and a second resume has nothing to do, and writes nothing
    before = single.aws.s3.head_object(Bucket=single.aws.bucket, Key="mail/_state/support.json")
    code, document = cli(capsys, "resume", "--stack-name", single.stack, "--mailbox", "support")
    assert (code, document["changed"]) == (0, False)
    after = single.aws.s3.head_object(Bucket=single.aws.bucket, Key="mail/_state/support.json")
    assert after["ETag"] == before["ETag"]


def test_run_right_after_a_run_is_not_due_when_the_secret_sets_an_interval(
    single: Single, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = single.harness
    harness.configure(harness.dovecot.secret(harness.user, mailbox="support", interval_minutes=5))
    code, document = run(capsys, "--stack-name", single.stack, "--mailbox", "support")
    assert (code, document["result"]["stored"]) == (0, 2)

    code, document = run(capsys, "--stack-name", single.stack, "--secret-id", single.secret_id)

    assert code == 5
    assert document["result"]["stopped"] == "not_due"
    assert "interval_minutes" in document["hint"]


def test_run_and_resume_say_when_the_mailbox_matches_nothing(
    single: Single, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = run(capsys, "--stack-name", single.stack, "--mailbox", "sales")
    assert code == 2
    assert (
        "no mailbox 'sales' in this deployment: its secret is mailbox 'support'"
        in (document["error"])
    )
    code, document = cli(capsys, "resume", "--stack-name", single.stack, "--mailbox", "sales")
    assert code == 2
    assert document["error"].startswith("no mailbox 'sales': no run state at s3://")
    code, document = cli(capsys, "status", "--stack-name", single.stack, "--mailbox", "sales")
    assert code == 2
    assert "no mailbox 'sales'" in document["error"]
    code, document = cli(capsys, "status", "--stack-name", single.stack)
    assert code == 2, "no mailbox at all is not a healthy 0"
    assert "no mailbox has a run state" in document["error"]
    assert single.harness.dovecot.message_count(single.harness.user) == 2


def test_resume_is_merged_with_a_run_saving_at_the_same_moment(single: Single) -> None:
    put_state(single.aws, "support", MailboxState(auth_failures=3, auth_fingerprint="ab"))

    @dataclass(frozen=True)
    class RacingReader(StateReader):
        """A run saves right after resume read the state."""

        def read(self, mailbox: str) -> StoredState:
            stored = super().read(mailbox)
            assert stored.state is not None
            theirs = stored.state.copy()
            theirs.quarantined[DIGEST] = Failure(3, "boom", 1.0, 2.0)
            self.store.write(mailbox, theirs, stored.snapshot())
            return stored

    reader = RacingReader(single.aws.s3, single.aws.bucket, "mail/")
    result = resume(reader, "support", now=0.0)

    assert result.changes
    state = stored_state(single.aws, "support")
    assert state.auth_failures == 0, "resume's change is stored"
    assert DIGEST in state.quarantined, "and so is the run's"


# -- Mode fleet: status over tagged secrets, run through the jobs queue -----------------------


def fleet_secret(user: str) -> str:
    return json.dumps(
        {"host": "pop.example.com", "username": user, "password": f"pw-{user}-x", "mailbox": user}
    )


def test_fleet_status_joins_states_and_tagged_secrets(
    aws: AwsResources, capsys: pytest.CaptureFixture[str]
) -> None:
    sm = aws.secretsmanager
    sm.create_secret(Name="pop3/alice", SecretString=fleet_secret("alice"), Tags=TAG)
    sm.create_secret(Name="pop3/bob", SecretString=fleet_secret("bob"), Tags=TAG)
    sm.create_secret(Name="pop3/broken", SecretString="{not json", Tags=TAG)
    sm.create_secret(Name="pop3/dave", SecretString=fleet_secret("dave"))  # not tagged
    now = time.time()
    put_state(aws, "alice", MailboxState(last_completed=now - 60, last_attempt=now - 60))
    put_state(aws, "carol", MailboxState(last_completed=now - 60))  # its secret was removed
    stack = make_stack(aws, BucketName=aws.bucket, Mode="fleet")

    code, document = cli(capsys, "status", "--stack-name", stack)

    assert code == 6, document
    rows = {row["mailbox"]: row for row in document["mailboxes"]}
    assert set(rows) == {"alice", "bob", "carol", "(secret pop3/broken)"}
    assert (rows["alice"]["health"], rows["alice"]["secret"]) == ("ok", "pop3/alice")
    assert rows["bob"]["health"] == "unhealthy"
    assert rows["bob"]["problems"] == ["no run state yet: the mailbox has not run"]
    assert rows["carol"]["health"] == "not polled"
    assert rows["(secret pop3/broken)"]["problems"] == [
        "the mailbox secret is unusable: the secret is not JSON"
    ]
    assert (document["healthy"], document["unhealthy"], document["not_polled"]) == (1, 2, 1)
    assert "pw-" not in json.dumps(document)

    assert cli(capsys, "status", "--stack-name", stack, "--mailbox", "alice")[0] == 0
    code, document = cli(capsys, "status", "--stack-name", stack, "--mailbox", "bob")
    assert code == 6
    code, document = cli(capsys, "status", "--stack-name", stack, "--mailbox", "nobody")
    assert code == 2
    assert "and no tagged secret names it" in document["error"]


def sqs_record(message: dict[str, Any]) -> dict[str, Any]:
    """A received job as the SQS event source hands it to the function."""
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {**message["Attributes"], "ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs.fifo",
        "awsRegion": "us-east-1",
    }


def test_fleet_run_queues_the_job_the_schedule_would_and_the_function_runs_it(
    harness: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, dovecot = harness.aws, harness.dovecot
    for name, value in {**aws.function_env("unused"), "MODE": "fleet"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SECRET_ID")  # Mode fleet: every job names its secret
    secret = json.dumps(dovecot.secret(harness.user, mailbox="alice"))
    aws.secretsmanager.create_secret(Name="pop3/alice", SecretString=secret, Tags=TAG)
    jobs = aws.moto.create_queue("jobs.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    stack = make_stack(aws, BucketName=aws.bucket, Mode="fleet", JobsQueueUrl=jobs)

    def run_queued() -> dict[str, Any]:
        from pop3_ingest.handlers.fetch import lambda_handler

        received = aws.sqs.receive_message(
            QueueUrl=jobs, AttributeNames=["All"], MaxNumberOfMessages=10
        )["Messages"]
        assert len(received) == 1
        event = {"Records": [sqs_record(received[0])]}
        answer = lambda_handler(event, FakeLambdaContext(remaining_ms=120_000))
        aws.sqs.delete_message(QueueUrl=jobs, ReceiptHandle=received[0]["ReceiptHandle"])
        assert answer == {"batchItemFailures": []}
        return received[0]

    for round_ in (1, 2):  # the second right after the first: a fresh job is never "not due"
        dovecot.deliver(harness.user, corpus.simple(round_).raw_for_maildir)
        code, document = cli(capsys, "run", "--stack-name", stack, "--mailbox", "alice")
        assert code == 0, document
        assert (document["queued"], document["secret_id"]) == (True, "pop3/alice")
        job = run_queued()
        assert job["Attributes"]["MessageGroupId"] == message_group_id("pop3/alice")
        body = json.loads(job["Body"])
        assert body["secret_id"] == "pop3/alice"
        assert "scheduled_at" in body
        assert dovecot.message_count(harness.user) == 0
        assert len(aws.keys("mail/alice/")) == round_


# -- quarantine drop, replay and mailbox with --stack-name -------------------------------------


def quarantined(aws: AwsResources, mailbox: str, uidl: str) -> str:
    put_state(aws, mailbox, MailboxState(quarantined={DIGEST: Failure(3, "boom", 1.0, 2.0)}))
    key = f"mail/_quarantine/{mailbox}/{DIGEST}.json"
    record = {"mailbox": mailbox, "uidl": uidl, "size": 10, "failures": 3, "error": "boom"}
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=json.dumps(record).encode())
    return key


def test_quarantine_drop_by_uidl(aws: AwsResources, capsys: pytest.CaptureFixture[str]) -> None:
    key = quarantined(aws, "support", "UID-0001")
    stack = make_stack(aws, BucketName=aws.bucket)

    code, document = cli(
        capsys, "quarantine", "list", "--stack-name", stack, "--mailbox", "support"
    )
    assert code == 0
    assert [(r["uidl"], r["key"]) for r in document["quarantined"]] == [("UID-0001", key)]

    argv = ["quarantine", "drop", "--stack-name", stack, "--mailbox", "support"]
    assert main([*argv, "--uidl", "UID-0001"]) == 0
    assert aws.keys("mail/_quarantine/") == []
    assert stored_state(aws, "support").quarantined == {}

    assert main([*argv, "--uidl", "UID-0001"]) == 1
    assert "no quarantined message of support with uidl 'UID-0001'" in capsys.readouterr().err
    assert main([*argv, "--key", key]) == 1


def test_quarantine_of_a_mailbox_that_does_not_exist_is_exit_2(
    aws: AwsResources, capsys: pytest.CaptureFixture[str]
) -> None:
    quarantined(aws, "support", "UID-0001")
    capsys.readouterr()
    assert main(["quarantine", "list", "--bucket", aws.bucket, "--mailbox", "suport"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest quarantine: config error: no mailbox 'suport'")


def test_replay_reads_the_stack_and_a_mailbox_that_matches_nothing_is_exit_2(
    single: Single, capsys: pytest.CaptureFixture[str]
) -> None:
    single.harness.run()
    single.aws.receive_all()

    code, document = cli(capsys, "replay", "--stack-name", single.stack, "--mailbox", "support")
    assert code == 0, document
    assert document["sent"] == 2
    assert len(single.aws.receive_all()) == 2

    code, document = cli(capsys, "replay", "--stack-name", single.stack, "--mailbox", "sales")
    assert code == 2
    assert "no mailbox 'sales'" in document["error"]


def test_mailbox_list_reads_the_fleet_from_the_stack(
    aws: AwsResources, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SCHEDULE_GROUP", "JOBS_QUEUE_ARN", "SCHEDULER_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    aws.moto.client("scheduler").create_schedule_group(Name="mailboxes")
    aws.secretsmanager.create_secret(
        Name="pop3/alice", SecretString=fleet_secret("alice"), Tags=TAG
    )
    stack = make_stack(
        aws,
        ScheduleGroupName="mailboxes",
        JobsQueueArn="arn:aws:sqs:us-east-1:123456789012:jobs.fifo",
        SchedulerRoleArn="arn:aws:iam::123456789012:role/scheduler",
    )

    code, document = cli(capsys, "mailbox", "list", "--stack-name", stack)

    assert code == 0, document
    assert [(m["secret"], m["status"]) for m in document["mailboxes"]] == [
        ("pop3/alice", "missing")
    ]


# -- conventions: no region, no endpoint, no traceback ---------------------------------------


def test_without_a_region_quarantine_list_still_answers_and_fleet_status_says_what_to_set(
    aws: AwsResources, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quarantined(aws, "support", "UID-0001")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    capsys.readouterr()
    # S3 needs no region (its global endpoint redirects); one line or a document, never a traceback.
    assert main(["quarantine", "list", "--bucket", aws.bucket, "--mailbox", "support"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    # Secrets Manager does.
    assert main(["status", "--bucket", aws.bucket, "--mode", "fleet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest status: config error: You must specify a region")
    assert "--region" in err
    assert len(err.splitlines()) == 1
    argv = ["status", "--bucket", aws.bucket, "--mode", "fleet", "--region", "us-east-1"]
    assert main(argv) == 0  # with --region it reads: one mailbox, no longer tagged (not polled)


def test_an_endpoint_that_does_not_answer_is_one_line(
    aws: AwsResources, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens (loopback)
    for argv in (
        ["quarantine", "list", "--bucket", aws.bucket, "--mailbox", "support"],
        ["status", "--bucket", aws.bucket],
        ["resume", "--bucket", aws.bucket, "--mailbox", "support"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Could not connect to the endpoint URL" in err
        assert len(err.splitlines()) == 1
