"""The functions: code, runtime, layer, environment, time limits and concurrency as policy."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from typing import Any

import pytest
from tests.support.cfn_template import REPO_ROOT, Template, branches

FUNCTIONS = ["FetchFunction", "ReconcileFunction"]
# AWS publishes the Powertools layer from this account (no third-party layer).
POWERTOOLS_ACCOUNT = "017000801446"
LAMBDA_MAX_TIMEOUT_S = 900
SQS_MAX_VISIBILITY_S = 12 * 3600
# AWS: a Lambda event source's queue should hide a message for 6 x the function timeout.
EVENT_SOURCE_VISIBILITY_FACTOR = 6
# Lambda keeps this much of an account's concurrency unreserved, and this is the
# quota accounts start with (often less: new accounts may get 10).
LAMBDA_UNRESERVED_MINIMUM = 100
LAMBDA_DEFAULT_QUOTA = 1000
CONFIGURATION_DOC = REPO_ROOT / "docs" / "configuration.md"


def _env(template: Template, function: str) -> dict[str, Any]:
    variables: dict[str, Any] = template.props(function)["Environment"]["Variables"]
    return variables


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_handler_is_a_function_of_the_package_the_code_uri_ships(
    template: Template, function: str
) -> None:
    props = template.props(function)
    code = REPO_ROOT / props["CodeUri"]
    module_name, _, attribute = props["Handler"].rpartition(".")
    module_file = code / (module_name.replace(".", "/") + ".py")
    assert module_file.is_file(), f"{props['Handler']} is not under CodeUri {props['CodeUri']}"
    # Read, not imported: importing the handler sets up Powertools from the environment.
    module = ast.parse(module_file.read_text(encoding="utf-8"))
    defined = [
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    assert attribute in defined, f"{module_file.name} defines no function {attribute}"


def test_the_runtime_is_one_the_project_supports(template: Template) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (minimum,) = re.findall(r">=\s*(\d+)\.(\d+)", project["project"]["requires-python"])
    runtime = template.props("FetchFunction")["Runtime"]
    match = re.fullmatch(r"python(\d+)\.(\d+)", runtime)
    assert match, runtime
    assert tuple(map(int, match.groups())) >= tuple(map(int, minimum))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_runs_like_the_fetch_function_with_the_layer_for_its_platform(
    template: Template, function: str
) -> None:
    props = template.props(function)
    fetch = template.props("FetchFunction")
    for key in ("Runtime", "Architectures", "Layers", "Tracing", "CodeUri"):
        assert props[key] == fetch[key], key
    # The X-Ray grants are there for active tracing.
    assert props["Tracing"] == "Active"
    (architecture,) = props["Architectures"]
    runtime_tag = props["Runtime"].replace(".", "")  # python3.12 -> python312
    layer = re.compile(
        rf"^arn:aws:lambda:\$\{{AWS::Region\}}:{POWERTOOLS_ACCOUNT}:layer:"
        rf"AWSLambdaPowertoolsPythonV3-{runtime_tag}-{architecture}:(\d+|\$\{{\w+\}})$"
    )
    # Pinned by PowertoolsLayerVersion, or resolved (tests/template/test_powertools_layer.py).
    layers = [
        branch.get("Fn::Sub", branch) if isinstance(branch, dict) else branch
        for item in props["Layers"]
        for branch in branches(item)
    ]
    assert [text for text in layers if isinstance(text, str) and layer.match(text)], layers


def test_a_failed_run_is_not_retried_at_once(template: Template) -> None:
    # A quickly repeated failed login risks locking the POP3 account; the next
    # scheduled run (or the jobs queue) is the retry.
    assert template.props("FetchFunction")["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_a_failed_reconcile_is_retried(template: Template) -> None:
    # It logs in nowhere, every write is idempotent, and an event it failed on
    # would otherwise wait for the daily run.
    assert template.props("ReconcileFunction")["EventInvokeConfig"]["MaximumRetryAttempts"] > 0


def test_the_fetch_function_is_told_the_stacks_own_bucket_queue_and_secret(
    template: Template,
) -> None:
    env = _env(template, "FetchFunction")
    assert env["BUCKET_NAME"] == {"Ref": "MailBucket"}
    assert env["QUEUE_URL"] == {"Ref": "PointerQueue"}
    assert env["KEY_PREFIX"] == {"Ref": "KeyPrefix"}
    # In Mode fleet each job names its secret; SECRET_ID stays for direct events.
    assert "SECRET_ID" in env
    # The tuning settings come from the stack's parameters.
    for name in ("MAX_MESSAGES_PER_RUN", "DEADLINE_MARGIN_SECONDS", "POP3_TIMEOUT_SECONDS"):
        assert set(env[name]) == {"Ref"}, name
        assert env[name]["Ref"] in template.parameters, name


def test_the_reconciler_knows_the_schedules_and_their_target_and_nothing_of_mail(
    template: Template,
) -> None:
    from pop3_ingest.config import FleetSettings

    env = _env(template, "ReconcileFunction")
    assert env["SCHEDULE_GROUP"] == {"Ref": "MailboxSchedules"}
    assert env["JOBS_QUEUE_ARN"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert env["SCHEDULER_ROLE_ARN"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    for name in ("SECRET_ID", "BUCKET_NAME", "QUEUE_URL"):
        assert name not in env, name
    # What the template sets is what the reconciler reads.
    plain = {name: "x" if isinstance(value, dict) else value for name, value in env.items()}
    settings = FleetSettings.from_env({**plain, "SCHEDULES_ENABLED": "true"})
    assert (settings.mailbox_tag_key, settings.mailbox_tag_value) == (
        env["MAILBOX_TAG_KEY"],
        env["MAILBOX_TAG_VALUE"],
    )


def test_both_functions_report_under_one_service_and_namespace(template: Template) -> None:
    fetch, reconcile = _env(template, "FetchFunction"), _env(template, "ReconcileFunction")
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"):
        assert fetch[name] == reconcile[name], name


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_environment_variable_is_documented(template: Template, function: str) -> None:
    documented = CONFIGURATION_DOC.read_text(encoding="utf-8")
    missing = [
        name
        for name in _env(template, function)
        if not name.startswith("POWERTOOLS_") and name not in documented
    ]
    assert missing == [], f"not in {CONFIGURATION_DOC.name}"


def test_a_job_stays_hidden_while_any_run_of_it_may_last(template: Template) -> None:
    timeout = template.parameters["Timeout"]
    assert int(timeout["MaxValue"]) <= LAMBDA_MAX_TIMEOUT_S
    assert template.props("FetchFunction")["Timeout"] == {"Ref": "Timeout"}
    # The template cannot multiply the Timeout parameter: it covers the largest one.
    visibility = int(template.props("JobsQueue")["VisibilityTimeout"])
    assert visibility >= EVENT_SOURCE_VISIBILITY_FACTOR * int(timeout["MaxValue"])
    assert visibility <= SQS_MAX_VISIBILITY_S
    assert int(template.props("ReconcileFunction")["Timeout"]) <= LAMBDA_MAX_TIMEOUT_S


def test_runs_that_overlap_are_kept_apart_by_a_lease_that_outlasts_any_run(
    template: Template,
) -> None:
    from pop3_ingest.domain.state import LEASE_MARGIN_SECONDS, MAX_LEASE_SECONDS

    # The Timeout may exceed the schedule's period: runs overlap, and one stands aside
    # while the other holds the mailbox's lease. The lease is honoured for as long as
    # the longest run the template allows (plus the clock margin the run adds).
    timeout = template.parameters["Timeout"]
    assert int(timeout["MaxValue"]) + LEASE_MARGIN_SECONDS <= MAX_LEASE_SECONDS
    assert "lease" in timeout["Description"]


def _reservations(template: Template, **values: Any) -> dict[str, Any]:
    """Reserved concurrency of every function that exists with these parameter values."""
    params = template.params(**values)
    return {
        name: template.resolve(template.props(name).get("ReservedConcurrentExecutions"), params)
        for name in template.functions()
        if template.exists(name, params)
    }


@pytest.mark.parametrize("mode", ["single", "fleet"])
def test_no_concurrency_is_reserved_unless_the_operator_asks(template: Template, mode: str) -> None:
    # The defaults must deploy on an account whose quota (10) leaves nothing to reserve.
    reserved = _reservations(template, Mode=mode)
    assert "FetchFunction" in reserved
    assert set(reserved.values()) == {None}, reserved
    assert set(_reservations(template, Mode=mode, ReservedConcurrency=0).values()) == {None}
    # Asked for, the fetch function gets exactly that, and nothing reserves 0 (a stop).
    asked = _reservations(template, Mode=mode, ReservedConcurrency=5)
    assert asked["FetchFunction"] == 5
    assert 0 not in asked.values()
    assert sum(asked.values()) <= 5 + 1  # the reconciler takes at most one more


def test_the_function_cannot_be_reserved_above_what_an_account_allows(
    template: Template,
) -> None:
    param = template.parameters["ReservedConcurrency"]
    assert int(param["MinValue"]) == 0
    reservable = LAMBDA_DEFAULT_QUOTA - LAMBDA_UNRESERVED_MINIMUM
    highest = int(param["MaxValue"])
    assert highest <= reservable
    # Even at its highest, fetch function and reconciler together stay within it.
    at_most = _reservations(template, Mode="fleet", ReservedConcurrency=highest)
    assert sum(at_most.values()) <= reservable + 1
    # Mode fleet caps the job pollers at the reservation, never above it (and SQS
    # accepts caps from 2 up).
    mapping = template.props("JobsEventSource")
    for value in (0, 1, 2, highest):
        params = template.params(Mode="fleet", ReservedConcurrency=value)
        cap = template.resolve(mapping.get("ScalingConfig"), params)
        if cap is not None:
            assert 2 <= cap["MaximumConcurrency"] <= value


@pytest.mark.parametrize(
    ("name", "has_override"),
    [("scheduled-event.json", False), ("scheduled-event-override.json", True)],
)
def test_the_sample_events_are_what_the_schedule_sends(name: str, has_override: bool) -> None:
    event = json.loads((REPO_ROOT / "events" / name).read_text())
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"][0].startswith("arn:aws:events:")
    assert ("secret_id" in event) is has_override
