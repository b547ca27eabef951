"""The new commands without AWS: their arguments, exit codes and what the function answered."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest
from botocore.config import Config

from pop3_ingest.domain.state import MailboxState
from pop3_ingest.errors import AuthError, SecretError
from pop3_ingest_cli.aws import Aws
from pop3_ingest_cli.errors import EXIT_AUTH, EXIT_BUSY, EXIT_CONFIG, EXIT_FAILED, exit_code_for
from pop3_ingest_cli.main import build_parser, main, run_command
from pop3_ingest_cli.quarantine import cmd_quarantine
from pop3_ingest_cli.resume import cmd_resume, describe_changes, resumed
from pop3_ingest_cli.run import FunctionFailed, cmd_run, remote_error
from pop3_ingest_cli.status import cmd_status

NOW = 2_000_000_000.0


def no_aws(args: argparse.Namespace) -> Aws:
    raise AssertionError("no AWS client may be created")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# -- arguments refused before any AWS call ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["quarantine", "drop", "--bucket", "b", "--mailbox", "m"], "exactly one of --uidl"),
        (
            [
                "quarantine",
                "drop",
                "--bucket",
                "b",
                "--mailbox",
                "m",
                "--uidl",
                "u",
                "--digest",
                "d",
            ],
            "exactly one of --uidl",
        ),
        (["quarantine", "release", "--bucket", "b", "--mailbox", "m", "--uidl", "u"], "drop' only"),
        (["quarantine", "list", "--bucket", "b", "--mailbox", "m", "--digest", "d"], "lists them"),
        (["quarantine", "list", "--bucket", "b", "--mailbox", "../x"], "not a mailbox name"),
    ],
)
def test_quarantine_arguments(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_quarantine(parse(*argv), aws=no_aws) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest quarantine: config error:")
    assert fragment in err


def test_resume_and_status_refuse_a_bad_mailbox_name_before_aws(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cmd_resume(parse("resume", "--bucket", "b", "--mailbox", "a/b"), aws=no_aws) == 2
    assert "not a mailbox name" in capsys.readouterr().err
    assert main(["resume", "--bucket", "b"]) == EXIT_CONFIG  # --mailbox is required
    assert "usage:" in capsys.readouterr().err


def test_run_needs_a_mailbox_or_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_run(parse("run", "--function-name", "f", "--json"), aws=no_aws) == EXIT_CONFIG
    document = json.loads(capsys.readouterr().out)
    assert document["error"] == "give --mailbox NAME or --secret-id ID"


def test_status_without_a_bucket_or_stack_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_status(parse("status"), aws=lambda args: Aws()) == EXIT_CONFIG
    assert "--bucket or --stack-name is required" in capsys.readouterr().err


def test_an_unknown_profile_is_one_config_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["status", "--bucket", "b", "--profile", "no-such-profile-here"]
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest status: config error:")
    assert "no-such-profile-here" in err
    assert len(err.splitlines()) == 1


def test_a_bug_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("surprise")

    args = parse("status", "--bucket", "b")
    args.handler = broken
    assert run_command(args) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest status: unexpected error: KeyError: 'surprise'")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


# -- resume: what it changes -------------------------------------------------------------


def test_resume_clears_the_suspension_and_the_back_off_and_says_so() -> None:
    state = MailboxState(
        auth_failures=3, auth_fingerprint="ab", backoff_until=NOW + 600, unreachable_streak=4
    )
    changes = describe_changes(state, NOW)
    assert changes[0] == "login failures 3 -> 0 (logins no longer suspended)"
    assert "(unreachable) cleared" in changes[1]
    fresh = resumed(state)
    assert (fresh.auth_failures, fresh.auth_fingerprint, fresh.backoff_until) == (0, None, 0.0)
    assert (fresh.busy_streak, fresh.unreachable_streak) == (0, 0)
    assert state.auth_failures == 3, "the state read is left as it was"


def test_nothing_to_resume_in_a_healthy_state() -> None:
    assert describe_changes(MailboxState(backoff_until=NOW - 5), NOW) == []


# -- run: what the function answered --------------------------------------------------------


class FakePayload(io.BytesIO):
    pass


class FakeLambda:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.invoked: list[dict[str, Any]] = []

    def invoke(self, **request: Any) -> dict[str, Any]:
        self.invoked.append(request)
        return self.answer


class LambdaAws(Aws):
    def __init__(self, client: FakeLambda) -> None:
        super().__init__()
        self.client = client
        self.configs: list[Config] = []

    def lambda_client(self, config: Config) -> Any:
        self.configs.append(config)
        return self.client


def run_single(
    answer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], FakeLambda]:
    client = FakeLambda(answer)
    aws = LambdaAws(client)
    args = parse("run", "--function-name", "fetch", "--secret-id", "pop3/support", "--json")
    code = cmd_run(args, aws=lambda _: aws)
    assert aws.configs[0].retries == {"mode": "standard", "total_max_attempts": 1}, "never twice"
    return code, json.loads(capsys.readouterr().out), client


def result(stopped: str) -> dict[str, Any]:
    body = {"mailbox": "support", "stopped": stopped, "stored": 2, "deleted": 2, "bytes": 10}
    return {"StatusCode": 200, "Payload": FakePayload(json.dumps(body).encode())}


def test_run_single_invokes_once_with_the_secret_and_shows_the_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, document, client = run_single(result("completed"), capsys)
    assert code == 0
    assert document["result"]["stored"] == 2
    assert document["hint"] is None
    (request,) = client.invoked
    assert request["FunctionName"] == "fetch"
    assert request["InvocationType"] == "RequestResponse"
    assert json.loads(request["Payload"]) == {"secret_id": "pop3/support"}


@pytest.mark.parametrize(
    ("stopped", "code", "fragment"),
    [
        ("auth_suspended", EXIT_AUTH, "pop3-ingest resume --mailbox support"),
        ("not_due", EXIT_BUSY, "interval_minutes"),
        ("backoff", EXIT_BUSY, "resume --mailbox support"),
        ("locked", EXIT_BUSY, "another run"),
    ],
)
def test_a_run_that_did_not_work_says_why(
    stopped: str, code: int, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, document, _ = run_single(result(stopped), capsys)
    assert got == code
    assert fragment in document["hint"]


def test_a_function_error_gets_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    error = {"errorType": "AuthError", "errorMessage": "login as 'support' rejected"}
    answer = {"FunctionError": "Unhandled", "Payload": FakePayload(json.dumps(error).encode())}
    code, document, _ = run_single(answer, capsys)
    assert code == EXIT_AUTH
    assert document["error"] == "the function failed: AuthError: login as 'support' rejected"


@pytest.mark.parametrize(
    ("error_type", "kind", "code"),
    [
        ("AuthError", AuthError, 4),
        ("SecretError", SecretError, 2),
        ("Sandbox.Timedout", FunctionFailed, 1),
        ("ValueError", FunctionFailed, 1),  # not ours: a plain failure
    ],
)
def test_remote_errors_map_to_our_exit_codes(error_type: str, kind: type, code: int) -> None:
    error = remote_error(error_type, "text")
    assert isinstance(error, kind)
    assert exit_code_for(error) == code
    assert str(error) == f"the function failed: {error_type}: text"


def test_a_payload_that_is_no_result_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, document, _ = run_single({"Payload": FakePayload(b'"hello"')}, capsys)
    assert code == EXIT_FAILED
    assert "not a run's result" in document["error"]
