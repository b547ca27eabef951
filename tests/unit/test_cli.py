"""The operator CLI without a server: parsing, exit codes, error lines, a faked check."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError
from tests.support.harness import require

from pop3_ingest.config import FleetSettings, MailboxConfig
from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.domain.reconcile import Reconciler, Survey
from pop3_ingest.domain.schedules import MailboxSecret, SchedulePlan, schedule_name
from pop3_ingest.errors import (
    AnnounceError,
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    MailboxBusy,
    ProtocolError,
    ScheduleError,
    SecretError,
    StoreError,
    TlsError,
)
from pop3_ingest.integrations.scheduler import TaggedSecrets
from pop3_ingest.redaction import secret_values
from pop3_ingest_cli.aws import Aws, normalize_prefix
from pop3_ingest_cli.check import cmd_check
from pop3_ingest_cli.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    error_line,
    exit_code_for,
)
from pop3_ingest_cli.mailbox import cmd_mailbox, fleet_settings, survey_document, with_interval
from pop3_ingest_cli.main import build_parser, main
from pop3_ingest_cli.quarantine import cmd_quarantine
from pop3_ingest_cli.replay import (
    check_window,
    cmd_replay,
    mailbox_prefix,
    parse_time,
    send_pointers,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2 is not a password"
SECRET: dict[str, Any] = {
    "host": "pop.example.com",
    "username": "alice@example.com",
    "password": PASSWORD,
    "mailbox": "support",
}


def write_secret(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "secret.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# -- parsing ----------------------------------------------------------------------


def test_help_for_tool_and_each_command_exits_0_with_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--help"], ["check", "--help"], ["replay", "--help"], ["mailbox", "--help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "examples:" in out
        assert "exit codes:" in out
        assert "pop3-ingest" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_CONFIG
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--secret-id", "a", "--secret-file", "b"],  # both
        ["check", "--secret-id", "a", "--timeout", "0"],
        ["check", "--secret-id", "a", "--timeout", "soon"],
        ["replay", "--bucket", "b", "--queue-url", "q"],  # no --mailbox
        ["replay", "--bucket", "b", "--queue-url", "q", "--mailbox", "m", "--since", "yesterday"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_CONFIG
    assert "usage:" in capsys.readouterr().err


def test_check_without_a_secret_says_which_options_give_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["check"])
    assert cmd_check(args, aws=no_aws) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest check: config error: give --secret-id, --secret-file")
    assert "--stack-name" in err


def test_replay_arguments_parse() -> None:
    args = build_parser().parse_args(
        [
            "replay",
            "--bucket",
            "b",
            "--queue-url",
            "https://sqs.example/q",
            "--mailbox",
            "support",
            "--since",
            "2026-11-26",
            "--until",
            "2026-11-26T12:30:00+01:00",
            "--dry-run",
        ]
    )
    assert args.since == datetime(2026, 11, 26, tzinfo=UTC)
    assert args.until == datetime(2026, 11, 26, 11, 30, tzinfo=UTC)
    assert args.dry_run is True
    assert args.key_prefix is None, "the stack's, else DEFAULT_KEY_PREFIX: decided later"
    assert args.handler is cmd_replay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
        ("2026-11-26T09:30:00Z", datetime(2026, 11, 26, 9, 30, tzinfo=UTC)),
        ("2026-11-26T09:30:00", datetime(2026, 11, 26, 9, 30, tzinfo=UTC)),
        (
            "2026-11-26T09:30:00-05:00",
            datetime(2026, 11, 26, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
        ),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    value = parse_time(text)
    assert value == expected
    assert value.tzinfo is UTC


def test_window_and_prefix_rules() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    check_window(early, late)
    check_window(None, late)
    with pytest.raises(ConfigError, match="earlier"):
        check_window(late, early)
    assert normalize_prefix("mail") == "mail/"
    assert normalize_prefix("") == ""
    with pytest.raises(ConfigError):
        normalize_prefix("../x/")
    assert mailbox_prefix("mail/", "support@example.com") == "mail/support@example.com/"
    with pytest.raises(ConfigError, match="not a mailbox name"):
        mailbox_prefix("mail/", "../etc")


def no_aws(args: argparse.Namespace) -> Aws:
    raise AssertionError("no AWS client may be created")


def test_replay_window_error_exits_2_before_any_aws_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["replay", "--bucket", "b", "--queue-url", "q"]

    def replay(*extra: str) -> int:
        return cmd_replay(build_parser().parse_args([*base, *extra]), aws=no_aws)

    assert replay("--mailbox", "m", "--since", "2026-02-01", "--until", "2026-01-01") == 2
    assert "--since must be earlier than --until" in capsys.readouterr().err
    assert replay("--mailbox", "a/b") == EXIT_CONFIG
    assert "not a mailbox name" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["list", "release"])
def test_quarantine_bad_prefix_exits_2_before_any_aws_call(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quarantine", action, "--bucket", "b", "--mailbox", "m", "--key-prefix", "../x"]
    assert cmd_quarantine(build_parser().parse_args(argv), aws=no_aws) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest quarantine: config error: --key-prefix")
    assert len(err.splitlines()) == 1


# -- exit codes and error lines -------------------------------------------------------


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "nope"}}, "ListObjectsV2")


def _announce_error(code: str) -> AnnounceError:
    try:
        raise AnnounceError("SQS batch send failed") from _client_error(code)
    except AnnounceError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 2),
        (SecretError("x", "host"), 2),
        (NoRegionError(), 2),
        (NoCredentialsError(), 2),
        (_client_error("NoSuchBucket"), 2),
        (_client_error("AWS.SimpleQueueService.NonExistentQueue"), 2),
        (TlsError("x"), 3),
        (ConnectError("x"), 3),
        (AuthError("x", "AUTH"), 4),
        (MailboxBusy("x", "IN-USE"), 5),
        (ProtocolError("x"), 1),
        (ConnectionLost("x"), 1),
        (StoreError("x"), 1),
        (AnnounceError("x"), 1),
        (_announce_error("AWS.SimpleQueueService.NonExistentQueue"), 2),
        (_announce_error("ThrottlingException"), 1),
        (_client_error("AccessDenied"), 1),
        (_client_error("ResourceNotFoundException"), 2),  # no such secret or schedule group
        (ScheduleError("x"), 1),
        (RuntimeError("x"), 1),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_error_line_is_one_bounded_line_with_secrets_masked() -> None:
    exc = AuthError(f"login failed:\r\n server said {PASSWORD}\n" + "x" * 2000)
    line = error_line(exc, [PASSWORD, ""])
    assert "\n" not in line
    assert "\r" not in line
    assert PASSWORD not in line
    assert "***" in line
    assert len(line) <= 500
    # boto3 reads AWS_DEFAULT_REGION (or the profile), not AWS_REGION.
    assert "--region, set AWS_DEFAULT_REGION" in error_line(NoRegionError())


def test_error_line_masks_whole_secrets_and_keeps_our_own_words() -> None:
    # The password shares "ect " with "connect": our own text must stay readable.
    password = "correct horse battery staple"
    refused = ConnectError("cannot connect to 127.0.0.1:995: Connection refused")
    assert error_line(refused, [password]) == str(refused)
    echoed = ProtocolError(f"server said {password}!")
    assert error_line(echoed, [password]) == "server said ***!"


def test_secret_values_found_in_a_secret_file_and_a_loaded_config() -> None:
    secret = {
        **SECRET,
        "auth": {"type": "oauth2", "client_secret": "cs", "refresh_token": "rt", "scope": "s"},
    }
    assert set(secret_values(secret)) == {PASSWORD, "cs", "rt"}
    assert set(MailboxConfig.from_secret(SECRET).secret_values()) == {PASSWORD}


# -- check with a fake session ---------------------------------------------------------


class FakeSession:
    def __init__(
        self,
        capabilities: dict[str, list[str]],
        listing: list[ServerMessage] | Exception,
        enter_error: Exception | None = None,
    ) -> None:
        self.capabilities = capabilities
        self.listing = listing
        self.enter_error = enter_error
        self.quit_ok: bool | None = None
        self.calls: list[str] = []

    def __enter__(self) -> FakeSession:
        if self.enter_error:
            raise self.enter_error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.calls.append("QUIT")
        self.quit_ok = True

    def list_messages(self) -> list[ServerMessage]:
        self.calls.append("LIST")
        if isinstance(self.listing, Exception):
            raise self.listing
        return self.listing


CAPA = {"USER": [], "UIDL": [], "PIPELINING": [], "SASL": ["PLAIN", "XOAUTH2"], "TOP": []}
LISTING = [ServerMessage(1, "u1", 1000), ServerMessage(2, "u2", 3000)]


def run_check(
    tmp_path: Path, session: FakeSession, *extra: str, secret: dict[str, Any] | None = None
) -> int:
    args = build_parser().parse_args(
        ["check", "--secret-file", write_secret(tmp_path, secret or SECRET), *extra]
    )
    seen: list[tuple[MailboxConfig, float]] = []

    def connect(config: MailboxConfig, timeout: float) -> FakeSession:
        seen.append((config, timeout))
        return session

    code = cmd_check(args, connect=connect)
    if seen:
        assert seen[0][0].host == "pop.example.com"
    return code


def test_check_reports_capa_count_and_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = FakeSession(CAPA, LISTING)
    assert run_check(tmp_path, session) == 0
    out = capsys.readouterr().out
    assert "PIPELINING, SASL PLAIN XOAUTH2, TOP, UIDL, USER" in out
    assert "2, 3.9 KiB (4000 bytes)" in out
    assert "certificate verified" in out
    assert "nothing: no RETR, no DELE; ended with QUIT" in out
    assert session.calls == ["LIST", "QUIT"]
    assert PASSWORD not in out


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(tmp_path, FakeSession(CAPA, LISTING), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert doc["exit_code"] == 0
    assert doc["capabilities"] == ["PIPELINING", "SASL PLAIN XOAUTH2", "TOP", "UIDL", "USER"]
    assert doc["messages"] == 2
    assert doc["total_bytes"] == 4000
    assert doc["largest_bytes"] == 3000
    assert doc["uidl"] is True
    assert doc["pipelining"] is True
    assert doc["quit"] is True
    assert doc["certificate_verified"] is True
    assert doc["mailbox"] == "support"
    assert "password" not in json.dumps(doc)


def test_check_counts_messages_over_the_size_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = [*LISTING, ServerMessage(3, "u3", 5000)]
    secret = {**SECRET, "max_message_size": 4096}
    assert run_check(tmp_path, FakeSession(CAPA, big), secret=secret) == 0
    assert "1 over max_message_size" in capsys.readouterr().out


def test_check_in_clear_text_warns_and_points_at_stls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capa = {**CAPA, "STLS": []}
    secret = {**SECRET, "tls": "none"}
    assert run_check(tmp_path, FakeSession(capa, LISTING), secret=secret) == 0
    out = capsys.readouterr().out
    assert "clear text" in out
    assert 'the server offers STLS, so set "tls": "starttls"' in out
    assert "certificate verified" not in out


def test_check_without_pipelining_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capa = {k: v for k, v in CAPA.items() if k != "PIPELINING"}
    assert run_check(tmp_path, FakeSession(capa, LISTING), "--json") == 0
    assert json.loads(capsys.readouterr().out)["pipelining"] is False


@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [
        (AuthError(f"login as 'alice' failed: -ERR [AUTH] bad {PASSWORD}", "AUTH"), 4, "auth"),
        (TlsError("TLS certificate of pop.example.com:995 not trusted"), 3, "connect"),
        (ConnectError("cannot connect to pop.example.com:995: refused"), 3, "connect"),
        (MailboxBusy("mailbox support is busy (IN-USE)", "IN-USE"), 5, "busy"),
    ],
)
def test_check_login_failures_print_one_line_without_the_password(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    code: int,
    kind: str,
) -> None:
    assert run_check(tmp_path, FakeSession(CAPA, LISTING, enter_error=error)) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"pop3-ingest check: {kind} error: ")
    assert PASSWORD not in captured.err

    assert run_check(tmp_path, FakeSession(CAPA, LISTING, enter_error=error), "--json") == code
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is False
    assert doc["exit_code"] == code
    assert doc["error_kind"] == kind
    assert doc["login"] is False
    assert PASSWORD not in captured.out + captured.err


def test_check_without_uidl_fails_after_showing_capa(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capa = {"USER": [], "TOP": []}
    failure = ProtocolError("UIDL/LIST failed (-ERR unknown command); UIDL is required")
    assert run_check(tmp_path, FakeSession(capa, failure)) == EXIT_FAILED
    captured = capsys.readouterr()
    assert "uidl        NO (required by pop3-ingest)" in captured.out
    assert "failed error: UIDL/LIST failed" in captured.err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "must be a JSON object"),
        (json.dumps({**SECRET, "pasword": "x"}), "unknown field(s): pasword"),
        (json.dumps({k: v for k, v in SECRET.items() if k != "host"}), "'host'"),
    ],
)
def test_check_bad_secret_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
) -> None:
    def connect(config: MailboxConfig, timeout: float) -> FakeSession:
        raise AssertionError("must not connect with a bad secret")

    args = build_parser().parse_args(["check", "--secret-file", write_secret(tmp_path, content)])
    assert cmd_check(args, connect=connect) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest check: config error: secret file ")
    assert fragment in err
    assert PASSWORD not in err


def test_check_missing_secret_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--secret-file", str(tmp_path / "nope.json")]) == 2
    assert "cannot read secret file" in capsys.readouterr().err


def test_check_secret_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(SECRET)))
    args = build_parser().parse_args(["check", "--secret-file", "-", "--json"])
    assert cmd_check(args, connect=lambda c, t: FakeSession(CAPA, [])) == 0
    assert json.loads(capsys.readouterr().out)["messages"] == 0


def test_check_with_secret_id_and_no_region_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    from aws_lambda_powertools.utilities.parameters import constants

    # A provider cached by an earlier test would still know its region.
    monkeypatch.delitem(constants.DEFAULT_PROVIDERS, "secrets", raising=False)
    assert main(["check", "--secret-id", "mailbox-alice"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("pop3-ingest check: config error:")
    assert "AWS_DEFAULT_REGION" in err
    assert len(err.splitlines()) == 1


# -- replay helpers ----------------------------------------------------------------------


class FakeAnnouncer:
    def __init__(self, refuse: list[set[int]]) -> None:
        self.refuse = refuse
        self.batches: list[list[dict[str, Any]]] = []

    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        self.batches.append(pointers)
        return self.refuse.pop(0) if self.refuse else set()


def test_send_pointers_retries_refused_entries_once() -> None:
    pointers = [{"key": f"k{i}"} for i in range(5)]
    announcer = FakeAnnouncer([{1, 3}, {1}])  # second try: index 1 of [k1, k3] is k3
    assert send_pointers(announcer, pointers) == {3}
    assert announcer.batches[1] == [{"key": "k1"}, {"key": "k3"}]
    assert send_pointers(FakeAnnouncer([]), pointers) == set()


# -- mailbox (Mode fleet) ------------------------------------------------------------------

FLEET_ENV = {
    "SCHEDULE_GROUP": "pop3-ingest-mailboxes",
    "JOBS_QUEUE_ARN": "arn:aws:sqs:us-east-1:123456789012:jobs.fifo",
    "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/scheduler",
}


def no_fleet_clients(settings: FleetSettings) -> tuple[Reconciler, TaggedSecrets]:
    raise AssertionError("no AWS client may be built")


@pytest.mark.parametrize(
    "argv",
    [
        ["mailbox", "add"],  # no SECRET
        ["mailbox", "remove"],
        ["mailbox", "list", "pop3/alice"],
        ["mailbox", "remove", "pop3/alice", "--interval", "5"],
    ],
)
def test_mailbox_argument_errors_exit_2_before_any_aws_call(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FLEET_ENV.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(argv)
    assert cmd_mailbox(args, build=no_fleet_clients) == EXIT_CONFIG
    assert "config error" in capsys.readouterr().err


def test_mailbox_bad_interval_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mailbox", "add", "pop3/alice", "--interval", "soon"]) == EXIT_CONFIG
    assert "usage:" in capsys.readouterr().err


def test_mailbox_without_the_deployment_names_what_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FLEET_ENV:
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["mailbox", "list", "--schedule-group", "g", "--json"])
    assert cmd_mailbox(args, build=no_fleet_clients) == EXIT_CONFIG
    document = json.loads(capsys.readouterr().out)
    assert "JOBS_QUEUE_ARN" in document["error"]
    assert "SCHEDULE_GROUP" not in document["error"], "given as an option"


def test_mailbox_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FLEET_ENV.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["mailbox", "list", "--schedule-group", "other"])
    settings = fleet_settings(args)
    assert settings.schedule_group == "other"
    assert settings.jobs_queue_arn == FLEET_ENV["JOBS_QUEUE_ARN"]


def test_an_interval_is_written_into_the_secret_only_if_the_function_accepts_it() -> None:
    text = json.dumps(SECRET)
    assert json.loads(with_interval(text, 15)) == {**SECRET, "interval_minutes": 15}
    assert with_interval(text, None) == text, "left exactly as it was"
    set_already = json.dumps({**SECRET, "interval_minutes": 15})
    assert with_interval(set_already, 15) == set_already, "no new version for nothing"
    with pytest.raises(SecretError, match="interval_minutes") as refused:
        with_interval(text, -3)
    assert PASSWORD not in str(refused.value)
    with pytest.raises(SecretError, match="password"):
        with_interval(json.dumps({**SECRET, "password": ""}), 5)
    with pytest.raises(SecretError, match="not JSON"):
        with_interval("{", 5)


def test_mailbox_list_shows_each_secrets_schedule_and_the_orphans() -> None:
    secrets = (MailboxSecret("pop3/new"), MailboxSecret("pop3/old"), MailboxSecret("pop3/ok"))
    plan = SchedulePlan(
        to_write=(MailboxSecret("pop3/new"), MailboxSecret("pop3/old")),
        to_check=(),
        to_delete=("gone-0123",),
        unchanged=("pop3/ok",),
        existing=frozenset({schedule_name("pop3/old"), schedule_name("pop3/ok"), "gone-0123"}),
    )
    document = survey_document(Survey(secrets, plan))
    assert [(m["secret"], m["status"]) for m in document["mailboxes"]] == [
        ("pop3/new", "missing"),
        ("pop3/ok", "scheduled"),
        ("pop3/old", "outdated"),
    ]
    assert document["orphaned_schedules"] == ["gone-0123"]


# -- the installed entry points ---------------------------------------------------------


def entry_point(kind: str) -> list[str]:
    """The command line that starts the CLI the way an operator would."""
    if kind == "module":
        return [sys.executable, "-m", "pop3_ingest_cli"]
    script = Path(sys.executable).parent / "pop3-ingest"
    if not script.exists():
        require("package not installed in this interpreter's environment (make venv)")
    return [str(script)]


@pytest.mark.parametrize("kind", ["module", "console script"])
def test_entry_point_runs_the_cli(kind: str) -> None:
    command = entry_point(kind)
    # Only the source trees: the CLI must not depend on the current directory.
    paths = os.pathsep.join(str(REPO_ROOT / tree) for tree in ("functions", "cli"))
    env = {**os.environ, "PYTHONPATH": paths}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *argv], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    shown = run("--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: pop3-ingest")
    for name in ("status", "check", "run", "resume", "replay", "quarantine", "mailbox"):
        assert name in shown.stdout
    usage_error = run("replay")
    assert usage_error.returncode == EXIT_CONFIG
    assert "usage: pop3-ingest replay" in usage_error.stderr
