"""--stack-name: the CLI reads what the template outputs; options win over the stack."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.support.cfn_template import load_template

from pop3_ingest.config import DEFAULT_KEY_PREFIX
from pop3_ingest.errors import ConfigError
from pop3_ingest_cli.aws import Aws
from pop3_ingest_cli.health import DEFAULT_STALE_AFTER_HOURS
from pop3_ingest_cli.main import build_parser
from pop3_ingest_cli.stack import OUTPUTS, PARAMETERS, Deployment, deployment, stack_values


class FakeCloudFormation:
    def __init__(self, stacks: dict[str, dict[str, Any]]) -> None:
        self.stacks = stacks
        self.calls: list[str] = []
        self.meta = argparse.Namespace(region_name="eu-west-1")

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.calls.append(StackName)
        if StackName not in self.stacks:
            error = {
                "Code": "ValidationError",
                "Message": f"Stack with id {StackName} does not exist",
            }
            raise ClientError({"Error": error}, "DescribeStacks")
        return {"Stacks": [self.stacks[StackName]]}


class StackAws(Aws):
    def __init__(self, cloudformation: FakeCloudFormation) -> None:
        super().__init__()
        self.fake = cloudformation

    @property  # type: ignore[override]
    def cloudformation(self) -> Any:
        return self.fake


STACK = {
    "Outputs": [
        {"OutputKey": "BucketName", "OutputValue": "prod-mail"},
        {"OutputKey": "QueueUrl", "OutputValue": "https://sqs.example/q"},
        {"OutputKey": "FunctionName", "OutputValue": "prod-fetch"},
        {"OutputKey": "Mode", "OutputValue": "fleet"},
        {"OutputKey": "Unrelated", "OutputValue": "x"},
    ],
    "Parameters": [
        {"ParameterKey": "KeyPrefix", "ParameterValue": "inbox/"},
        {"ParameterKey": "StaleAfterHours", "ParameterValue": "6"},
        {"ParameterKey": "Mode", "ParameterValue": "single"},
    ],
}


def test_every_output_and_parameter_the_cli_reads_is_in_the_template() -> None:
    template = load_template()
    assert set(OUTPUTS.values()) - {"KeyPrefix"} <= set(template.outputs)
    assert set(PARAMETERS.values()) <= set(template.parameters)


def test_the_cli_defaults_agree_with_the_template() -> None:
    parameters = load_template().parameters
    assert float(parameters["StaleAfterHours"]["Default"]) == DEFAULT_STALE_AFTER_HOURS
    assert parameters["KeyPrefix"]["Default"] == DEFAULT_KEY_PREFIX


def test_outputs_win_over_parameters() -> None:
    values = stack_values(FakeCloudFormation({"prod": STACK}), "prod")  # type: ignore[arg-type]
    assert values == {
        "bucket": "prod-mail",
        "queue_url": "https://sqs.example/q",
        "function_name": "prod-fetch",
        "mode": "fleet",
        "key_prefix": "inbox/",
        "stale_after_hours": "6",
    }


def test_options_win_over_the_stack() -> None:
    fake = FakeCloudFormation({"prod": STACK})
    args = build_parser().parse_args(
        ["status", "--stack-name", "prod", "--bucket", "other", "--key-prefix", "x"]
    )
    where = deployment(args, StackAws(fake))
    assert where.bucket == "other"
    assert where.prefix == "x/"
    assert where.function_name == "prod-fetch"
    assert where.fleet
    assert fake.calls == ["prod"]


def test_without_a_stack_nothing_is_asked_of_aws() -> None:
    args = build_parser().parse_args(["status", "--bucket", "b"])
    where = deployment(args, StackAws(FakeCloudFormation({})))
    assert where == Deployment(bucket="b")
    assert where.prefix == DEFAULT_KEY_PREFIX


def test_an_unknown_stack_is_a_config_error_naming_it_and_the_region() -> None:
    fake = FakeCloudFormation({})
    with pytest.raises(ConfigError, match="no stack 'prod' in region eu-west-1"):
        stack_values(fake, "prod")  # type: ignore[arg-type]


def test_a_missing_name_says_which_option_gives_it() -> None:
    with pytest.raises(ConfigError, match=r"^--bucket or --stack-name is required$"):
        Deployment().need("bucket")
    with pytest.raises(ConfigError, match="the stack 'prod' has no output for it"):
        Deployment(stack_name="prod").need("jobs_queue_url")
    assert Deployment(bucket="b").need("bucket") == "b"
